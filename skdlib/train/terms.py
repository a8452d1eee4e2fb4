"""The registry of distillation terms: one declaration per term.

A :class:`Term` names its key in the step's loss dict, the ``distill`` switch that turns it on,
the ``distill`` field holding its weight, what it reads from the networks' outputs (logits,
features, the critic, the MIMIC adapter) and the function that computes it. Everything else
follows from :data:`TERMS`: the student's objective ``task + sum(weight * term)`` in
:mod:`skdlib.train.step`, the checks "needs a teacher / features / a critic / an adapter", the
config's validation of the weights, and the terms the loop logs.

Adding a term is one entry here plus its switch and weight fields in
:class:`skdlib.train.config.DistillConfig`. Readers look :data:`TERMS` up at call time, so a
test can extend it.

Networks on different grids (another output stride, feature maps of other sizes): the inputs
are prepared here, the losses stay pure functions of maps of one size. :func:`on_one_grid` brings
a student map and a teacher map to the grid ``distill.align`` names (the student's by default,
the teacher's map resized to it; or the teacher's), with :func:`resize_map` (area averaging to a
coarser grid, bilinear interpolation otherwise); maps of one size are never touched. Each term's
docstring says what it resizes. Channel counts may differ for the pair-wise terms and attention
transfer (they compare each network with itself first); MIMIC maps the student's channels to the
teacher's with its 1x1 adapter; the logit terms need one class count (checked when the networks
are built).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from skdlib import losses

__all__ = [
    "ALIGNS",
    "READS",
    "TERMS",
    "Term",
    "TermInputs",
    "active_terms",
    "frozen",
    "needs_adapter",
    "needs_critic",
    "needs_features",
    "needs_teacher",
    "on_one_grid",
    "resize_map",
    "term_weights",
]

#: What a term may read: the logits, ``features[distill.pair_feature]``, the critic, the adapter.
READS = ("logits", "features", "critic", "adapter")


#: The grids ``distill.align`` may name: the student's or the teacher's.
ALIGNS = ("student", "teacher")


def resize_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` ``(N, C, h, w)`` on the grid ``size = (H, W)``: ``(N, C, H, W)``.

    Unchanged at that size; area averaging (each cell the mean of the cells it covers, adaptive
    average pooling) where neither side grows; bilinear interpolation (``align_corners=False``,
    as evaluation upsamples logits) otherwise. Linear in ``x``: gradients flow through it.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)  # (N, C, h, w) -> (N, C, H, W), H <= h, W <= w
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # (N, C, H, W)


def on_one_grid(
    student_map: torch.Tensor, teacher_map: torch.Tensor, align: str = "student"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A student map ``(N, C_s, h_s, w_s)`` and a teacher map ``(N, C_t, h_t, w_t)`` on one grid:
    the student's (``align="student"``: the teacher's map resized) or the teacher's (the
    student's map resized, its gradient flowing through the resizing); channels unchanged.
    Maps of one size come back as they are."""
    if align not in ALIGNS:
        raise ValueError(f"distill.align must be one of {ALIGNS}, got {align!r}")
    if student_map.shape[-2:] == teacher_map.shape[-2:]:
        return student_map, teacher_map
    if align == "student":
        return student_map, resize_map(teacher_map, student_map.shape[-2:])
    return resize_map(student_map, teacher_map.shape[-2:]), teacher_map


@dataclass(frozen=True)
class TermInputs:
    """What the terms of one student step read (the teacher's outputs carry no gradient)."""

    student: Any  #: the student's SegmentationOutput
    teacher: Any  #: the teacher's SegmentationOutput
    image: torch.Tensor  #: ``(N, 3, H, W)`` the network input (the critic's condition)
    distill: Any  #: the ``distill`` section (:class:`skdlib.train.config.DistillConfig`)
    critic: nn.Module | None = None
    adapter: nn.Module | None = None

    @property
    def align(self) -> str:
        """The grid maps of two sizes are compared on (``distill.align``)."""
        return getattr(self.distill, "align", "student")

    def logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher logits ``(N, K, h, w)`` in float32, on one grid
        (:func:`on_one_grid`)."""
        s, t = self.student.logits.float(), self.teacher.logits.float()
        return on_one_grid(s, t, self.align)

    def raw_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher ``features[distill.pair_feature]`` ``(N, C, h, w)`` in float32, each
        on its own network's grid."""
        name = self.distill.pair_feature
        if name not in self.student.features or name not in self.teacher.features:
            raise ValueError(
                f"distill.pair_feature {name!r} is missing: the student has "
                f"{sorted(self.student.features)}, the teacher {sorted(self.teacher.features)}"
            )
        return self.student.features[name].float(), self.teacher.features[name].float()

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`raw_features` on one grid (:func:`on_one_grid`)."""
        return on_one_grid(*self.raw_features(), self.align)

    def node_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`raw_features` as they are when the pair-wise node options
        (``distill.node_size``, ``node_fraction``) give both maps the same node grid, else on
        one grid (:func:`on_one_grid`): the pair-wise term needs equal node grids only."""
        s, t = self.raw_features()
        d = self.distill
        opts = {"node_size": d.node_size, "node_fraction": d.node_fraction}
        same = losses.node_grid(*s.shape[-2:], **opts) == losses.node_grid(*t.shape[-2:], **opts)
        return (s, t) if same else on_one_grid(s, t, self.align)


