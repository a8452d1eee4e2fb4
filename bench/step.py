"""Cost of one distillation iteration against a plain student step, at the quick preset's size.

Measured side by side in one process (interleaved rounds: every round runs each variant once, so
a change of load hits every variant alike), with random weights: batch 8, 128x256 crops, the quick
preset's student, teacher and discriminator, every loss from ``skdlib.train.step.distill_step``.

* ``baseline``: teacher forward + student step on the task loss only (what any distillation run
  pays at least);
* ``+pixel``, ``+pair``, ``+holistic`` (generator term + critic step): one term added;
* ``full``: all three terms (the paper's iteration).

Rounds are repeated until every variant's median is stable (it moves by less than ``--tol`` when
the last ``--window`` rounds are left out) or ``--max-rounds`` is reached. Printed (and written
to ``--json``): each variant's median, interquartile range, min and max over the rounds; the
ratio ``full / baseline`` per round (median and interquartile range; goal <= 1.35); and for each
term the extra time per round over the baseline in the same round (``t(+term) - t(baseline)``,
median and interquartile range). A term's share of the full iteration, ``median extra /
median(full)``, is given only where the extra time's interquartile range excludes zero;
otherwise the term's cost is within the noise of this machine.

One torch thread by default: on a machine shared with other jobs, two OpenMP threads wait on each
other whenever one is descheduled, and single iterations then vary by 10x or more.

Usage: ``python bench/step.py [--min-rounds 6] [--max-rounds 30] [--threads 1] [--device cpu]
[--json PATH]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from skdlib.train.build import build_critic, build_network
from skdlib.train.config import ExperimentConfig, load_config
from skdlib.train.runfolder import atomic_write_json, environment_info
from skdlib.train.step import StepContext, distill_step, student_step, teacher_forward

NUM_CLASSES = 8  # the embedded data set's classes
GOAL = 1.35  # full / baseline
TERMS = ("+pixel", "+pair", "+holistic")


def _variants(distill) -> dict[str, object]:
    off = {"pixelwise": False, "pairwise": False, "holistic": False}
    return {
        "baseline": dataclasses.replace(distill, **off),
        "+pixel": dataclasses.replace(distill, **{**off, "pixelwise": True}),
        "+pair": dataclasses.replace(distill, **{**off, "pairwise": True}),
        "+holistic": dataclasses.replace(distill, **{**off, "holistic": True}),
        "full": dataclasses.replace(distill, pixelwise=True, pairwise=True, holistic=True),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """min, first quartile, median, third quartile, max (quartiles inclusive of the extremes)."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"min": min(values), "q1": q1, "median": median, "q3": q3, "max": max(values)}


def is_stable(times: dict[str, list[float]], window: int, tol: float) -> bool:
    """True when leaving out the last ``window`` rounds moves no variant's median by ``tol``
    (relative) or more."""
    for values in times.values():
        full, earlier = statistics.median(values), statistics.median(values[:-window])
        if abs(full - earlier) >= tol * full:
            return False
    return True


