"""Pair-wise loss: the Gram-identity implementation against the authors' n x n formulation.

Setting: 64 x 128 nodes (the 1/8-resolution map of a 512 x 1024 crop), 512 channels for student
and teacher, batch 2, forward + backward. Each form runs in a fresh process (this script called
with ``--worker``), so its peak memory is its own: peak resident memory (``ru_maxrss``) after the
first forward + backward minus before it (inputs already allocated), or the CUDA allocator's
peak on a GPU. Timings: median of a few repeats after that first run. The values are compared
with ``detach_norm=True`` (the same gradient formulation as the authors' code); the gradients
are compared too.

    python bench/pairwise.py [--repeats 5] [--device cpu|cuda] [--json PATH]

``--json`` also writes the printed numbers (and the goals) to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from skdlib.losses import pairwise_similarity_loss
from skdlib.train.runfolder import atomic_write_json, cpu_name

BATCH, CHANNELS, HEIGHT, WIDTH = 2, 512, 64, 128
BUDGET_BYTES = 8 * 1024**3  # 8 GiB
GOALS = {"time_ratio": 10.0, "memory_ratio": 15.0, "value_relative_difference": 1e-5}


def authors_form(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The authors' formulation, re-written: features over detached norms, full n x n maps,
    squared difference divided by n^2 and by the batch size, summed."""

    def similarity(feat: torch.Tensor) -> torch.Tensor:
        norm = feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-8  # (B, 1, H, W)
        unit = (feat / norm.detach()).flatten(2)  # (B, C, H, W) -> (B, C, n)
        return torch.bmm(unit.transpose(1, 2), unit)  # (B, n, C) x (B, C, n) -> (B, n, n)

    n = teacher.shape[-2] * teacher.shape[-1]
    diff = similarity(teacher) - similarity(student)  # (B, n, n)
    return (diff.pow(2) / n**2 / teacher.shape[0]).sum()


def gram_form(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return pairwise_similarity_loss(student, teacher, detach_norm=True)


FORMS = {"gram": gram_form, "authors": authors_form}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker(form: str, repeats: int, device: str, grad_path: str) -> None:
    """Run one form in this process and print one JSON line."""
    fn = FORMS[form]
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    # Post-ReLU features, teacher correlated with the student (as after some training).
    base = torch.randn(BATCH, CHANNELS, HEIGHT, WIDTH, generator=g)
    student = torch.relu(base).to(dev).requires_grad_(True)
    teacher = torch.relu(base + torch.randn(base.shape, generator=g)).to(dev)
    del base
    # Warm up kernels and thread pools on a tiny input so their buffers do not count.
    tiny = torch.rand(1, 8, 4, 4, device=dev, requires_grad=True)
    fn(tiny, torch.rand(1, 8, 4, 4, device=dev)).backward()

    def step() -> float:
        student.grad = None
        loss = fn(student, teacher)
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = peak_rss_bytes()
    value = step()
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak_rss_bytes()) - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    torch.save(student.grad.cpu(), grad_path)
    result = {"value": value, "peak_bytes": peak, "times": times}
    if form == "gram":  # exact reference for both forms, after the measurements
        with torch.no_grad():
            ref = pairwise_similarity_loss(student.double(), teacher.double(), detach_norm=True)
        result["reference_float64"] = float(ref)
    print(json.dumps(result))


