"""Pixel-wise distillation (Eq. 1 of the paper): KL divergence of the class distributions per pixel.

``l_pi = 1/|R| * sum_i KL(q_i^t || q_i^s)``, averaged here over every pixel of every image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from skdlib.losses.checks import at_least_float32, check_logits_pair

__all__ = ["pixelwise_kd_loss", "pixelwise_kl_map"]


def pixelwise_kl_map(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-pixel ``KL(q^t || q^s)`` of the softened class distributions.

    ``q = softmax(logits / temperature)`` over the class axis and
    ``KL_i = sum_k q_ik^t (log q_ik^t - log q_ik^s)``, computed from ``log_softmax`` for stability
    (a teacher probability that underflows to 0 contributes 0, never ``0 * inf``).

    Args:
        student_logits: ``(N, K, H, W)`` student class scores.
        teacher_logits: ``(N, K, H, W)``, same shape; detached inside (the teacher gets no
            gradient).
        temperature: softening temperature ``T > 0``.

    Returns:
        ``(N, H, W)`` non-negative KL per pixel, in float32 (float64 if the inputs are float64).
        Not multiplied by ``T**2``; the book draws heat-maps from it.

    Raises:
        ValueError: wrong rank, different shapes, or ``temperature <= 0``.
    """
    check_logits_pair(student_logits, teacher_logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = at_least_float32(student_logits)
    t = at_least_float32(teacher_logits.detach())
    log_q_s = F.log_softmax(s / temperature, dim=1)  # (N, K, H, W)
    log_q_t = F.log_softmax(t / temperature, dim=1)  # (N, K, H, W)
    return (log_q_t.exp() * (log_q_t - log_q_s)).sum(dim=1)  # (N, K, H, W) -> (N, H, W)


def pixelwise_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Pixel-wise distillation loss, Eq. 1: ``T**2 * mean_{n,i} KL(q_{n,i}^t || q_{n,i}^s)``.

    The mean runs over every pixel of every image, so the value does not depend on the batch
    size. The authors' code (``master``) instead sums over the batch and divides by ``H*W`` only,
    which scales the term with the batch size; it also uses cross-entropy against the teacher's
    soft targets, which is this KL plus the teacher's entropy (same gradient, different value).
    The paper's text writes ``KL(q^s || q^t)``; the teacher-first direction used here is the one
    the code optimises. The ``T**2`` factor keeps gradient magnitudes comparable across
    temperatures (it is 1 at the paper's ``T = 1``).

    Args:
        student_logits: ``(N, K, H, W)`` student class scores.
        teacher_logits: ``(N, K, H, W)`` teacher class scores, same shape (no silent
            broadcasting); detached inside, so the teacher receives no gradient.
        temperature: softening temperature ``T > 0``.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: wrong rank, different shapes, or ``temperature <= 0``.
    """
    kl = pixelwise_kl_map(student_logits, teacher_logits, temperature=temperature)  # (N, H, W)
    return kl.mean() * (temperature**2)
