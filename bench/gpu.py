"""Throughput and peak memory of a full SKD iteration against a plain student step, on a GPU.

The paper's setting (configs/paper.yaml): PSPNet-ResNet18 student, PSPNet-ResNet101 teacher, the
discriminator of the authors' code, 19 classes, batch 8 of 512x512 crops, random weights and
random images (the cost does not depend on the values):

* ``student``: one student update on the task loss alone (training the student without a
  teacher: no teacher in memory);
* ``skd``: one full iteration of :func:`skdlib.train.step.distill_step` (teacher forward, student
  update with the pixel-wise, pair-wise and holistic terms, critic update with its gradient
  penalty).

Each variant is built alone (so its peak memory is its own), warmed up, then timed over
``--iters`` iterations (CUDA synchronised around each); reported: median seconds per iteration,
images per second (batch / median), the ratio skd / student, and the peak CUDA memory allocated
(``torch.cuda.max_memory_allocated``). Mixed precision (``--amp fp16``: autocast with a
GradScaler, the default; ``bf16``; ``none``) and channels-last (default on) as ``train.amp`` and
``train.channels_last`` set them in training.

NOT MEASURED YET: the project's machines have no GPU. Without CUDA and with the default
``--device cuda`` the script says so and exits 0 (``make bench`` runs every script);
``--device cpu --size 128 128 --batch 2 --iters 2`` checks that it runs (slowly, no memory).

``--config configs/paper_released.yaml`` measures the authors' networks (``variant="authors"``:
the released teacher's and student's architecture) instead.

Usage: ``python bench/gpu.py [--device cuda] [--batch 8] [--size 512 512] [--amp fp16]
[--no-channels-last] [--warmup 5] [--iters 20] [--config PRESET] [--json PATH]``
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from skdlib.train.build import build_critic, build_network
from skdlib.train.config import ExperimentConfig, load_config
from skdlib.train.runfolder import atomic_write_json, environment_info
from skdlib.train.step import StepContext, distill_step, student_step

NUM_CLASSES = 19  # Cityscapes
REPO = Path(__file__).resolve().parents[1]
_AMP = {"fp16": torch.float16, "bf16": torch.bfloat16, "none": None}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8, help="paper: 8")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), help="paper: 512 512")
    parser.add_argument("--amp", choices=sorted(_AMP), default="fp16")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per variant")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "configs" / "paper.yaml",
        help="the networks' preset (default configs/paper.yaml; configs/paper_released.yaml: "
        "the authors' variants)",
    )
    return parser.parse_args()


def _context(cfg: ExperimentConfig, args: argparse.Namespace, device: torch.device, **off) -> Any:
    on_cuda = device.type == "cuda"
    dtype = _AMP[args.amp] if on_cuda else None
    scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    return StepContext(
        distill=dataclasses.replace(cfg.distill, **off),
        aux_weight=cfg.train.aux_weight,
        autocast_dtype=dtype,
        grad_scaler=scaler,
        critic_generator=torch.Generator(device=device).manual_seed(0),
    )


def make_variant(
    name: str, cfg: ExperimentConfig, args: argparse.Namespace, device: torch.device
) -> Callable[[], None]:
    """The networks, optimisers and batch of one variant; returns ``step()``."""
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last and device.type == "cuda" else None
    student = build_network(cfg, NUM_CLASSES, role="student")
    student = student.to(device, memory_format=fmt or torch.preserve_format).train()
    opt = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    image = torch.randn(args.batch, 3, *args.size, device=device)
    image = image.contiguous(memory_format=fmt or torch.contiguous_format)
    label = torch.randint(0, NUM_CLASSES, (args.batch, *args.size), device=device)
    if name == "student":
        ctx = _context(cfg, args, device, pixelwise=False, pairwise=False, holistic=False)
        return lambda: student_step(student, opt, image, label, ctx)
    teacher = build_network(cfg, NUM_CLASSES, role="teacher")
    teacher = teacher.to(device, memory_format=fmt or torch.preserve_format).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    critic = build_critic(cfg, NUM_CLASSES).to(device)
    critic_opt = torch.optim.SGD(critic.parameters(), lr=4e-4, momentum=0.9)
    ctx = _context(cfg, args, device)

    def step() -> None:
        distill_step(
            student=student,
            teacher=teacher,
            optimizer=opt,
            image=image,
            label=label,
            ctx=ctx,
            critic=critic,
            critic_optimizer=critic_opt,
        )

    return step


def measure(name: str, cfg: ExperimentConfig, args: argparse.Namespace, device: torch.device):
    """Median seconds per iteration and peak CUDA memory (None on other devices) of a variant."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = make_variant(name, cfg, args, device)
    times = []
    for i in range(args.warmup + args.iters):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    del step
    median = statistics.median(times)
    return {"s_per_iter": median, "images_per_s": args.batch / median, "peak_bytes": peak}


def report(result: dict) -> None:
    print(f"machine: {result['machine']}")
    print(f"size: {result['size']}")
    for name, row in result["variants"].items():
        peak = row["peak_bytes"]
        memory = f"{peak / 2**30:.2f} GiB peak" if peak is not None else "peak memory: CUDA only"
        print(
            f"  {name:<8} {row['s_per_iter'] * 1e3:8.1f} ms/iter  "
            f"{row['images_per_s']:7.1f} images/s  {memory}"
        )
    print(f"  skd / student time per iteration: {result['ratio_skd_student']:.2f}")


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here: not measured (run it on a GPU machine)")
        return 0
    cfg = load_config(args.config)
    variants = {name: measure(name, cfg, args, device) for name in ("student", "skd")}
    env = environment_info(device)
    result = {
        "machine": f"{env['gpu'] or env['cpu']}, torch {env['torch']}, cuda {env['cuda']}, "
        f"{platform.system()}, device {device}",
        "size": (
            f"batch {args.batch} x 3 x {args.size[0]} x {args.size[1]}, {NUM_CLASSES} classes; "
            f"student {cfg.model.student} ({cfg.model.student_variant}), teacher "
            f"{cfg.model.teacher} ({cfg.model.teacher_variant}), critic widths "
            f"{list(cfg.distill.disc_widths)}; amp {args.amp if device.type == 'cuda' else 'none'}"
            f", channels-last {args.channels_last and device.type == 'cuda'}"
        ),
        "variants": variants,
        "ratio_skd_student": variants["skd"]["s_per_iter"] / variants["student"]["s_per_iter"],
    }
    report(result)
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
