"""Tests of the later methods' losses: channel-wise distillation (CWD) and DIST."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from golden_values import check_golden

from skdlib.losses import cwd_loss, dist_loss

LossFn = Callable[..., torch.Tensor]


def _log_probs(z: torch.Tensor) -> torch.Tensor:
    """Log-softmax of a 1-D tensor by hand: ``z - (max + log sum exp(z - max))``."""
    m = z.max()
    return z - (m + torch.log(torch.exp(z - m).sum()))


def naive_cwd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Explicit loops over images, channels and positions, in float64 (differentiable)."""
    s = student.double() / temperature
    t = teacher.detach().double() / temperature
    n, c, h, w = s.shape
    total = s.new_zeros(())
    for b in range(n):
        for ch in range(c):
            log_ps = _log_probs(s[b, ch].reshape(h * w))  # (H, W) -> (H*W,)
            log_pt = _log_probs(t[b, ch].reshape(h * w))
            for i in range(h * w):
                total = total + torch.exp(log_pt[i]) * (log_pt[i] - log_ps[i])
    return total * temperature**2 / (n * c)


def _pearson(x: list[torch.Tensor], y: list[torch.Tensor]) -> torch.Tensor:
    """Pearson correlation of two lists of scalars, the denominator bounded below by 1e-8."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    vx = sum((a - mx) ** 2 for a in x)
    vy = sum((b - my) ** 2 for b in y)
    return cov / torch.clamp(torch.sqrt(vx) * torch.sqrt(vy), min=1e-8)


def naive_dist(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Per-pixel softmax by hand, then Pearson over lists of scalars, in float64."""
    s = student.double() / temperature
    t = teacher.detach().double() / temperature
    n, k, h, w = s.shape
    rows_s: list[list[torch.Tensor]] = []  # one list of K probabilities per pixel of the batch
    rows_t: list[list[torch.Tensor]] = []
    for b in range(n):
        for y in range(h):
            for x in range(w):
                ps = torch.exp(_log_probs(s[b, :, y, x]))  # (K,)
                pt = torch.exp(_log_probs(t[b, :, y, x]))
                rows_s.append([ps[c] for c in range(k)])
                rows_t.append([pt[c] for c in range(k)])
    inter = 1 - sum(_pearson(a, b) for a, b in zip(rows_s, rows_t, strict=True)) / len(rows_s)
    intra = 1 - sum(_pearson([r[c] for r in rows_s], [r[c] for r in rows_t]) for c in range(k)) / k
    return temperature**2 * (beta * inter + gamma * intra)


def _pair(
    seed: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float64, scale: float = 2.0
):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g, dtype=dtype) * scale
    t = torch.randn(*shape, generator=g, dtype=dtype) * scale
    return s, t


def _value_and_grad(fn: LossFn, s: torch.Tensor, t: torch.Tensor, **kw):
    s = s.detach().clone().requires_grad_(True)
    loss = fn(s, t, **kw)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach(), grad


# --- equality with the naive re-derivations ------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_cwd_matches_naive_value_and_gradient(temperature: float) -> None:
    s, t = _pair(0, (2, 3, 3, 4))
    got, got_grad = _value_and_grad(cwd_loss, s, t, temperature=temperature)
    ref, ref_grad = _value_and_grad(naive_cwd, s, t, temperature=temperature)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-8, atol=1e-12)
    # float32 inputs: float32 result, same to float32 accuracy.
    got32, got32_grad = _value_and_grad(cwd_loss, s.float(), t.float(), temperature=temperature)
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(got32_grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("temperature", "beta", "gamma"), [(1.0, 1.0, 1.0), (2.5, 2.0, 0.5), (4.0, 0.0, 1.0)]
)
def test_dist_matches_naive_value_and_gradient(temperature: float, beta: float, gamma: float):
    s, t = _pair(1, (2, 4, 2, 3))
    kw = {"temperature": temperature, "beta": beta, "gamma": gamma}
    got, got_grad = _value_and_grad(dist_loss, s, t, **kw)
    ref, ref_grad = _value_and_grad(naive_dist, s, t, **kw)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-8, atol=1e-12)
    got32, got32_grad = _value_and_grad(dist_loss, s.float(), t.float(), **kw)
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(got32_grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


# --- hand-computed values ---------------------------------------------------------------


def test_cwd_hand_computed() -> None:
    # Channel 0, two positions: teacher logits (0, 0) -> p_t = (1/2, 1/2); student (ln 3, 0) ->
    # p_s = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3). Channel 1: equal -> 0.
    # Sum 1/2 ln(4/3), divided by N*C = 2.
    student = torch.tensor([[[[math.log(3.0), 0.0]], [[1.0, 2.0]]]])  # (1, 2, 1, 2)
    teacher = torch.tensor([[[[0.0, 0.0]], [[1.0, 2.0]]]])
    assert cwd_loss(student, teacher).item() == pytest.approx(0.25 * math.log(4.0 / 3.0), rel=1e-6)


def test_dist_hand_computed_two_classes() -> None:
    # With K = 2 every centred row is +-(d, -d), and with 2 pixels every centred column too, so
    # each Pearson is +-1 (up to eps). Student = teacher with the classes swapped: all -1, so
    # beta * (1 - (-1)) + gamma * (1 - (-1)) = 2 beta + 2 gamma, times T**2.
    teacher = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, math.log(3.0)]]]])  # (1, 2, 1, 2)
    student = teacher.flip(1)
    got = dist_loss(student, teacher, beta=1.0, gamma=0.5)
    assert got.item() == pytest.approx(2.0 * 1.0 + 2.0 * 0.5, rel=1e-6)
    assert dist_loss(teacher, teacher, beta=1.0, gamma=0.5).item() == pytest.approx(0.0, abs=1e-6)


