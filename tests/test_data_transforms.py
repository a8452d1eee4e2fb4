"""Batch augmentation: alignment, flips, padding, determinism, device, per-item path."""

from __future__ import annotations

import pytest
import torch

from skdlib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATIONS,
    EvalTransform,
    ItemAugment,
    TrainAugment,
    denormalize,
    get_normalization,
    normalize,
)

NO_NORM = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _coded_batch(
    n: int = 3, h: int = 32, w: int = 48, block: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels constant on ``block`` x ``block`` squares; each image pixel encodes its label as
    (k/20, k/20, k/20)."""
    g = torch.Generator().manual_seed(5)
    coarse = torch.randint(0, 20, (n, h // block, w // block), generator=g)  # (N, h/b, w/b)
    labels = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)  # (N, H, W)
    images = (labels.float() / 20)[:, None].expand(n, 3, h, w).clone()  # (N, H, W) -> (N, 3, H, W)
    return images, labels


def test_image_and_label_stay_aligned() -> None:
    images, labels = _coded_batch(h=64, w=96, block=16)
    aug = TrainAugment((24, 40), scale_range=(0.5, 2.1), **NO_NORM)
    for seed in range(5):
        out_img, out_lab = aug(images, labels, torch.Generator().manual_seed(seed))
        assert out_img.shape == (3, 3, 24, 40) and out_lab.shape == (3, 24, 40)
        valid = out_lab != 255
        code = out_img[:, :1] * 20  # (N, 1, h, w)
        high = torch.nn.functional.max_pool2d(code, 3, stride=1, padding=1)  # (N, 1, h, w): 3x3 max
        low = -torch.nn.functional.max_pool2d(
            -code, 3, stride=1, padding=1
        )  # (N, 1, h, w): 3x3 min
        interior = ((high - low).abs() < 1e-4)[
            :, 0
        ] & valid  # (N, h, w): not blended across a block edge
        assert torch.allclose(code[:, 0][interior], out_lab[interior].float(), atol=1e-4)
        assert interior.sum() > 0.3 * valid.sum()  # most pixels are block interiors


def test_flip_twice_is_identity_and_flip_mirrors() -> None:
    images, labels = _coded_batch(n=2)
    aug = TrainAugment((32, 48), scale_range=(1.0, 1.0), **NO_NORM)
    params = [{"size": (32, 48), "top": 0, "left": 0, "flip": True}] * 2
    once = aug.apply(images, labels, params)
    assert torch.equal(once[0], images.flip(-1)) and torch.equal(once[1], labels.flip(-1))
    twice = aug.apply(*once, params)
    assert torch.equal(twice[0], images) and torch.equal(twice[1], labels)


def test_scale_one_no_flip_is_a_crop() -> None:
    images, labels = _coded_batch(n=2)
    aug = TrainAugment((16, 16), scale_range=(1.0, 1.0), flip=False, **NO_NORM)
    out_img, out_lab = aug(images, labels, torch.Generator().manual_seed(0))
    params = aug.sample_params(2, 32, 48, torch.Generator().manual_seed(0))
    for i, p in enumerate(params):
        top, left = p["top"], p["left"]
        assert torch.equal(out_img[i], images[i, :, top : top + 16, left : left + 16])
        assert torch.equal(out_lab[i], labels[i, top : top + 16, left : left + 16])


def test_padding_uses_ignore_and_mean() -> None:
    images = torch.rand(1, 3, 10, 12)
    labels = torch.zeros(1, 10, 12, dtype=torch.long)
    aug = TrainAugment((20, 30), scale_range=(1.0, 1.0), flip=False)
    out_img, out_lab = aug(images, labels, torch.Generator().manual_seed(0))
    assert out_lab.shape == (1, 20, 30)
    assert (out_lab[0, 10:] == 255).all() and (out_lab[0, :, 12:] == 255).all()
    assert (out_lab[0, :10, :12] == 0).all()
    assert (out_img[0, :, 10:] == 0).all()  # zero after normalisation = the mean colour
    assert torch.allclose(denormalize(out_img)[0, :, 15, 20], torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(out_img[0, :, :10, :12], normalize(images)[0])


def test_normalize_matches_plain_formula() -> None:
    x = torch.rand(2, 3, 4, 5)
    expected = torch.stack([(x[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for c in range(3)], 1)
    assert torch.allclose(normalize(x), expected)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
    out, lab = EvalTransform()(x, torch.zeros(2, 4, 5, dtype=torch.long))
    assert torch.allclose(out, expected) and lab.shape == (2, 4, 5)


def test_caffe_bgr_by_hand_and_its_inverse() -> None:
    """The authors' input: one pixel (R, G, B) = (1.0, 0.5, 0.0) becomes, in BGR order and 0-255,
    (0 - 104.00698793, 127.5 - 116.66876762, 255 - 122.67891434); no division."""
    pixel = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # (1, 3, 2, 2)
    caffe = get_normalization("caffe_bgr")
    out = caffe(pixel)
    expected = torch.tensor([-104.00698793, 127.5 - 116.66876762, 255.0 - 122.67891434])
    torch.testing.assert_close(out[0, :, 1, 1], expected)
    torch.testing.assert_close(caffe.invert(out), pixel, rtol=0, atol=1e-5)
    assert get_normalization("imagenet") == NORMALIZATIONS["imagenet"]
    x = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(get_normalization("imagenet")(x), normalize(x))
    with pytest.raises(ValueError, match=r"unknown normalisation 'bgr'; valid names: imagenet"):
        get_normalization("bgr")


def test_train_and_eval_transforms_follow_a_named_convention() -> None:
    """With ``normalization="caffe_bgr"`` the crop is the caffe-normalised image and the padding
    is 0 after normalisation (the mean colour), as with ImageNet statistics."""
    images, labels = _coded_batch(n=1, h=8, w=12, block=4)
    aug = TrainAugment((16, 16), scale_range=(1.0, 1.0), flip=False, normalization="caffe_bgr")
    params = [{"size": (8, 12), "top": 0, "left": 0, "flip": False}]
    out, lab = aug.apply(images, labels, params)
    caffe = get_normalization("caffe_bgr")
    torch.testing.assert_close(out[..., :8, :12], caffe(images))
    assert out[..., 8:, :].abs().max() == 0 and (lab[:, 8:] == 255).all()
    evaluated, _ = EvalTransform(normalization="caffe_bgr")(images, labels)
    torch.testing.assert_close(evaluated, caffe(images))
    with pytest.raises(ValueError, match="unknown normalisation"):
        TrainAugment(16, normalization="rgb")
    with pytest.raises(ValueError, match=r"mean must have 3 values"):
        normalize(images, mean=(0.5, 0.5))


def test_seeded_and_per_image() -> None:
    images, labels = _coded_batch(n=4)
    aug = TrainAugment(16, scale_range=(0.5, 2.1))
    a = aug(images, labels, torch.Generator().manual_seed(7))
    b = aug(images, labels, torch.Generator().manual_seed(7))
    c = aug(images, labels, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    params = aug.sample_params(4, 32, 48, torch.Generator().manual_seed(7))
    assert len({p["size"] for p in params}) > 1  # each image gets its own scale
    assert all(8 <= p["size"][0] <= 68 for p in params)  # 32 * [0.5, 2.1], rounded


def test_scaled_label_values_come_from_the_input() -> None:
    images, labels = _coded_batch()
    out_img, out_lab = TrainAugment(24, scale_range=(0.5, 2.1))(
        images, labels, torch.Generator().manual_seed(1)
    )
    assert set(out_lab.unique().tolist()) <= set(labels.unique().tolist()) | {255}
    assert out_lab.dtype == torch.int64 and out_img.dtype == torch.float32


def test_runs_on_the_batch_device() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    images, labels = _coded_batch(n=2)
    for device in devices:
        out_img, out_lab = TrainAugment(16)(
            images.to(device), labels.to(device), torch.Generator().manual_seed(0)
        )
        assert out_img.device.type == device and out_lab.device.type == device


def test_bad_input() -> None:
    aug = TrainAugment(16)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"labels must be \(N, H, W\)"):
        aug(torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 9, dtype=torch.long), g)
    with pytest.raises(ValueError, match=r"images must be a float tensor \(N, 3, H, W\)"):
        aug(torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.long), g)
    with pytest.raises(ValueError, match="scale_range"):
        TrainAugment(16, scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="crop_size"):
        TrainAugment((16, 0))


def test_item_path_same_maths_as_batch() -> None:
    images, labels = _coded_batch(n=1)
    aug = TrainAugment(20, scale_range=(0.7, 1.5))
    batch_out = aug(images, labels, torch.Generator().manual_seed(3))
    item = ItemAugment(aug, seed=3)({"image": images[0], "label": labels[0], "name": "x"})
    # ItemAugment seeds seed * 1000003 + worker (0 in the main process)
    expected = aug(images, labels, torch.Generator().manual_seed(3 * 1000003))
    assert torch.equal(item["image"], expected[0][0]) and torch.equal(item["label"], expected[1][0])
    assert item["name"] == "x" and item["image"].shape == batch_out[0][0].shape