@dataclass(frozen=True)
class Term:
    """One distillation term of the student's objective."""

    name: str  #: key in the step's loss dict and in metrics.jsonl
    switch: str  #: the ``distill`` bool field that turns it on
    weight: str  #: the ``distill`` float field of its weight
    reads: tuple[str, ...]  #: a subset of :data:`READS`
    loss: Callable[[TermInputs], torch.Tensor]  #: the term's value (a scalar) for one batch
    doc: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.reads) - set(READS))
        if unknown:
            raise ValueError(f"term {self.name!r}: reads {unknown} are not among {READS}")


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """Temporarily stop gradients into ``module``'s parameters (the critic during the student
    step)."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _pixel(x: TermInputs) -> torch.Tensor:
    """Pixel-wise KL on the logits, both on the ``distill.align`` grid."""
    s, t = x.logits()
    return losses.pixelwise_kd_loss(s, t, temperature=x.distill.temperature)


def _pair(x: TermInputs) -> torch.Tensor:
    """Pair-wise similarity of the pair features: each map as it is when the two node grids
    agree (channels and map sizes may differ), else both on the ``distill.align`` grid first."""
    s, t = x.node_features()
    d = x.distill
    return losses.pairwise_similarity_loss(
        s,
        t,
        node_size=d.node_size,
        pool=d.pool,
        node_fraction=d.node_fraction,
        detach_norm=d.detach_norm,
    )


def _mimic(x: TermInputs) -> torch.Tensor:
    """MIMIC on the pair features, both on the ``distill.align`` grid, the student's channels
    mapped to the teacher's by the 1x1 adapter."""
    if x.adapter is None:
        raise ValueError("distill.mimic needs the 1x1 adapter module")
    s, t = x.features()
    return losses.mimic_loss(s, t, adapter=x.adapter)


def _attention(x: TermInputs) -> torch.Tensor:
    """Attention transfer on the pair features, both on the ``distill.align`` grid (channels
    may differ)."""
    return losses.attention_transfer_loss(*x.features())


def _local_pair(x: TermInputs) -> torch.Tensor:
    """Local pair-wise similarity on the pair features, both on the ``distill.align`` grid
    (channels may differ)."""
    s, t = x.features()
    return losses.local_pairwise_loss(s, t, node_size=x.distill.node_size, pool=x.distill.pool)


def _cwd(x: TermInputs) -> torch.Tensor:
    """Channel-wise distillation on the logits, both on the ``distill.align`` grid."""
    return losses.cwd_loss(*x.logits(), temperature=x.distill.cwd_temperature)


def _dist(x: TermInputs) -> torch.Tensor:
    """DIST on the logits, both on the ``distill.align`` grid."""
    d = x.distill
    return losses.dist_loss(
        *x.logits(), temperature=d.dist_temperature, beta=d.dist_beta, gamma=d.dist_gamma
    )


def _holistic(x: TermInputs) -> torch.Tensor:
    """``-E[D(Q_s | I)]`` with the critic fixed (the teacher half of ``-l_ho`` is constant); the
    student's logits on the ``distill.align`` grid, where the critic's step scores both
    networks' maps (:func:`skdlib.train.step.distill_step`)."""
    if x.critic is None:
        raise ValueError("distill.holistic needs the critic")
    with frozen(x.critic):
        seg_map = x.critic.prepare_input(x.logits()[0])
        score = x.critic(seg_map, x.image)
    return losses.holistic_generator_loss(score, kind=x.distill.gan_kind)


#: Every distillation term, in the order of the loss dict.
TERMS: tuple[Term, ...] = (
    Term("pixel", "pixelwise", "lambda_pi", ("logits",), _pixel, "pixel-wise KL (Eq. 1)"),
    Term("pair", "pairwise", "lambda_pa", ("features",), _pair, "pair-wise similarity (Eq. 2-3)"),
    Term("mimic", "mimic", "lambda_mimic", ("features", "adapter"), _mimic, "MIMIC"),
    Term("attention", "attention", "lambda_at", ("features",), _attention, "attention transfer"),
    Term("local_pair", "local_pairwise", "lambda_local", ("features",), _local_pair, "local PA"),
    Term("cwd", "cwd", "lambda_cwd", ("logits",), _cwd, "channel-wise distillation (CWD)"),
    Term("dist", "dist", "lambda_dist", ("logits",), _dist, "DIST"),
    Term("gen", "holistic", "lambda_ho", ("logits", "critic"), _holistic, "holistic (Eq. 4)"),
)


def _registry(terms: Sequence[Term] | None) -> Sequence[Term]:
    return TERMS if terms is None else terms


def active_terms(distill: Any, terms: Sequence[Term] | None = None) -> list[Term]:
    """The terms whose switch is on in ``distill`` (default registry: :data:`TERMS`)."""
    return [t for t in _registry(terms) if getattr(distill, t.switch, False)]


def term_weights(distill: Any) -> dict[str, float]:
    """``{term name: weight}`` of the active terms."""
    return {t.name: float(getattr(distill, t.weight)) for t in active_terms(distill)}


def _any_reads(distill: Any, what: str) -> bool:
    return any(what in t.reads for t in active_terms(distill))


def needs_teacher(distill: Any) -> bool:
    """Whether any enabled term needs the teacher's outputs."""
    return bool(active_terms(distill))


def needs_features(distill: Any) -> bool:
    """Whether an enabled term reads ``features[distill.pair_feature]``."""
    return _any_reads(distill, "features")


def needs_critic(distill: Any) -> bool:
    """Whether an enabled term needs the critic (and so the critic's own step)."""
    return _any_reads(distill, "critic")


def needs_adapter(distill: Any) -> bool:
    """Whether an enabled term needs the MIMIC adapter."""
    return _any_reads(distill, "adapter")