def run_worker(form: str, repeats: int, device: str, grad_path: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", form]
    cmd += ["--repeats", str(repeats), "--device", device, "--grad-path", grad_path]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def largest_nodes(quadratic: float, linear: float) -> int:
    """Largest node count ``n`` with ``quadratic * n^2 + linear * n <= BUDGET_BYTES``."""
    if quadratic == 0:
        return int(BUDGET_BYTES / linear)
    disc = linear * linear + 4 * quadratic * BUDGET_BYTES
    return int((-linear + math.sqrt(disc)) / (2 * quadratic))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=sorted(FORMS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grad-path", default="")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats, args.device, args.grad_path)
        return

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for form in ("gram", "authors"):
            results[form] = run_worker(form, args.repeats, args.device, f"{tmp}/{form}.pt")
        grad_gram = torch.load(f"{tmp}/gram.pt")
        grad_auth = torch.load(f"{tmp}/authors.pt")
    result = summarise(results, float((grad_gram - grad_auth).norm() / grad_auth.norm()), args)
    report(result)
    if args.json is not None:
        atomic_write_json(args.json, result)


def summarise(results: dict, rel_grad: float, args: argparse.Namespace) -> dict:
    """Everything the script prints, as one JSON-ready dict."""
    n = HEIGHT * WIDTH
    g, a = results["gram"], results["authors"]
    ref = g["reference_float64"]
    # Memory model from the measured deltas: the authors' peak grows as B * n^2 (the n x n maps and
    # their temporaries), the Gram form's as B * C * n (normalised copies of the features; the
    # C x C Gram matrices are a constant, folded in here, which overestimates). Both add the input
    # features themselves (student + teacher, float32, and the student's gradient).
    input_per_node = 3 * BATCH * CHANNELS * 4
    per_elem_a = a["peak_bytes"] / (BATCH * n * n)
    per_elem_g = g["peak_bytes"] / (BATCH * CHANNELS * n)
    forms = {
        name: {
            "value": r["value"],
            "median_s": statistics.median(r["times"]),
            "peak_mib": r["peak_bytes"] / 2**20,
            "times_s": r["times"],
            "relative_error_float64": abs(r["value"] - ref) / ref,
        }
        for name, r in (("gram", g), ("authors", a))
    }
    load = os.getloadavg()[0]  # one reading for the text and the JSON
    return {
        "machine": (
            f"{cpu_name()} ({os.cpu_count()} CPUs, load average {load:.1f}), "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"device {args.device}"
        ),
        "load_average": load,
        "cpu_count": os.cpu_count(),
        "setting": (
            f"batch {BATCH}, {CHANNELS} channels (student and teacher), {HEIGHT} x {WIDTH} = "
            f"{n} nodes, float32, forward + backward"
        ),
        "forms": forms,
        "reference_float64": ref,
        "value_relative_difference": abs(g["value"] - a["value"]) / abs(a["value"]),
        "gradient_relative_difference": rel_grad,
        "time_ratio": forms["authors"]["median_s"] / forms["gram"]["median_s"],
        "memory_ratio": a["peak_bytes"] / max(g["peak_bytes"], 1),
        "bytes_per_element": {"authors_per_b_n2": per_elem_a, "gram_per_b_c_n": per_elem_g},
        "largest_nodes_8gib": {
            "authors": largest_nodes(per_elem_a * BATCH, input_per_node),
            "gram": largest_nodes(0.0, per_elem_g * BATCH * CHANNELS + input_per_node),
        },
        "goals": GOALS,
    }


def _met(value: float, goal: float, *, at_least: bool) -> str:
    return "met" if (value >= goal if at_least else value <= goal) else "NOT met"


def report(result: dict) -> None:
    """Print what ``result`` holds (the same numbers as the JSON)."""
    print(f"machine: {result['machine']}")
    print(f"setting: {result['setting']}")
    print(
        f"{'form':<10}{'loss value':>20}{'median time (s)':>17}{'peak memory (MiB)':>19}"
        "   all times (s)"
    )
    for name, r in result["forms"].items():
        ts = ", ".join(f"{t:.3f}" for t in r["times_s"])
        print(f"{name:<10}{r['value']:>20.10g}{r['median_s']:>17.3f}{r['peak_mib']:>19.1f}   {ts}")
    forms, goals = result["forms"], result["goals"]
    print(
        f"float64 reference (Gram form in float64): {result['reference_float64']:.12g}; relative "
        f"error of the float32 results: gram {forms['gram']['relative_error_float64']:.2e}, "
        f"authors {forms['authors']['relative_error_float64']:.2e}"
    )
    rel, goal = result["value_relative_difference"], goals["value_relative_difference"]
    verdict = _met(rel, goal, at_least=False)
    print(f"value relative difference: {rel:.2e} (goal <= {goal:g}: {verdict})")
    print(f"gradient relative difference (L2): {result['gradient_relative_difference']:.2e}")
    for key, label in (("time_ratio", "time"), ("memory_ratio", "peak-memory")):
        value, goal = result[key], goals[key]
        print(
            f"{label} ratio authors / gram: {value:.1f}x (goal >= {goal:g}x: "
            f"{_met(value, goal, at_least=True)})"
        )
    per, largest = result["bytes_per_element"], result["largest_nodes_8gib"]
    print(
        f"measured bytes per element: authors {per['authors_per_b_n2']:.1f} per (B * n^2), "
        f"gram {per['gram_per_b_c_n']:.1f} per (B * C * n)"
    )
    n_a, n_g = largest["authors"], largest["gram"]
    print(
        f"largest node count in 8 GiB (batch {BATCH}, {CHANNELS} channels, incl. inputs and "
        f"gradient): authors {n_a} (~{math.isqrt(n_a // 2)} x {2 * math.isqrt(n_a // 2)}), gram "
        f"{n_g} (~{math.isqrt(n_g // 2)} x {2 * math.isqrt(n_g // 2)})"
    )


if __name__ == "__main__":
    main()
