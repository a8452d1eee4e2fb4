"""The registry of distillation terms: declarations, what follows from them, and a term added
through it alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import skdlib.train.terms as terms
from skdlib.data.generate import ensure_embedded
from skdlib.losses import cwd_loss, dist_loss, pixelwise_kd_loss, segmentation_task_loss
from skdlib.models import build_model
from skdlib.train.config import DistillConfig, load_config
from skdlib.train.loop import train
from skdlib.train.step import StepContext, student_losses

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 8
OFF = {"pixelwise": False, "pairwise": False, "holistic": False}


def test_every_declaration_names_real_config_fields() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(DistillConfig)}
    names = [t.name for t in terms.TERMS]
    assert len(set(names)) == len(names)
    for term in terms.TERMS:
        assert term.switch in fields and term.weight in fields, term.name
        assert set(term.reads) <= set(terms.READS)
    assert names[:2] == ["pixel", "pair"] and "cwd" in names and "dist" in names
    with pytest.raises(ValueError, match="reads"):
        terms.Term("x", "x", "lambda_x", ("probabilities",), lambda x: x.image.sum())


def test_what_a_config_needs_follows_from_the_registry() -> None:
    only_cwd = DistillConfig(**OFF, cwd=True)
    assert only_cwd.enabled and not only_cwd.uses_pair_feature
    assert terms.needs_teacher(only_cwd) and not terms.needs_critic(only_cwd)
    assert [t.name for t in terms.active_terms(only_cwd)] == ["cwd"]
    paper = DistillConfig()
    assert [t.name for t in terms.active_terms(paper)] == ["pixel", "pair", "gen"]
    assert terms.needs_critic(paper) and terms.needs_features(paper)
    assert not terms.needs_adapter(paper)
    assert terms.needs_adapter(DistillConfig(**OFF, mimic=True))
    assert not DistillConfig(**OFF).enabled
    assert terms.term_weights(DistillConfig(**OFF, dist=True, lambda_dist=2.5)) == {"dist": 2.5}
    with pytest.raises(ValueError, match=r"distill\.lambda_cwd: must be >= 0"):
        DistillConfig(lambda_cwd=-1.0)
    with pytest.raises(ValueError, match=r"distill\.cwd_temperature: must be > 0"):
        DistillConfig(cwd_temperature=0.0)


def _outputs(seed: int):
    torch.manual_seed(seed)
    student = build_model("pspnet_resnet18", NUM_CLASSES, width=0.25).train()
    teacher = build_model("pspnet_resnet18", NUM_CLASSES, width=0.25).eval()
    image = torch.randn(2, 3, 64, 64)
    label = torch.randint(0, NUM_CLASSES, (2, 64, 64))
    with torch.no_grad():
        t_out = teacher(image)
    return student(image), t_out, image, label, student, teacher


def test_the_objective_is_the_task_plus_every_enabled_weighted_term() -> None:
    s_out, t_out, image, label, student, teacher = _outputs(0)
    d = DistillConfig(pairwise=False, holistic=False, cwd=True, dist=True, lambda_dist=0.5)
    got = student_losses(s_out, t_out, label, image, StepContext(distill=d))
    assert list(got) == ["task", "pixel", "cwd", "dist", "total"]
    s, t = s_out.logits, t_out.logits
    task = segmentation_task_loss(s, label, aux_logits=s_out.aux_logits, aux_weight=0.4)
    pixel = pixelwise_kd_loss(s, t)
    cwd = cwd_loss(s, t, temperature=4.0)
    dist = dist_loss(s, t)
    torch.testing.assert_close(got["cwd"], cwd)
    torch.testing.assert_close(got["dist"], dist)
    torch.testing.assert_close(got["total"], task + 10.0 * pixel + 3.0 * cwd + 0.5 * dist)
    # Gradients reach the student only.
    got["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("terms")
    data = ensure_embedded(root / "data", height=128, width=128, num_train=4, num_val=2)
    torch.manual_seed(0)
    teacher = root / "teacher.pt"
    torch.save(build_model("pspnet_resnet18", NUM_CLASSES, width=0.5).state_dict(), teacher)
    return {"data": data, "teacher": teacher, "root": root}


def _toy(x: terms.TermInputs) -> torch.Tensor:
    """A toy term: the mean squared difference of the logits."""
    s, t = x.logits()
    return (s - t).pow(2).mean()


@dataclasses.dataclass(frozen=True)
class ToyDistill(DistillConfig):
    """The config fields of the toy term: its switch and weight."""

    toy: bool = True
    lambda_toy: float = 0.25


@pytest.mark.slow
def test_a_term_added_through_the_registry_alone_trains(tiny, monkeypatch) -> None:
    toy = terms.Term("toy", "toy", "lambda_toy", ("logits",), _toy, "toy term")
    monkeypatch.setattr(terms, "TERMS", (*terms.TERMS, toy))
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        [
            "data.name=embedded",
            f"data.root={tiny['data']}",
            "data.num_workers=0",
            "data.scale_range=[1.0,1.0]",
            "train.device=cpu",
            "train.max_iters=2",
            "train.log_every=1",
            "model.teacher_options.width=0.5",
            f"model.teacher_checkpoint={tiny['teacher']}",
            *(f"distill.{k}=false" for k in OFF),
        ],
    )
    distill = ToyDistill(
        **{f.name: getattr(cfg.distill, f.name) for f in dataclasses.fields(cfg.distill)}
    )
    cfg = dataclasses.replace(cfg, distill=distill)
    assert cfg.distill.enabled  # only the toy term is on: the teacher is built for it
    summary = train(cfg, tiny["root"] / "run", progress=False)
    assert summary["finished"]
    records = [json.loads(line) for line in (tiny["root"] / "run" / "metrics.jsonl").open()]
    steps = [r for r in records if "split" not in r]
    assert [r["iter"] for r in steps] == [1, 2]
    for record in steps:
        assert record["toy"] > 0
        assert record["total"] == pytest.approx(record["task"] + 0.25 * record["toy"], rel=1e-5)
