"""DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022): match the
Pearson correlations of the class probabilities, across classes per pixel (inter-class relation)
and across pixels per class (intra-class relation), in its segmentation form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from skdlib.losses.checks import (
    at_least_float32,
    check_logits_pair,
    check_nonempty,
    check_temperature,
    full_precision,
)

__all__ = ["dist_loss"]

# Lower bound of the Pearson denominator (the authors' code adds 1e-8 to it instead).
_PEARSON_EPS = 1e-8


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(R, D), (R, D) -> (R,)``: ``<a_c, b_c> / max(|a_c| |b_c|, eps)``, ``x_c = x - mean(x)``.

    The denominator is ``sqrt(|a_c|^2 |b_c|^2)``, so for ``a == b`` it equals the numerator
    exactly (``sqrt(x * x) == x`` in IEEE arithmetic) and the correlation is exactly 1.
    """
    a = a - a.mean(dim=1, keepdim=True)  # (R, D) centred per row
    b = b - b.mean(dim=1, keepdim=True)  # (R, D)
    # (R,): max(|a_c| |b_c|, eps), clamped before the square root (finite gradient at zero)
    norms = torch.sqrt((a.pow(2).sum(dim=1) * b.pow(2).sum(dim=1)).clamp_min(_PEARSON_EPS**2))
    return (a * b).sum(dim=1) / norms  # (R,)


def _check_weight(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """DIST, segmentation form: ``T**2 * (beta * (1 - mean_i rho(P^s_i., P^t_i.))
    + gamma * (1 - mean_k rho(P^s_.k, P^t_.k)))``.

    ``P = softmax(logits / T)`` over the classes, with the pixels of the whole batch as rows:
    ``(N, K, H, W) -> (N*H*W, K)``. The ``beta`` term (inter-class relation) averages, over the
    ``N*H*W`` pixel rows, the Pearson correlation of student and teacher across the ``K``
    classes; the ``gamma`` term (intra-class relation) averages, over the ``K`` class columns,
    the Pearson correlation across all ``N*H*W`` pixels of the batch. ``rho(x, y) =
    <x_c, y_c> / max(|x_c| |y_c|, eps)`` with ``x_c = x - mean(x)`` and ``eps = 1e-8``. The
    value lies in ``[0, 2 * T**2 * (beta + gamma)]``.

    Departure from the authors' code (cosine similarity of mean-centred vectors,
    ``<x_c, y_c> / (|x_c| |y_c| + 1e-8)``): ``eps`` bounds the denominator from below instead of
    being added to it, so ``dist_loss(x, x) == 0`` exactly (every correlation is exactly 1).
    Where ``|x_c| |y_c| > eps`` the two differ by a relative ``eps / (|x_c| |y_c|)`` of ``rho``.

    Zero variance: a row or column that is constant for either network (a pixel with equal
    logits for all classes; a class with the same probability at every pixel; ``K = 1``; a
    single pixel) has ``rho = 0`` (numerator 0 over ``eps``), so it adds the full 1 to its mean
    even when student and teacher agree. The value and gradient stay finite, but as in the
    authors' code the gradient through a (near) constant student row or column grows like
    ``1 / eps`` (the cosine's gradient): for an all-equal student row at ``T = 1`` the gradient
    w.r.t. its logits is the teacher's centred probabilities times
    ``beta / (eps * K * N*H*W)``, i.e. of order ``1e8 / (K * N*H*W)``.

    Invariances: adding a per-pixel constant to the logits (softmax over classes); a joint
    permutation of the pixels of the batch or of the classes; swapping student and teacher (the
    value; the teacher is still the one detached). Rescaling the logits is *not* an invariance
    (the softmax is not affine), although Pearson is invariant to affine maps of probabilities.

    Args:
        student_logits: ``(N, K, H, W)`` student class scores.
        teacher_logits: ``(N, K, H, W)``, same shape (no broadcasting); detached inside, so the
            teacher receives no gradient.
        temperature: softening temperature ``T``, finite and ``> 0``.
        beta: weight of the inter-class (per-pixel) term, finite and ``>= 0``.
        gamma: weight of the intra-class (per-class) term, finite and ``>= 0``.

    Returns:
        0-dim tensor, float32 (float64 if the inputs are float64); half / bfloat16 inputs are
        promoted and autocast is switched off inside, so it is float32 under autocast too.

    Raises:
        ValueError: rank not 4, different shapes, a zero-sized dimension, a temperature that is
            not a finite number ``> 0``, or a negative / non-finite ``beta`` or ``gamma``.
    """
    check_logits_pair(student_logits, teacher_logits)
    check_nonempty(student_logits)
    check_temperature(temperature)
    _check_weight("beta", beta)
    _check_weight("gamma", gamma)
    k = student_logits.shape[1]
    with full_precision(student_logits.device):
        s = at_least_float32(student_logits)
        t = at_least_float32(teacher_logits.detach())
        p_s = F.softmax(s / temperature, dim=1)  # (N, K, H, W), softmax over classes
        p_t = F.softmax(t / temperature, dim=1)  # (N, K, H, W)
        p_s = p_s.permute(0, 2, 3, 1).reshape(-1, k)  # (N, K, H, W) -> (N, H, W, K) -> (N*H*W, K)
        p_t = p_t.permute(0, 2, 3, 1).reshape(-1, k)  # (N, K, H, W) -> (N, H, W, K) -> (N*H*W, K)
        inter = 1.0 - _pearson_rows(p_s, p_t).mean()  # (N*H*W,) -> ()
        intra = 1.0 - _pearson_rows(p_s.t(), p_t.t()).mean()  # (K, N*H*W) -> (K,) -> ()
        return (temperature**2) * (beta * inter + gamma * intra)
