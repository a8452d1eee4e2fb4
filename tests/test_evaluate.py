"""Evaluation: window placement, whole vs sliding, flip, scores by hand, saved PNGs, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from skdlib.data.transforms import normalize
from skdlib.errors import CheckpointError
from skdlib.evaluate import evaluate, main, predict_probabilities, sliding_windows
from skdlib.models import build_model
from skdlib.models.outputs import SegmentationOutput
from skdlib.train.config import load_config, save_config

K = 3


class PerPixel(nn.Module):
    """A 1x1 convolution: fully convolutional with a receptive field of one pixel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, K, kernel_size=1)

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        return SegmentationOutput(logits=self.conv(image))


class LeftRight(nn.Module):
    """Logits that depend on the column: not flip-invariant."""

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        n, _, h, w = image.shape
        ramp = torch.linspace(-2.0, 2.0, w).expand(n, 1, h, w)  # (N, 1, H, W)
        return SegmentationOutput(
            logits=torch.cat([ramp, -ramp, image[:, :1]], dim=1)
        )  # (N, 3, H, W)


def test_sliding_windows_by_hand():
    assert sliding_windows(10, 4, 3) == [0, 3, 6]
    assert sliding_windows(11, 4, 3) == [0, 3, 6, 7]
    assert sliding_windows(4, 4, 3) == [0]
    assert sliding_windows(3, 4, 3) == [0]
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 0)


@pytest.mark.parametrize(
    "crop", [(5, 7), (16, 32)]
)  # overlapping windows; a window larger than the image
def test_whole_equals_sliding_for_a_per_pixel_model(crop):
    model = PerPixel().eval()
    image = torch.randn(2, 3, 13, 21, generator=torch.Generator().manual_seed(1))
    whole = predict_probabilities(model, image, mode="whole")
    sliding = predict_probabilities(model, image, mode="sliding", crop_size=crop, stride_rate=2 / 3)
    assert sliding.shape == whole.shape == (2, K, 13, 21)
    torch.testing.assert_close(sliding, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole.sum(1), torch.ones(2, 13, 21))


def test_flip_averages_with_the_flipped_prediction():
    model = LeftRight()
    image = torch.randn(1, 3, 4, 6, generator=torch.Generator().manual_seed(2))
    plain = torch.softmax(model(image).logits, 1)
    mirrored = torch.softmax(model(image.flip(-1)).logits, 1).flip(-1)
    got = predict_probabilities(model, image, mode="whole", flip=True)
    torch.testing.assert_close(got, 0.5 * (plain + mirrored))
    assert not torch.allclose(got, plain)
    # A per-pixel model commutes with flipping: flip changes nothing.
    per_pixel = PerPixel().eval()
    torch.testing.assert_close(
        predict_probabilities(per_pixel, image, flip=True),
        predict_probabilities(per_pixel, image),
        atol=1e-6,
        rtol=0,
    )


def test_low_resolution_logits_are_upsampled_to_the_image():
    model = build_model("pspnet_resnet18", K, width=0.25).eval()
    image = torch.randn(1, 3, 64, 80)
    assert predict_probabilities(model, image).shape == (1, K, 64, 80)


def test_bad_arguments():
    model = PerPixel()
    image = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        predict_probabilities(model, image, mode="tiles")
    with pytest.raises(ValueError, match="crop_size"):
        predict_probabilities(model, image, mode="sliding")
    with pytest.raises(ValueError, match="stride_rate"):
        predict_probabilities(model, image, mode="sliding", crop_size=(4, 4), stride_rate=0.0)
    with pytest.raises(ValueError, match="image"):
        predict_probabilities(model, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="num_classes"):
        evaluate(
            model,
            [{"image": torch.zeros(3, 8, 8), "label": torch.zeros(8, 8, dtype=torch.long)}],
            num_classes=0,
            device="cpu",
        )


