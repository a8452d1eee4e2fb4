"""The distillation step: every term reported, gradients only where they belong, non-finite
skips."""

from __future__ import annotations

import copy

import pytest
import torch

from skdlib.losses import pixelwise_kd_loss, segmentation_task_loss
from skdlib.models import build_model
from skdlib.models.discriminator import Discriminator
from skdlib.train.config import DistillConfig
from skdlib.train.step import StepContext, critic_step, distill_step, frozen, student_step

NUM_CLASSES = 4
ALL_OFF = {"pixelwise": False, "pairwise": False, "holistic": False}


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    student = build_model("pspnet_resnet18", NUM_CLASSES, width=0.5)
    teacher = build_model("pspnet_resnet18", NUM_CLASSES, width=0.5).eval()
    return student, teacher


@pytest.fixture()
def batch():
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 128, 128, generator=gen)
    label = torch.randint(0, NUM_CLASSES, (2, 128, 128), generator=gen)
    label[:, :4] = 255
    return image, label


def _critic() -> Discriminator:
    torch.manual_seed(2)
    return Discriminator(NUM_CLASSES, widths=(8, 8, 8, 8))


def test_full_step_reports_every_term_and_moves_student_and_critic(nets, batch):
    student, teacher = copy.deepcopy(nets[0]), nets[1]
    critic = _critic()
    image, label = batch
    ctx = StepContext(
        distill=DistillConfig(node_size=1, disc_widths=(8, 8, 8, 8)),
        critic_generator=torch.Generator().manual_seed(0),
    )
    opt_s = torch.optim.SGD(student.parameters(), lr=0.01)
    opt_d = torch.optim.SGD(critic.parameters(), lr=0.01)
    teacher_before, student_before, critic_before = (
        _params(teacher),
        _params(student),
        _params(critic),
    )
    terms = distill_step(
        student=student,
        teacher=teacher,
        optimizer=opt_s,
        image=image,
        label=label,
        ctx=ctx,
        critic=critic,
        critic_optimizer=opt_d,
    )
    expected = {
        "task",
        "pixel",
        "pair",
        "gen",
        "total",
        "critic",
        "gp",
        "d_total",
        "score_teacher",
        "score_student",
        "skipped_student",
        "skipped_critic",
    }
    assert expected <= set(terms)
    assert all(isinstance(v, float) for v in terms.values())
    d = ctx.distill
    recombined = (
        terms["task"]
        + d.lambda_pi * terms["pixel"]
        + d.lambda_pa * terms["pair"]
        + d.lambda_ho * terms["gen"]
    )
    assert terms["total"] == pytest.approx(recombined, rel=1e-5)
    assert terms["skipped_student"] == 0.0 and terms["skipped_critic"] == 0.0
    assert _same(teacher_before, _params(teacher)), "the teacher must never change"
    assert all(p.grad is None for p in teacher.parameters())
    assert not _same(student_before, _params(student))
    assert not _same(critic_before, _params(critic))


def test_student_step_leaves_critic_untouched(nets, batch):
    student, teacher = copy.deepcopy(nets[0]), nets[1]
    critic = _critic()
    image, label = batch
    ctx = StepContext(distill=DistillConfig(pixelwise=False, pairwise=False, holistic=True))
    opt_s = torch.optim.SGD(student.parameters(), lr=0.01)
    with torch.no_grad():
        teacher_out = teacher(image)
    terms, _ = student_step(
        student, opt_s, image, label, ctx, teacher_out=teacher_out, critic=critic
    )
    assert "gen" in terms
    assert all(p.grad is None for p in critic.parameters()), (
        "the student step must not train the critic"
    )
    assert all(p.requires_grad for p in critic.parameters()), "frozen() must restore requires_grad"


