"""Tests of the task loss (cross-entropy with ignore label, bilinear upsampling, aux head)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from golden_values import check_golden

from skdlib.losses import cross_entropy_2d, segmentation_task_loss


def naive_ce(logits: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
    """Explicit -log softmax at the label, averaged over labelled pixels (same resolution)."""
    total, count = 0.0, 0
    n, _, h, w = logits.shape
    for b in range(n):
        for y in range(h):
            for x in range(w):
                label = int(target[b, y, x])
                if label == ignore:
                    continue
                z = logits[b, :, y, x].double()
                total += float(torch.logsumexp(z, 0) - z[label])
                count += 1
    return torch.tensor(total / count)


def test_hand_computed() -> None:
    # Pixel 1: logits (0, ln 3) -> p = (1/4, 3/4); label 1 -> -ln(3/4) = 0.2876820725.
    # Pixel 2: ignored. Mean over the one labelled pixel.
    logits = torch.tensor([[[[0.0, 5.0]], [[math.log(3.0), -5.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 255]]])
    assert cross_entropy_2d(logits, target).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_matches_naive_with_ignore() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g) * 2
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = 255
    got = cross_entropy_2d(logits, target)
    assert got.item() == pytest.approx(naive_ce(logits, target, 255).item(), rel=1e-5)
    other = target.clamp(max=2)
    other[0, 0] = 7
    got = cross_entropy_2d(logits, other, ignore_index=7)
    assert got.item() == pytest.approx(naive_ce(logits, other, 7).item(), rel=1e-5)


def test_low_resolution_logits_are_upsampled_bilinearly() -> None:
    # Spatially constant logits stay constant under bilinear upsampling: the value equals
    # the CE of one pixel.
    logits = torch.tensor([0.0, 1.0, 2.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    target = torch.full((1, 8, 8), 2, dtype=torch.long)
    want = -torch.log_softmax(torch.tensor([0.0, 1.0, 2.0]), 0)[2].item()
    assert cross_entropy_2d(logits, target).item() == pytest.approx(want, rel=1e-6)
    # General case: same as upsampling first (align_corners=False).
    g = torch.Generator().manual_seed(1)
    low = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 16, 20), generator=g)
    up = F.interpolate(low, size=(16, 20), mode="bilinear", align_corners=False)
    assert cross_entropy_2d(low, target).item() == pytest.approx(
        naive_ce(up, target, 255).item(), rel=1e-5
    )


def test_all_ignored_is_zero_with_zero_gradient() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_task_loss(logits, torch.full((2, 4, 4), 255, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_aux_term_and_batch_independence() -> None:
    g = torch.Generator().manual_seed(2)
    main = torch.randn(2, 3, 4, 4, generator=g)
    aux = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    total = segmentation_task_loss(main, target, aux_logits=aux, aux_weight=0.4)
    want = cross_entropy_2d(main, target) + 0.4 * cross_entropy_2d(aux, target)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert segmentation_task_loss(main, target).item() == pytest.approx(
        cross_entropy_2d(main, target).item()
    )
    dup = segmentation_task_loss(
        torch.cat([main, main]), torch.cat([target, target]), aux_logits=torch.cat([aux, aux])
    )
    assert dup.item() == pytest.approx(total.item(), rel=1e-6)


def test_zero_logits_finite() -> None:
    logits = torch.zeros(1, 4, 2, 2, requires_grad=True)
    loss = cross_entropy_2d(logits, torch.zeros(1, 2, 2, dtype=torch.long))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4.0), rel=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="logits must be"):
        cross_entropy_2d(torch.zeros(3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target must be"):
        cross_entropy_2d(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        cross_entropy_2d(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(1, 4, 4\)"):
        cross_entropy_2d(torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_golden_values() -> None:
    g = torch.Generator().manual_seed(1234)
    main = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    aux = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 24, 28), generator=g)
    target[:, :3] = 255
    check_golden(
        {
            "task_ce_upsampled": cross_entropy_2d(main, target).item(),
            "task_with_aux": segmentation_task_loss(main, target, aux_logits=aux).item(),
        }
    )


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((2, 3, 8, 16), (64, 128)),
        ((1, 2, 5, 7), (33, 61)),
        ((2, 3, 9, 9), (4, 5)),
        ((1, 2, 40, 3), (80, 9)),
    ],
)
def test_bilinear_resize_equals_interpolate(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    from skdlib.losses.task import bilinear_resize

    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    ours = bilinear_resize(x, size)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape and ours.is_contiguous()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-12)
    cl = x.detach().float().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        bilinear_resize(cl, size),
        F.interpolate(cl, size=size, mode="bilinear", align_corners=False),
        rtol=1e-5,
        atol=1e-6,
    )
