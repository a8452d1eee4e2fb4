"""Holistic distillation (Eq. 4 of the paper): a conditional GAN on segmentation maps.

``l_ho = E[D(Q_s | I)] - E[D(Q_t | I)]``: the critic (the paper's embedding network) ``D`` scores
a segmentation map given its image; higher means more teacher-like. The student S minimises the
objective ``l = l_mc + lambda1 (l_pi + l_pa) - lambda2 * l_ho``, i.e. ``lambda2 *``
:func:`holistic_generator_loss` for its holistic part; the critic minimises ``l_ho`` plus the
weighted :func:`gradient_penalty` (:func:`holistic_critic_loss`), which maximises ``l`` over D.

The critic is any callable ``critic(seg_map, image) -> (N,) or (N, 1)`` scores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["gradient_penalty", "holistic_critic_loss", "holistic_generator_loss"]

_KINDS = ("wgan", "hinge")

Critic = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _scores(score: torch.Tensor, name: str) -> torch.Tensor:
    """Accept ``(N,)`` or ``(N, 1)`` scores and return ``(N,)``."""
    if score.dim() == 2 and score.shape[1] == 1:
        return score.reshape(-1)  # (N, 1) -> (N,)
    if score.dim() != 1:
        raise ValueError(f"{name} must be (N,) or (N, 1) scores, got shape {tuple(score.shape)}")
    return score


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")


def holistic_critic_loss(
    score_teacher: torch.Tensor, score_student: torch.Tensor, *, kind: str = "wgan"
) -> torch.Tensor:
    """The critic's loss to minimise (the gradient penalty is added by the caller).

    - ``"wgan"`` (the authors' ``master`` code): ``mean(D(Q_s|I)) - mean(D(Q_t|I)) = l_ho``
      estimated on the batch; minimising it widens the score gap teacher minus student, and
      maximises the paper's objective ``l`` (where ``l_ho`` enters as ``-lambda2 * l_ho``) over D.
    - ``"hinge"`` (the ``cvpr_19`` branch): ``mean(relu(1 - D(Q_t|I))) + mean(relu(1 + D(Q_s|I)))``.

    Pass the student's scores computed from a detached map so only the critic trains. The
    authors' code also scales this loss by ``lambda2 = 0.1``; that weight belongs to the config.

    Args:
        score_teacher: ``(N,)`` or ``(N, 1)`` critic scores of teacher maps.
        score_student: ``(M,)`` or ``(M, 1)`` critic scores of student maps.
        kind: ``"wgan"`` or ``"hinge"``.

    Returns:
        Scalar tensor (means over the images of each batch).
    """
    _check_kind(kind)
    st = _scores(score_teacher, "score_teacher")
    ss = _scores(score_student, "score_student")
    if kind == "wgan":
        return ss.mean() - st.mean()
    return torch.relu(1.0 - st).mean() + torch.relu(1.0 + ss).mean()


def holistic_generator_loss(score_student: torch.Tensor, *, kind: str = "wgan") -> torch.Tensor:
    """The student's adversarial loss to minimise: ``-mean(D(Q_s|I))`` for both kinds.

    In the objective ``l = l_mc + lambda1 (l_pi + l_pa) - lambda2 * l_ho`` the teacher term of
    ``l_ho`` does not depend on the student, so minimising ``-lambda2 * l_ho`` over the student
    is minimising ``lambda2 * holistic_generator_loss`` (the value differs by the constant
    ``lambda2 * mean(D(Q_t|I))``; the gradient is the same). The hinge GAN's generator loss is
    the same expression.

    Args:
        score_student: ``(N,)`` or ``(N, 1)`` critic scores of the student's maps (not detached:
            the gradient reaches the student through the critic; the critic's own parameters
            are not stepped in this phase).
        kind: ``"wgan"`` or ``"hinge"``.

    Returns:
        Scalar tensor.
    """
    _check_kind(kind)
    return -_scores(score_student, "score_student").mean()


def gradient_penalty(
    critic: Critic,
    teacher_map: torch.Tensor,
    student_map: torch.Tensor,
    image: torch.Tensor | None,
    *,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``mean_n (||grad_x D(x_n | I_n)||_2 - 1)^2``, unweighted.

    ``x = eps * Q_t + (1 - eps) * Q_s`` with one ``eps ~ U(0, 1)`` per image, drawn on the maps'
    device from ``generator`` when given (else the global generator), or taken from ``eps``.
    The gradient is taken with respect to the map only (the image is a fixed condition), with
    ``create_graph=True`` so the penalty trains the critic. Both maps are detached: nothing
    reaches the student. The norm is ``sqrt(sum g^2 + 1e-12)``, finite with a finite gradient
    when ``g = 0`` (the authors' ``master`` code takes the square root without an epsilon,
    which gives NaN there). A critic whose output does not depend on the map yields gradient
    0 and penalty ~1. Maps must be what the critic receives (probabilities or logits, see
    ``Discriminator.prepare_input``). The weight (10 in the authors' code) belongs to the config.

    Args:
        critic: ``critic(seg_map, image)`` returning ``(N,)`` or ``(N, 1)`` scores.
        teacher_map: ``(N, K, H, W)`` real samples.
        student_map: ``(N, K, H, W)`` fake samples, same shape.
        image: ``(N, 3, H_i, W_i)`` condition, or ``None`` for an unconditional critic.
        generator: optional ``torch.Generator`` for the interpolation weights.
        eps: optional explicit weights, ``(N,)`` or broadcastable ``(N, 1, 1, 1)``.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: rank or shape mismatch of the maps, bad ``eps`` shape, bad score shape.
    """
    if teacher_map.dim() != 4 or student_map.dim() != 4:
        raise ValueError(
            "teacher_map and student_map must be (N, K, H, W), got "
            f"{tuple(teacher_map.shape)} and {tuple(student_map.shape)}"
        )
    if teacher_map.shape != student_map.shape:
        raise ValueError(
            "teacher_map and student_map must have the same shape, got "
            f"teacher {tuple(teacher_map.shape)} and student {tuple(student_map.shape)}"
        )
    n = teacher_map.shape[0]
    real = teacher_map.detach()
    fake = student_map.detach()
    if eps is None:
        eps = torch.rand(n, generator=generator, device=real.device, dtype=real.dtype)
    elif eps.numel() != n:
        raise ValueError(f"eps must hold one weight per image ({n}), got shape {tuple(eps.shape)}")
    w = eps.detach().to(device=real.device, dtype=real.dtype)
    w = w.reshape(n, 1, 1, 1)  # (N,) -> (N, 1, 1, 1)
    with torch.enable_grad():
        x = (w * real + (1.0 - w) * fake).requires_grad_(True)  # (N, K, H, W)
        score = _scores(critic(x, image), "critic output")
        if score.shape[0] != n:
            raise ValueError(f"critic returned {score.shape[0]} scores for {n} maps")
        if score.requires_grad:
            (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True, allow_unused=True)
        else:
            grad = None
        if grad is None:
            grad = torch.zeros_like(x)
        norm = torch.sqrt(grad.flatten(1).pow(2).sum(dim=1) + 1e-12)  # (N, K*H*W) -> (N,)
        return (norm - 1.0).pow(2).mean()
