"""One iteration of structured knowledge distillation, as two pure-ish steps.

The paper's objective (Sec. 3.4) is

    l(S, D) = l_mc(S) + lambda1 (l_pi(S) + l_pa(S)) - lambda2 l_ho(S, D),
    l_ho = E_{Q_s}[D(Q_s | I)] - E_{Q_t}[D(Q_t | I)],

minimised over the student S and maximised over the critic D (D minimises ``l_ho`` plus the
gradient penalty), alternately:

1. :func:`student_step`: the teacher runs in eval mode without gradients; the student is updated
   on ``task + sum(weight * term)`` over the enabled terms of the registry
   (:data:`skdlib.train.terms.TERMS`: ``lambda_pi * pixel + lambda_pa * pair + lambda_ho * gen``
   for the paper's objective, the variants and later methods likewise) with the critic fixed.
   ``gen = -E[D(Q_s | I)]``: the teacher half of ``-l_ho`` is constant for S.
2. :func:`critic_step`: the critic is updated on ``critic + gp_weight * gp`` (times
   ``disc_loss_scale``) with the student fixed (its maps detached).

:func:`distill_step` runs both and returns one dict of every term. Nothing is stored on objects
between calls: the caller owns the networks, optimisers and the batch. A step whose loss is not
finite is skipped (no parameter changes) and reported with ``skipped_student`` /
``skipped_critic`` = 1; the training loop decides when too many in a row stop the run.

The returned dicts hold Python floats (``.item()``), ready for ``metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from skdlib.constants import IGNORE_INDEX
from skdlib.losses import gradient_penalty, holistic_critic_loss, segmentation_task_loss
from skdlib.train import terms as registry
from skdlib.train.config import DistillConfig
from skdlib.train.terms import frozen, needs_critic, needs_teacher

__all__ = [
    "StepContext",
    "critic_step",
    "distill_step",
    "frozen",
    "needs_critic",
    "needs_teacher",
    "student_losses",
    "student_step",
    "teacher_forward",
    "with_unlabeled",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepContext:
    """What a step needs besides the tensors: the distillation settings and numerics.

    Attributes:
        distill: the ``distill`` section of the experiment configuration.
        aux_weight: weight of the auxiliary head's cross-entropy (PSPNet: 0.4).
        ignore_index: label ignored by the task loss.
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` to run the forward passes under
            autocast (CUDA), or ``None`` for full precision.
        grad_scaler: a ``torch.amp.GradScaler`` for fp16, else ``None``.
        critic_generator: random generator for the gradient penalty's interpolation weights.
    """

    distill: DistillConfig
    aux_weight: float = 0.4
    ignore_index: int = IGNORE_INDEX
    autocast_dtype: torch.dtype | None = None
    grad_scaler: torch.amp.GradScaler | None = None
    critic_generator: torch.Generator | None = None


def _autocast(ctx: StepContext, device: torch.device) -> contextlib.AbstractContextManager:
    if ctx.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=ctx.autocast_dtype)


def teacher_forward(teacher: nn.Module, image: torch.Tensor, ctx: StepContext):
    """The teacher's outputs for ``image`` ``(N, 3, H, W)``: eval mode, no gradient."""
    if teacher.training:
        raise ValueError("the teacher must be in eval mode (call teacher.eval()) before a step")
    with torch.no_grad(), _autocast(ctx, image.device):
        return teacher(image)


def _critic_map(critic: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Logits ``(N, K, h, w)`` -> the map the critic scores (probabilities or logits), in
    float32."""
    return critic.prepare_input(logits.float())


def student_losses(
    student_out,
    teacher_out,
    label: torch.Tensor,
    image: torch.Tensor,
    ctx: StepContext,
    *,
    critic: nn.Module | None = None,
    adapter: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Every term of the student's objective for one batch, and their weighted sum ``total``.

    Args:
        student_out: the student's ``SegmentationOutput`` (training mode, with gradients).
        teacher_out: the teacher's ``SegmentationOutput`` (no gradients), or ``None`` when no
            term needs it.
        label: ``(N, H, W)`` int64 targets, ``ctx.ignore_index`` ignored.
        image: ``(N, 3, H, W)`` the network input (the critic's condition).
        ctx: settings.
        critic: the discriminator (required when ``distill.holistic``).
        adapter: the MIMIC 1x1 adapter (required when ``distill.mimic``).

    Returns:
        ``task``, every enabled term of the registry under its name (``pixel``, ``pair``,
        ``gen``, ...), and ``total`` = task + sum of weight * term. Scalar tensors.
    """
    d = ctx.distill
    losses: dict[str, torch.Tensor] = {
        "task": segmentation_task_loss(
            student_out.logits.float(),
            label,
            aux_logits=None if student_out.aux_logits is None else student_out.aux_logits.float(),
            aux_weight=ctx.aux_weight,
            ignore_index=ctx.ignore_index,
        )
    }
    total = losses["task"]
    active = registry.active_terms(d)
    if active and teacher_out is None:
        raise ValueError("a distillation term is enabled but teacher_out is None")
    inputs = registry.TermInputs(
        student=student_out,
        teacher=teacher_out,
        image=image,
        distill=d,
        critic=critic,
        adapter=adapter,
    )
    for term in active:
        losses[term.name] = term.loss(inputs)
        total = total + float(getattr(d, term.weight)) * losses[term.name]
    losses["total"] = total
    return losses


def _finite(value: torch.Tensor) -> bool:
    return bool(torch.isfinite(value).all())


def student_step(
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    image: torch.Tensor,
    label: torch.Tensor,
    ctx: StepContext,
    *,
    teacher_out=None,
    critic: nn.Module | None = None,
    adapter: nn.Module | None = None,
):
    """Update the student once with the critic fixed.

    Returns:
        ``(terms, student_out)``: floats of every term (plus ``skipped_student``), and the
        student's output (its logits feed the critic step).
    """
    optimizer.zero_grad(set_to_none=True)
    with _autocast(ctx, image.device):
        student_out = student(image)
    losses = student_losses(
        student_out, teacher_out, label, image, ctx, critic=critic, adapter=adapter
    )
    terms = {k: float(v.detach()) for k, v in losses.items()}
    if not _finite(losses["total"]):
        logger.warning("non-finite student loss %s: step skipped", terms)
        optimizer.zero_grad(set_to_none=True)
        terms["skipped_student"] = 1.0
        return terms, student_out
    if ctx.grad_scaler is not None:
        ctx.grad_scaler.scale(losses["total"]).backward()
        ctx.grad_scaler.step(optimizer)
        ctx.grad_scaler.update()
    else:
        losses["total"].backward()
        optimizer.step()
    terms["skipped_student"] = 0.0
    return terms, student_out


def critic_step(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    image: torch.Tensor,
    ctx: StepContext,
) -> dict[str, float]:
    """Update the critic once with the student fixed: ``scale * (critic + gp_weight * gp)``.

    ``critic`` is the holistic critic loss (:func:`skdlib.losses.holistic_critic_loss`, which
    for WGAN equals ``l_ho``: the critic minimises ``l_ho``), ``gp`` the gradient penalty between
    the teacher's and the student's maps (computed for both GAN kinds when ``gp_weight > 0``).
    Both maps are detached: no gradient reaches the student.

    Returns:
        floats ``critic``, ``gp``, ``d_total``, ``score_teacher``, ``score_student`` (mean
        embedding scores), ``skipped_critic``.
    """
    d = ctx.distill
    real = _critic_map(critic, teacher_logits.detach())
    fake = _critic_map(critic, student_logits.detach())
    image = image.detach()
    optimizer.zero_grad(set_to_none=True)
    score_t = critic(real, image)
    score_s = critic(fake, image)
    critic_loss = holistic_critic_loss(score_t, score_s, kind=d.gan_kind)
    gp = (
        gradient_penalty(critic, real, fake, image, generator=ctx.critic_generator)
        if d.gp_weight > 0
        else torch.zeros((), device=real.device)
    )
    total = d.disc_loss_scale * (critic_loss + d.gp_weight * gp)
    terms = {
        "critic": float(critic_loss.detach()),
        "gp": float(gp.detach()),
        "d_total": float(total.detach()),
        "score_teacher": float(score_t.detach().float().mean()),
        "score_student": float(score_s.detach().float().mean()),
    }
    if not _finite(total):
        logger.warning("non-finite critic loss %s: step skipped", terms)
        optimizer.zero_grad(set_to_none=True)
        terms["skipped_critic"] = 1.0
        return terms
    total.backward()
    optimizer.step()
    terms["skipped_critic"] = 0.0
    return terms


def distill_step(
    *,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    image: torch.Tensor,
    label: torch.Tensor,
    ctx: StepContext,
    critic: nn.Module | None = None,
    critic_optimizer: torch.optim.Optimizer | None = None,
    adapter: nn.Module | None = None,
    teacher_out: Any = None,
) -> dict[str, float]:
    """One full iteration: teacher forward, student update, then critic update.

    Args:
        student: the network being trained, in training mode.
        teacher: the fixed teacher in eval mode, or ``None`` when no term needs it.
        optimizer: the student's optimiser (and the MIMIC adapter's parameters, if any).
        image: ``(N, 3, H, W)`` augmented, normalised batch.
        label: ``(N, H, W)`` int64 targets.
        ctx: settings.
        critic, critic_optimizer: the discriminator and its optimiser (holistic term only).
        adapter: the MIMIC adapter (MIMIC only).
        teacher_out: the teacher's outputs for ``image`` when the caller has them (e.g. from a
            :class:`~skdlib.train.teacher_cache.TeacherCache`); else the teacher runs here.

    Returns:
        A flat dict of floats: every student term, ``total``, the critic's terms when the
        holistic term is on, and ``skipped_student`` / ``skipped_critic``.
    """
    d = ctx.distill
    if needs_teacher(d) and teacher_out is None:
        if teacher is None:
            raise ValueError("distillation terms are enabled but no teacher was given")
        teacher_out = teacher_forward(teacher, image, ctx)
    terms, student_out = student_step(
        student,
        optimizer,
        image,
        label,
        ctx,
        teacher_out=teacher_out,
        critic=critic,
        adapter=adapter,
    )
    if needs_critic(d):
        if critic is None or critic_optimizer is None:
            raise ValueError("distill.holistic needs a critic and its optimiser")
        # Both maps on the grid of the terms (distill.align), where the generator term scores
        # the student's.
        student_logits, teacher_logits = registry.on_one_grid(
            student_out.logits, teacher_out.logits, d.align
        )
        terms.update(
            critic_step(critic, critic_optimizer, teacher_logits, student_logits, image, ctx)
        )
    return terms


def with_unlabeled(
    image: torch.Tensor,
    label: torch.Tensor,
    unlabeled_image: torch.Tensor | None,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append a batch of unlabeled images to a labelled batch, with all-ignore labels.

    ``image`` ``(N, 3, H, W)``, ``label`` ``(N, H, W)``, ``unlabeled_image`` ``(M, 3, H, W)`` or
    ``None`` -> ``(N + M, 3, H, W)``, ``(N + M, H, W)``. Every distillation term and the critic then
    see all ``N + M`` images, while the task loss, which counts labelled pixels only, sees exactly
    the ``N`` labelled ones: the unlabeled rows contribute nothing to its sum nor to its count. (The
    student's batch-norm statistics do see every image, as with any larger batch.)
    """
    if unlabeled_image is None or unlabeled_image.shape[0] == 0:
        return image, label
    if unlabeled_image.dim() != 4 or unlabeled_image.shape[1:] != image.shape[1:]:
        raise ValueError(
            f"unlabeled_image must be (M, {image.shape[1]}, {image.shape[2]}, {image.shape[3]}) "
            f"like the labelled batch {tuple(image.shape)}, got {tuple(unlabeled_image.shape)}"
        )
    ignore = torch.full(
        (unlabeled_image.shape[0], *label.shape[1:]),
        ignore_index,
        dtype=label.dtype,
        device=label.device,
    )  # (M, H, W)
    return (
        torch.cat([image, unlabeled_image.to(image.device, image.dtype)]),  # (N + M, 3, H, W)
        torch.cat([label, ignore]),  # (N + M, H, W)
    )