class Constant(nn.Module):
    """Predicts class ``k`` everywhere."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        n, _, h, w = image.shape
        logits = torch.zeros(n, K, h, w)
        logits[:, self.k] = 1.0
        return SegmentationOutput(logits=logits + 0 * self.dummy)


def test_scores_by_hand_and_the_model_mode_is_restored():
    label_a = torch.tensor([[0, 0], [1, 255]])
    label_b = torch.tensor([[0, 2], [2, 2]])
    data = [
        {"image": torch.rand(3, 2, 2), "label": label_a, "name": "a"},
        {"image": torch.rand(3, 2, 2), "label": label_b, "name": "b"},
    ]
    model = Constant(0).train()
    seen = {}
    scores = evaluate(
        model,
        data,
        num_classes=K,
        device="cpu",
        batch_size=2,
        prediction_callback=lambda name, pred: seen.setdefault(name, pred),
    )
    # Predicted 0 on 7 labelled pixels; class 0 has 3 of them: IoU(0) = 3/7, IoU(1) = IoU(2) = 0.
    assert scores["class_iou"] == pytest.approx([3 / 7, 0.0, 0.0])
    assert scores["miou"] == pytest.approx(1 / 7)
    assert scores["pixel_acc"] == pytest.approx(3 / 7)
    assert scores["num_images"] == 2
    assert model.training
    assert set(seen) == {"a", "b"} and torch.equal(seen["a"], torch.zeros(2, 2, dtype=torch.long))


def test_sharding_needs_a_process_group():
    data = [{"image": torch.rand(3, 2, 2), "label": torch.zeros(2, 2, dtype=torch.long)}]
    with pytest.raises(ValueError, match="process group"):
        evaluate(Constant(0), data, num_classes=K, device="cpu", rank=1, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        evaluate(Constant(0), data, num_classes=K, device="cpu", rank=2, world_size=2)


def test_cli_scores_and_saves_predictions(tmp_path, capsys):
    from skdlib.data.generate import ensure_embedded

    data = ensure_embedded(tmp_path / "data", height=32, width=48, num_train=1, num_val=2)
    cfg = load_config(
        "configs/smoke.yaml", [f"data.root={data}", "data.crop_size=[32,32]", "train.device=cpu"]
    )
    save_config(cfg, tmp_path / "config.yaml")
    torch.manual_seed(0)
    student = build_model(cfg.model.student, 8, **dict(cfg.model.student_options))
    torch.save(student.state_dict(), tmp_path / "final.pt")
    out = tmp_path / "pred"
    code = main(
        [
            "--checkpoint",
            str(tmp_path / "final.pt"),
            "--config",
            str(tmp_path / "config.yaml"),
            "--sliding",
            "--flip",
            "--save-predictions",
            str(out),
            "--output",
            str(tmp_path / "scores.json"),
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "scores.json").read_text())
    assert (
        printed["mode"] == "sliding" and printed["flip"] is True and len(printed["class_iou"]) == 8
    )
    pngs = sorted((out / "trainId").glob("*.png"))
    assert len(pngs) == 2
    for png in pngs:
        with Image.open(png) as img:
            array = np.array(img)
        assert img.mode == "L" and array.shape == (32, 48) and array.max() < 8
    assert not (out / "labelId").exists()  # only Cityscapes gets labelId PNGs
    # Bad input: one line naming the file, exit 2; --debug raises with the traceback.
    missing = ["--checkpoint", str(tmp_path / "nope.pt"), "--config", str(tmp_path / "config.yaml")]
    assert main(missing) == 2
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        main([*missing, "--debug"])
    torn = tmp_path / "torn.pt"
    torn.write_bytes((tmp_path / "final.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"{torn} is truncated or not a PyTorch checkpoint"):
        main(["--checkpoint", str(torn), "--config", str(tmp_path / "config.yaml"), "--debug"])


def test_evaluate_normalises_like_training():
    """The model sees ImageNet-normalised pixels, as in training."""
    seen = []

    class Spy(PerPixel):
        def forward(self, image):
            seen.append(image)
            return super().forward(image)

    raw = torch.rand(3, 4, 4)
    evaluate(
        Spy(),
        [{"image": raw, "label": torch.zeros(4, 4, dtype=torch.long)}],
        num_classes=K,
        device="cpu",
    )
    torch.testing.assert_close(seen[0], normalize(raw[None]))


def test_evaluate_feeds_the_authors_input_when_asked():
    """``normalization="caffe_bgr"``: BGR pixels in 0-255 minus the Caffe mean, as the authors'
    released networks were trained on; an unknown name is refused."""
    seen = []

    class Spy(PerPixel):
        def forward(self, image):
            seen.append(image)
            return super().forward(image)

    raw = torch.rand(3, 4, 4)
    items = [{"image": raw, "label": torch.zeros(4, 4, dtype=torch.long)}]
    evaluate(Spy(), items, num_classes=K, device="cpu", normalization="caffe_bgr")
    mean = torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(3, 1, 1)
    torch.testing.assert_close(seen[0][0], raw.flip(0) * 255.0 - mean)
    with pytest.raises(ValueError, match="unknown normalisation 'bgr'"):
        evaluate(Spy(), items, num_classes=K, device="cpu", normalization="bgr")


def test_logits_are_upsampled_as_the_network_says():
    """A network with ``align_corners = True`` (the released variants) is upsampled so."""

    class Coarse(nn.Module):
        align_corners = True

        def forward(self, image):
            n = image.shape[0]
            ramp = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).expand(n, 1, 2, 2)  # (N, 1, 2, 2)
            return SegmentationOutput(logits=torch.cat([ramp, -ramp, 0 * ramp], 1))

    image = torch.zeros(1, 3, 3, 3)
    probs = predict_probabilities(Coarse().eval(), image)
    corner = torch.softmax(torch.tensor([3.0, -3.0, 0.0]), 0)
    torch.testing.assert_close(probs[0, :, 2, 2], corner)  # corners land on the logits' corners