def measure(
    run: Callable[[str], float], names: Sequence[str], args: argparse.Namespace
) -> tuple[dict[str, list[float]], bool]:
    """Interleaved rounds until the medians are stable or ``args.max_rounds``; the times per
    variant and whether they became stable."""
    for _ in range(args.warmup):
        for name in names:
            run(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    while True:
        for name in names:
            times[name].append(run(name))
        rounds = len(times[names[0]])
        if rounds >= max(args.min_rounds, args.window + 2) and is_stable(
            times, args.window, args.tol
        ):
            return times, True
        if rounds >= args.max_rounds:
            return times, False


def summarise(times: dict[str, list[float]]) -> dict:
    """Spreads of the times, of the per-round ratio full / baseline and of each term's per-round
    extra time over the baseline, with the share where that extra time is above the noise."""
    base = times["baseline"]
    ratio = spread([f / b for f, b in zip(times["full"], base, strict=True)])
    full_median = statistics.median(times["full"])
    terms = {}
    for term in TERMS:
        extra = spread([t - b for t, b in zip(times[term], base, strict=True)])
        resolved = extra["q1"] > 0 or extra["q3"] < 0  # the interquartile range excludes zero
        terms[term[1:]] = {
            "extra_s": extra,
            "above_noise": resolved,
            "share": extra["median"] / full_median if resolved else None,
        }
    return {
        "variants": {
            name: {**spread(values), "rounds_s": values} for name, values in times.items()
        },
        "ratio_full_baseline": ratio,
        "baseline_share": statistics.median(base) / full_median,
        "terms": terms,
    }


def verdict(ratio: dict[str, float]) -> str:
    """``met`` when the ratio's interquartile range lies at or below the goal, ``NOT met`` when
    above it, else within the noise of the goal."""
    if ratio["q3"] <= GOAL:
        return "met"
    if ratio["q1"] > GOAL:
        return "NOT met"
    return "within the noise of the goal"


def report(result: dict) -> None:
    """Print what ``result`` holds (the same numbers as the JSON)."""
    print(f"machine: {result['machine']}")
    print(f"size: {result['size']}")
    stable = "medians stable" if result["stable"] else "medians NOT stable within the cap"
    print(f"rounds: {result['rounds']} interleaved ({stable}; tolerance {result['tol']:.0%})")
    print(f"  {'variant':<10} {'median s':>9} {'q1 s':>8} {'q3 s':>8} {'min s':>8} {'max s':>8}")
    for name, v in result["variants"].items():
        print(
            f"  {name:<10} {v['median']:9.3f} {v['q1']:8.3f} {v['q3']:8.3f} "
            f"{v['min']:8.3f} {v['max']:8.3f}"
        )
    r = result["ratio_full_baseline"]
    print(
        f"full / baseline per round: median {r['median']:.3f}, interquartile {r['q1']:.3f}-"
        f"{r['q3']:.3f} (goal <= {GOAL}: {result['verdict']})"
    )
    for term, t in result["terms"].items():
        e = t["extra_s"]
        share = (
            f"share of the full iteration {100 * t['share']:5.1f} %"
            if t["above_noise"]
            else "within the noise (interquartile range includes 0)"
        )
        print(
            f"  extra time of {term:<8}: median {e['median']:+.3f} s, interquartile "
            f"{e['q1']:+.3f} to {e['q3']:+.3f} s: {share}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-rounds", type=int, default=6, help="timed rounds at least")
    parser.add_argument("--max-rounds", type=int, default=30, help="timed rounds at most")
    parser.add_argument(
        "--window", type=int, default=3, help="stable: leaving out this many last rounds ..."
    )
    parser.add_argument("--tol", type=float, default=0.02, help="... moves no median this much")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed rounds first (kernels, allocator)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256))
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    return parser.parse_args()


def make_runner(
    args: argparse.Namespace, cfg: ExperimentConfig, device: torch.device
) -> Callable[[str], float]:
    """Networks, optimisers and one batch at the quick preset's size; returns ``run(variant)``,
    which times one iteration of that variant in seconds."""
    torch.manual_seed(0)
    d = cfg.distill
    student = build_network(cfg, NUM_CLASSES, role="student")
    teacher = build_network(cfg, NUM_CLASSES, role="teacher")
    student, teacher = student.to(device).train(), teacher.to(device).eval()
    critic = build_critic(cfg, NUM_CLASSES).to(device)
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

    return run


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("configs/quick.yaml")
    device = torch.device(args.device)
    run = make_runner(args, cfg, device)
    times, stable = measure(run, list(_variants(cfg.distill)), args)
    env = environment_info(device)
    load = os.getloadavg()[0]  # one reading for the text and the JSON
    result = {
        "machine": (
            f"{env['cpu']} ({env['cpu_count']} CPUs, load average {load:.1f}, "
            f"{env['threads']} torch threads), gpu {env['gpu']}, {platform.system()}, torch "
            f"{env['torch']}, device {device}"
        ),
        "load_average": load,
        "cpu_count": env["cpu_count"],
        "size": (
            f"batch {args.batch} x 3 x {args.size[0]} x {args.size[1]}; student "
            f"{cfg.model.student} {dict(cfg.model.student_options)}, teacher {cfg.model.teacher} "
            f"{dict(cfg.model.teacher_options)}, critic widths {list(cfg.distill.disc_widths)}"
        ),
        "rounds": len(times["full"]),
        "stable": stable,
        "tol": args.tol,
        "goal": GOAL,
        **summarise(times),
    }
    result["verdict"] = verdict(result["ratio_full_baseline"])
    report(result)
    if args.json is not None:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
