"""Tests of the pixel-wise distillation loss (Eq. 1)."""

from __future__ import annotations

import math

import pytest
import torch
from golden_values import check_golden

from skdlib.losses import pixelwise_kd_loss, pixelwise_kl_map


def naive_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Explicit sums over images, pixels and classes, in float64."""
    s = student.double() / temperature
    t = teacher.double() / temperature
    n, k, h, w = s.shape
    total = 0.0
    for b in range(n):
        for y in range(h):
            for x in range(w):
                ps = torch.exp(s[b, :, y, x]) / torch.exp(s[b, :, y, x]).sum()
                pt = torch.exp(t[b, :, y, x]) / torch.exp(t[b, :, y, x]).sum()
                total += sum(float(pt[c] * math.log(pt[c] / ps[c])) for c in range(k))
    return torch.tensor(total / (n * h * w) * temperature**2, dtype=torch.float64)


def test_hand_computed_two_classes_two_pixels() -> None:
    # Pixel 1: teacher logits (0, 0) -> q_t = (1/2, 1/2); student (ln 3, 0) -> q_s = (3/4, 1/4).
    #   KL = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    #      = 0.1438410362...
    # Pixel 2: student = teacher -> KL = 0.  Mean over the 2 pixels: 0.0719205181...
    student = torch.tensor([[[[math.log(3.0), 1.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2)
    teacher = torch.tensor([[[[0.0, 1.0]], [[0.0, 2.0]]]])
    kl = pixelwise_kl_map(student, teacher)
    assert kl.shape == (1, 1, 2)
    assert kl[0, 0, 0].item() == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-6)
    assert kl[0, 0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert pixelwise_kd_loss(student, teacher).item() == pytest.approx(0.0719205181, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_naive_rederivation(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 4, 3, 5, generator=g) * 3
    teacher = torch.randn(2, 4, 3, 5, generator=g) * 3
    got = pixelwise_kd_loss(student, teacher, temperature=temperature)
    assert got.item() == pytest.approx(naive_kl(student, teacher, temperature).item(), rel=1e-5)


def test_zero_when_equal_and_nonnegative() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 4, 4, generator=g)
    assert pixelwise_kd_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    y = torch.randn(3, 5, 4, 4, generator=g)
    assert (pixelwise_kl_map(x, y) >= -1e-7).all()


def test_kd_loss_is_mean_of_map_times_t_squared() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    kl = pixelwise_kl_map(s, t, temperature=3.0)
    assert pixelwise_kd_loss(s, t, temperature=3.0).item() == pytest.approx(
        9.0 * kl.mean().item(), rel=1e-6
    )


def test_independent_of_batch_size() -> None:
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    one = pixelwise_kd_loss(s, t)
    two = pixelwise_kd_loss(torch.cat([s, s]), torch.cat([t, t]))
    assert two.item() == pytest.approx(one.item(), rel=1e-6)


def test_gradient_reaches_student_only() -> None:
    g = torch.Generator().manual_seed(4)
    s = torch.randn(2, 3, 4, 4, generator=g).requires_grad_(True)
    t = torch.randn(2, 3, 4, 4, generator=g).requires_grad_(True)
    pixelwise_kd_loss(s, t, temperature=2.0).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_zero_logits_finite() -> None:
    s = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = pixelwise_kd_loss(s, torch.zeros(1, 3, 2, 2))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert torch.isfinite(s.grad).all()


def test_extreme_teacher_logits_finite() -> None:
    # A teacher probability underflowing to 0 must contribute 0, not 0 * inf.
    t = torch.tensor([[[[200.0]], [[-200.0]]]])
    s = torch.tensor([[[[0.0]], [[0.0]]]])
    assert pixelwise_kd_loss(s, t).item() == pytest.approx(math.log(2.0), rel=1e-5)


def test_half_precision_is_promoted() -> None:
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(1, 3, 2, 2, generator=g), torch.randn(1, 3, 2, 2, generator=g)
    out = pixelwise_kd_loss(s.bfloat16(), t.bfloat16())
    assert out.dtype == torch.float32
    ref = pixelwise_kd_loss(s.bfloat16().float(), t.bfloat16().float())
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 3, 8, 8\)"):
        pixelwise_kd_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"batch|shape"):
        pixelwise_kd_loss(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4))


def test_rank_and_temperature_errors() -> None:
    with pytest.raises(ValueError, match="student_logits"):
        pixelwise_kd_loss(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="teacher_logits"):
        pixelwise_kd_loss(torch.zeros(1, 3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="temperature"):
        pixelwise_kd_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), temperature=0.0)


def test_golden_values() -> None:
    g = torch.Generator().manual_seed(1234)
    s = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    t = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    check_golden(
        {
            "pixelwise_kd_loss_T1": pixelwise_kd_loss(s, t).item(),
            "pixelwise_kd_loss_T4": pixelwise_kd_loss(s, t, temperature=4.0).item(),
        }
    )
