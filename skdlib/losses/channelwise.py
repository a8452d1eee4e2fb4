"""Channel-wise distillation (CWD; Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021): match, per image and channel, the spatial distributions of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from skdlib.losses.checks import (
    at_least_float32,
    check_logits_pair,
    check_nonempty,
    check_temperature,
    full_precision,
)

__all__ = ["cwd_loss"]


def cwd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Channel-wise distillation: ``T**2 / (N*C) * sum_{n,c} KL(phi(t_nc / T) || phi(s_nc / T))``.

    ``phi`` is a softmax over the ``H*W`` positions of one image ``n`` and channel ``c`` (not over
    the channels), so each channel of each image becomes a spatial distribution;
    ``KL(p^t || p^s) = sum_i p_i^t (log p_i^t - log p_i^s)`` is summed over the positions and the
    channels, multiplied by ``T**2`` and divided by ``N*C`` (sum over positions, mean over images
    and channels). This is the reduction of the authors' code and of mmrazor's
    ``ChannelWiseDivergence`` (``loss_weight`` is left to the caller); no departure. Computed
    from ``log_softmax`` for stability: a teacher probability that underflows to 0 contributes
    0, never ``0 * inf``.

    Since the softmax runs over positions, adding a constant per (image, channel) to either
    network's logits leaves the loss unchanged.

    Args:
        student_logits: ``(N, C, H, W)`` student logits.
        teacher_logits: ``(N, C, H, W)``, same shape (no broadcasting); detached inside, so the
            teacher receives no gradient.
        temperature: softening temperature ``T``, finite and ``> 0`` (CIRKD's scripts use 4 on
            logits, mmrazor 1).

    Returns:
        0-dim tensor, float32 (float64 if the inputs are float64); half / bfloat16 inputs are
        promoted and autocast is switched off inside, so it is float32 under autocast too.

    Raises:
        ValueError: rank not 4, different shapes, a zero-sized dimension, or a temperature that
            is not a finite number ``> 0``.
    """
    check_logits_pair(student_logits, teacher_logits)
    check_nonempty(student_logits)
    check_temperature(temperature)
    n, c = student_logits.shape[:2]
    with full_precision(student_logits.device):
        s = at_least_float32(student_logits).flatten(2)  # (N, C, H, W) -> (N, C, H*W)
        t = at_least_float32(teacher_logits.detach()).flatten(2)  # (N, C, H, W) -> (N, C, H*W)
        log_p_s = F.log_softmax(s / temperature, dim=2)  # (N, C, H*W), softmax over positions
        log_p_t = F.log_softmax(t / temperature, dim=2)  # (N, C, H*W)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()  # (N, C, H*W) -> ()
        return kl * (temperature**2) / (n * c)