# --- zero at equality --------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_zero_when_equal(temperature: float) -> None:
    x, y = _pair(2, (2, 5, 4, 4), dtype=torch.float32)
    assert cwd_loss(x, x.clone(), temperature=temperature).item() == pytest.approx(0.0, abs=1e-6)
    assert dist_loss(x, x.clone(), temperature=temperature).item() == 0.0
    assert cwd_loss(x, y, temperature=temperature).item() > 0
    assert dist_loss(x, y, temperature=temperature).item() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_equal_inputs_give_exactly_zero(temperature: float, dtype: torch.dtype) -> None:
    x, _ = _pair(2, (2, 5, 4, 4), dtype=dtype)
    assert cwd_loss(x, x.clone(), temperature=temperature).item() == 0.0
    got = dist_loss(x, x.clone(), temperature=temperature, beta=2.0, gamma=0.5)
    assert got.item() == 0.0


# --- invariances ----------------------------------------------------------------------------


def test_cwd_invariant_to_per_image_channel_constants() -> None:
    s, t = _pair(3, (2, 3, 4, 5))
    ref = cwd_loss(s, t, temperature=2.0).item()
    g = torch.Generator().manual_seed(30)
    off_s = torch.randn(2, 3, 1, 1, generator=g, dtype=torch.float64) * 10
    off_t = torch.randn(2, 3, 1, 1, generator=g, dtype=torch.float64) * 10
    assert cwd_loss(s + off_s, t, temperature=2.0).item() == pytest.approx(ref, rel=1e-10)
    assert cwd_loss(s, t + off_t, temperature=2.0).item() == pytest.approx(ref, rel=1e-10)
    # A per-pixel constant (shared by the channels) is not one: the spatial softmax sees it.
    off_pixel = torch.randn(2, 1, 4, 5, generator=g, dtype=torch.float64)
    assert cwd_loss(s + off_pixel, t, temperature=2.0).item() != pytest.approx(ref, rel=1e-3)


def test_cwd_invariant_to_joint_permutations_and_batch_copies() -> None:
    s, t = _pair(4, (3, 4, 3, 5))
    ref = cwd_loss(s, t).item()
    g = torch.Generator().manual_seed(40)
    img = torch.randperm(3, generator=g)
    assert cwd_loss(s[img], t[img]).item() == pytest.approx(ref, rel=1e-12)
    ch = torch.randperm(4, generator=g)
    assert cwd_loss(s[:, ch], t[:, ch]).item() == pytest.approx(ref, rel=1e-12)
    # Positions: a different permutation per image, shared by student and teacher.
    perms = [torch.randperm(15, generator=g) for _ in range(3)]

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (N, C, H, W) -> (N, C, H*W)
        return torch.stack([flat[b][:, p] for b, p in enumerate(perms)]).view_as(x)

    assert cwd_loss(shuffle(s), shuffle(t)).item() == pytest.approx(ref, rel=1e-12)
    # Mean over images and channels: a copied batch gives the same value.
    assert cwd_loss(torch.cat([s, s]), torch.cat([t, t])).item() == pytest.approx(ref, rel=1e-12)


def test_dist_invariant_to_per_pixel_constants() -> None:
    s, t = _pair(5, (2, 4, 3, 3))
    kw = {"temperature": 2.0, "beta": 1.0, "gamma": 2.0}
    ref = dist_loss(s, t, **kw).item()
    g = torch.Generator().manual_seed(50)
    off_s = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64) * 10
    off_t = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64) * 10
    assert dist_loss(s + off_s, t, **kw).item() == pytest.approx(ref, rel=1e-10)
    assert dist_loss(s, t + off_t, **kw).item() == pytest.approx(ref, rel=1e-10)
    # A per-class constant (shared by the pixels) is not one: the class softmax sees it.
    off_class = torch.randn(1, 4, 1, 1, generator=g, dtype=torch.float64)
    assert dist_loss(s + off_class, t, **kw).item() != pytest.approx(ref, rel=1e-3)