def test_baseline_step_equals_plain_cross_entropy(nets, batch):
    image, label = batch
    student_a, student_b = copy.deepcopy(nets[0]), copy.deepcopy(nets[0])
    ctx = StepContext(distill=DistillConfig(**ALL_OFF))
    opt_a = torch.optim.SGD(student_a.parameters(), lr=0.05)
    torch.manual_seed(5)
    terms = distill_step(
        student=student_a, teacher=None, optimizer=opt_a, image=image, label=label, ctx=ctx
    )
    assert set(terms) == {"task", "total", "skipped_student"}
    # The same update written out by hand.
    opt_b = torch.optim.SGD(student_b.parameters(), lr=0.05)
    torch.manual_seed(5)
    out = student_b(image)
    loss = segmentation_task_loss(out.logits, label, aux_logits=out.aux_logits, aux_weight=0.4)
    loss.backward()
    opt_b.step()
    assert terms["task"] == pytest.approx(loss.item(), rel=1e-6)
    for p_a, p_b in zip(student_a.parameters(), student_b.parameters(), strict=True):
        torch.testing.assert_close(p_a, p_b)


def test_pixel_term_matches_loss_function(nets, batch):
    student, teacher = copy.deepcopy(nets[0]), nets[1]
    image, label = batch
    ctx = StepContext(distill=DistillConfig(pixelwise=True, pairwise=False, holistic=False))
    student.eval()  # deterministic forward (no dropout) to recompute the term
    with torch.no_grad():
        expected = pixelwise_kd_loss(student(image).logits, teacher(image).logits).item()
    opt = torch.optim.SGD(student.parameters(), lr=0.0)
    terms, _ = student_step(student, opt, image, label, ctx, teacher_out=teacher(image))
    assert terms["pixel"] == pytest.approx(expected, rel=1e-5)


def test_nonfinite_loss_skips_the_update(nets, batch):
    student, teacher = copy.deepcopy(nets[0]), nets[1]
    critic = _critic()
    image, label = batch
    image = image.clone()
    image[0, 0, 0, 0] = float("nan")
    ctx = StepContext(distill=DistillConfig(node_size=1))
    opt_s = torch.optim.SGD(student.parameters(), lr=0.01)
    opt_d = torch.optim.SGD(critic.parameters(), lr=0.01)
    student_before, critic_before = _params(student), _params(critic)
    terms = distill_step(
        student=student,
        teacher=teacher,
        optimizer=opt_s,
        image=image,
        label=label,
        ctx=ctx,
        critic=critic,
        critic_optimizer=opt_d,
    )
    assert terms["skipped_student"] == 1.0 and terms["skipped_critic"] == 1.0
    assert _same(student_before, _params(student))
    assert _same(critic_before, _params(critic))


def test_critic_step_gives_no_gradient_to_maps():
    critic = _critic()
    teacher_logits = torch.randn(2, NUM_CLASSES, 16, 16)
    student_logits = torch.randn(2, NUM_CLASSES, 16, 16, requires_grad=True)
    image = torch.rand(2, 3, 128, 128)
    ctx = StepContext(distill=DistillConfig())
    terms = critic_step(
        critic,
        torch.optim.SGD(critic.parameters(), lr=0.01),
        teacher_logits,
        student_logits,
        image,
        ctx,
    )
    assert student_logits.grad is None
    assert terms["d_total"] == pytest.approx(terms["critic"] + 10.0 * terms["gp"], rel=1e-5)


def test_errors_are_clear(nets, batch):
    student, teacher = copy.deepcopy(nets[0]), copy.deepcopy(nets[1]).train()
    image, label = batch
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    ctx = StepContext(distill=DistillConfig(pairwise=False, holistic=False))
    with pytest.raises(ValueError, match="eval mode"):
        distill_step(
            student=student, teacher=teacher, optimizer=opt, image=image, label=label, ctx=ctx
        )
    with pytest.raises(ValueError, match="no teacher"):
        distill_step(
            student=student, teacher=None, optimizer=opt, image=image, label=label, ctx=ctx
        )
    ctx = StepContext(
        distill=DistillConfig(pixelwise=False, pairwise=True, holistic=False, pair_feature="nope")
    )
    with pytest.raises(ValueError, match="pair_feature 'nope'"):
        distill_step(
            student=student,
            teacher=teacher.eval(),
            optimizer=opt,
            image=image,
            label=label,
            ctx=ctx,
        )


def test_frozen_restores_flags():
    net = torch.nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert net.weight.requires_grad and not net.bias.requires_grad
