"""Cost of one distillation iteration against a plain student step, at the quick preset's size.

Measured side by side in one process (interleaved rounds, median per variant), with random
weights: batch 8, 128x256 crops, half-width PSPNet-ResNet18 student, full-width PSPNet-ResNet18
teacher, the quick preset's discriminator (widths 32-64-128-256), every loss from
``skdlib.train.step.distill_step``.

* ``baseline``: teacher forward + student step on the task loss only (what any distillation run
  pays at least);
* ``+pixel``, ``+pair``, ``+holistic`` (generator term + critic step): one term added;
* ``full``: all three terms (the paper's iteration).

Printed: the machine, each variant's median seconds, ``full / baseline`` (goal <= 1.35) and each
term's share of the full iteration, ``(t(+term) - t(baseline)) / t(full)``.

Usage: ``python bench/step.py [--rounds 3] [--device cpu] [--batch 8] [--size 128 256]``
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

from skdlib.models import build_model
from skdlib.models.discriminator import Discriminator
from skdlib.train.config import load_config
from skdlib.train.runfolder import environment_info
from skdlib.train.step import StepContext, distill_step, student_step, teacher_forward

NUM_CLASSES = 8  # the embedded data set's classes


def _variants(distill) -> dict[str, object]:
    off = {"pixelwise": False, "pairwise": False, "holistic": False}
    return {
        "baseline": dataclasses.replace(distill, **off),
        "+pixel": dataclasses.replace(distill, **{**off, "pixelwise": True}),
        "+pair": dataclasses.replace(distill, **{**off, "pairwise": True}),
        "+holistic": dataclasses.replace(distill, **{**off, "holistic": True}),
        "full": dataclasses.replace(distill, pixelwise=True, pairwise=True, holistic=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds per variant (after one warm-up)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed rounds first (CPU kernels and allocator warm up)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256))
    args = parser.parse_args()

    cfg = load_config("configs/quick.yaml")
    device = torch.device(args.device)
    torch.manual_seed(0)
    student = (
        build_model(cfg.model.student, NUM_CLASSES, **dict(cfg.model.student_options))
        .to(device)
        .train()
    )
    teacher = (
        build_model(cfg.model.teacher, NUM_CLASSES, **dict(cfg.model.teacher_options))
        .to(device)
        .eval()
    )
    d = cfg.distill
    critic = Discriminator(
        NUM_CLASSES,
        widths=tuple(d.disc_widths),
        use_image=d.disc_use_image,
        input=d.disc_input,
        input_batchnorm=d.disc_input_batchnorm,
    ).to(device)
    opt_s = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    opt_d = torch.optim.SGD(critic.parameters(), lr=1e-5, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(args.batch, 3, *args.size, generator=generator).to(device)
    label = torch.randint(0, NUM_CLASSES, (args.batch, *args.size), generator=generator).to(device)
    contexts = {
        name: StepContext(
            distill=distill,
            aux_weight=cfg.train.aux_weight,
            critic_generator=torch.Generator(device=device).manual_seed(0),
        )
        for name, distill in _variants(d).items()
    }

    def run(name: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        if name == "baseline":  # distill_step skips the teacher when no term needs it: run it here
            teacher_forward(teacher, image, contexts[name])
            student_step(student, opt_s, image, label, contexts[name])
        else:
            distill_step(
                student=student,
                teacher=teacher,
                optimizer=opt_s,
                image=image,
                label=label,
                ctx=contexts[name],
                critic=critic,
                critic_optimizer=opt_d,
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in contexts:
            run(name)
    times: dict[str, list[float]] = {name: [] for name in contexts}
    for _ in range(args.rounds):
        for name in contexts:  # interleaved: load changes hit every variant alike
            times[name].append(run(name))
    median = {name: statistics.median(values) for name, values in times.items()}

    env = environment_info(device)
    print(
        f"machine: {env['cpu']} ({env['cpu_count']} CPUs, {env['threads']} torch threads), "
        f"gpu {env['gpu']}, {platform.system()}, torch {env['torch']}, device {device}"
    )
    print(
        f"size: batch {args.batch} x 3 x {args.size[0]} x {args.size[1]}; student "
        f"{cfg.model.student} {dict(cfg.model.student_options)}, teacher {cfg.model.teacher} "
        f"{dict(cfg.model.teacher_options)}, critic widths {list(d.disc_widths)}; {args.rounds} "
        "rounds, median"
    )
    for name, value in median.items():
        print(
            f"  {name:<10} {value:8.3f} s   (rounds: {', '.join(f'{v:.3f}' for v in times[name])})"
        )
    ratio = median["full"] / median["baseline"]
    print(
        f"full / baseline (teacher forward + plain student step): {ratio:.3f}  (goal <= 1.35: "
        f"{'met' if ratio <= 1.35 else 'NOT met'})"
    )
    for term in ("+pixel", "+pair", "+holistic"):
        share = (median[term] - median["baseline"]) / median["full"]
        print(f"  share of the full iteration, {term[1:]:<8}: {100 * share:6.1f} %")
    print(
        "  share of the full iteration, baseline: "
        f"{100 * median['baseline'] / median['full']:6.1f} %"
    )


if __name__ == "__main__":
    main()