def test_dist_invariant_to_joint_permutations_and_swap() -> None:
    s, t = _pair(6, (2, 4, 3, 5))
    kw = {"temperature": 1.5, "beta": 2.0, "gamma": 0.5}
    ref = dist_loss(s, t, **kw).item()
    g = torch.Generator().manual_seed(60)
    # All N*H*W pixels of the batch permuted together, across images.
    pix = torch.randperm(2 * 3 * 5, generator=g)

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        rows = x.permute(0, 2, 3, 1).reshape(-1, 4)  # (N, K, H, W) -> (N*H*W, K)
        return rows[pix].reshape(2, 3, 5, 4).permute(0, 3, 1, 2)  # -> (N, K, H, W)

    assert dist_loss(shuffle(s), shuffle(t), **kw).item() == pytest.approx(ref, rel=1e-12)
    cls = torch.randperm(4, generator=g)
    assert dist_loss(s[:, cls], t[:, cls], **kw).item() == pytest.approx(ref, rel=1e-12)
    # Pearson is symmetric: swapping the roles gives the same value.
    assert dist_loss(t, s, **kw).item() == pytest.approx(ref, rel=1e-12)


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [cwd_loss, dist_loss])
def test_no_gradient_reaches_teacher(fn: LossFn) -> None:
    s, t = _pair(7, (2, 3, 4, 4), dtype=torch.float32)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = fn(s, t, temperature=2.0)
    (grad_t,) = torch.autograd.grad(loss, t, retain_graph=True, allow_unused=True)
    assert grad_t is None
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    # Only the teacher requiring grad: nothing to differentiate.
    assert not fn(s.detach(), t, temperature=2.0).requires_grad


def test_zero_logits_finite() -> None:
    s = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = cwd_loss(s, torch.zeros(1, 3, 2, 2))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(s.grad).all()
    # DIST: an all-equal student has zero-variance rows and columns, each Pearson is 0.
    _, t = _pair(8, (1, 3, 2, 2), dtype=torch.float32)
    s2 = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = dist_loss(s2, t)
    loss.backward()
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    assert torch.isfinite(s2.grad).all()


def test_cwd_extreme_teacher_logits_finite() -> None:
    # A teacher probability underflowing to 0 contributes 0, not 0 * inf.
    t = torch.tensor([[[[200.0, -200.0]]]])  # (1, 1, 1, 2)
    s = torch.zeros(1, 1, 1, 2)
    assert cwd_loss(s, t).item() == pytest.approx(math.log(2.0), rel=1e-5)


# --- precision ------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [cwd_loss, dist_loss])
def test_float32_under_autocast(fn: LossFn, monkeypatch: pytest.MonkeyPatch) -> None:
    s, t = _pair(9, (2, 4, 3, 3), dtype=torch.float32)
    seen: list[bool] = []
    for name in ("softmax", "log_softmax"):
        original = getattr(F, name)

        def spy(*args, _original=original, **kwargs):
            seen.append(torch.is_autocast_enabled("cpu"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(F, name, spy)
    s16 = s.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(s16, t.bfloat16(), temperature=2.0)
        out32 = fn(s, t, temperature=2.0)
    assert seen and not any(seen)  # autocast is off inside
    assert out.dtype == torch.float32 and out.shape == ()
    ref = fn(s.bfloat16().float(), t.bfloat16().float(), temperature=2.0)
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    assert out32.dtype == torch.float32
    assert out32.item() == pytest.approx(fn(s, t, temperature=2.0).item(), rel=1e-6)
    out.backward()
    assert s16.grad is not None and s16.grad.dtype == torch.bfloat16
    assert torch.isfinite(s16.grad.float()).all()


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [cwd_loss, dist_loss])
def test_shape_errors(fn: LossFn) -> None:
    with pytest.raises(ValueError, match="student_logits"):
        fn(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="teacher_logits"):
        fn(torch.zeros(1, 3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"student_logits and teacher_logits.*\(2, 3, 8, 8\)"):
        fn(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match="zero-sized"):
        fn(torch.zeros(0, 3, 4, 4), torch.zeros(0, 3, 4, 4))


@pytest.mark.parametrize("fn", [cwd_loss, dist_loss])
@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_temperature_errors(fn: LossFn, temperature: float) -> None:
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="temperature"):
        fn(x, x, temperature=temperature)


@pytest.mark.parametrize("name", ["beta", "gamma"])
@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf])
def test_dist_weight_errors(name: str, value: float) -> None:
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match=name):
        dist_loss(x, x, **{name: value})
    # Zero weights are allowed (one term only).
    assert torch.isfinite(dist_loss(x, x + 1, **{name: 0.0}))


# --- golden values --------------------------------------------------------------------------


def test_golden_values() -> None:
    g = torch.Generator().manual_seed(1234)
    s = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    t = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    check_golden(
        {
            "cwd_loss_T1": cwd_loss(s, t).item(),
            "cwd_loss_T4": cwd_loss(s, t, temperature=4.0).item(),
            "dist_loss_T1": dist_loss(s, t).item(),
            "dist_loss_T4_beta2_gamma05": dist_loss(
                s, t, temperature=4.0, beta=2.0, gamma=0.5
            ).item(),
        }
    )
