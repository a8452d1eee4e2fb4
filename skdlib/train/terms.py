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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from skdlib import losses

__all__ = [
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
    "term_weights",
]

#: What a term may read: the logits, ``features[distill.pair_feature]``, the critic, the adapter.
READS = ("logits", "features", "critic", "adapter")


@dataclass(frozen=True)
class TermInputs:
    """What the terms of one student step read (the teacher's outputs carry no gradient)."""

    student: Any  #: the student's SegmentationOutput
    teacher: Any  #: the teacher's SegmentationOutput
    image: torch.Tensor  #: ``(N, 3, H, W)`` the network input (the critic's condition)
    distill: Any  #: the ``distill`` section (:class:`skdlib.train.config.DistillConfig`)
    critic: nn.Module | None = None
    adapter: nn.Module | None = None

    def logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher logits ``(N, K, h, w)`` in float32."""
        return self.student.logits.float(), self.teacher.logits.float()

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher ``features[distill.pair_feature]`` ``(N, C, h, w)`` in float32."""
        name = self.distill.pair_feature
        if name not in self.student.features or name not in self.teacher.features:
            raise ValueError(
                f"distill.pair_feature {name!r} is missing: the student has "
                f"{sorted(self.student.features)}, the teacher {sorted(self.teacher.features)}"
            )
        return self.student.features[name].float(), self.teacher.features[name].float()


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
    s, t = x.logits()
    return losses.pixelwise_kd_loss(s, t, temperature=x.distill.temperature)


def _pair(x: TermInputs) -> torch.Tensor:
    s, t = x.features()
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
    if x.adapter is None:
        raise ValueError("distill.mimic needs the 1x1 adapter module")
    s, t = x.features()
    return losses.mimic_loss(s, t, adapter=x.adapter)


def _attention(x: TermInputs) -> torch.Tensor:
    return losses.attention_transfer_loss(*x.features())


def _local_pair(x: TermInputs) -> torch.Tensor:
    s, t = x.features()
    return losses.local_pairwise_loss(s, t, node_size=x.distill.node_size, pool=x.distill.pool)


def _cwd(x: TermInputs) -> torch.Tensor:
    return losses.cwd_loss(*x.logits(), temperature=x.distill.cwd_temperature)


def _dist(x: TermInputs) -> torch.Tensor:
    d = x.distill
    return losses.dist_loss(
        *x.logits(), temperature=d.dist_temperature, beta=d.dist_beta, gamma=d.dist_gamma
    )


def _holistic(x: TermInputs) -> torch.Tensor:
    """``-E[D(Q_s | I)]`` with the critic fixed (the teacher half of ``-l_ho`` is constant)."""
    if x.critic is None:
        raise ValueError("distill.holistic needs the critic")
    with frozen(x.critic):
        seg_map = x.critic.prepare_input(x.student.logits.float())
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
