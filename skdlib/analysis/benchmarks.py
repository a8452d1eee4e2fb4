"""The benchmarks' results for the performance appendix.

Each script in ``bench/`` prints a text report and, with ``--json PATH``, writes the same numbers
(and its goals) to a JSON file; ``make bench`` keeps both in ``bench/results/<script>.{txt,json}``.
The functions here read those JSON files and lay them out as tables of text; nothing is
measured or parsed from the text reports.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "BENCHMARKS",
    "evaluate_table",
    "goal_verdict",
    "inference_table",
    "load_benchmark",
    "machine_note",
    "pairwise_table",
    "per_pixel_table",
    "step_table",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

BENCHMARKS = ("pairwise", "step", "evaluate", "inference")  # bench/<name>.py


def load_benchmark(results: PathLike, name: str) -> dict[str, Any] | None:
    """``<results>/<name>.json`` as a dict, or ``None`` when it is absent or unreadable (with a
    warning: run ``make bench``)."""
    path = Path(results) / f"{name}.json"
    if not path.is_file():
        logger.warning("no %s: run `make bench`", path)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("%s is not JSON: run `make bench`", path)
        return None
    return data if isinstance(data, dict) else None


def goal_verdict(value: float | None, goal: float, *, at_least: bool) -> str:
    """``"met"`` or ``"NOT met"`` for ``value >= goal`` (``at_least``) or ``value <= goal``;
    ``"not measured (run `make bench`)"`` without a value."""
    if value is None:
        return "not measured (run `make bench`)"
    return "met" if (value >= goal if at_least else value <= goal) else "NOT met"


def machine_note(results: Mapping[str, Mapping[str, Any] | None]) -> str:
    """One sentence on the machines the results come from: the load average while each script
    ran, against its CPU count (a load above the CPU count means other jobs were competing)."""
    parts, busy = [], False
    for name, result in results.items():
        if result is None or result.get("load_average") is None:
            continue
        load, cpus = float(result["load_average"]), result.get("cpu_count")
        busy = busy or (cpus is not None and load >= cpus)
        parts.append(f"`bench/{name}.py` {load:.1f}")
    if not parts:
        return "No benchmark result records its machine's load: run `make bench`."
    cpus = {r.get("cpu_count") for r in results.values() if r is not None}
    text = f"Load average when each script ran, on {'/'.join(map(str, sorted(cpus)))} CPUs: "
    text += ", ".join(parts) + "."
    if busy:
        text += (
            " The load exceeds the CPU count: other jobs were competing for the cores, so single "
            "timings are noisy; ratios and within-round differences vary less, but they describe "
            "this machine under this load."
        )
    return text


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame([[str(c) for c in row] for row in rows], columns=list(header))


def _x(value: float | None, digits: int = 1, unit: str = "x") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def pairwise_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Time and peak-memory ratio (authors / Gram) and the values' relative difference, each with
    its goal and verdict."""
    goals = result["goals"]
    rel, rel_goal = result["value_relative_difference"], goals["value_relative_difference"]
    rows = [
        ("time, authors / Gram", _x(result["time_ratio"]), f"≥ {goals['time_ratio']:g}x"),
        (
            "peak memory, authors / Gram",
            _x(result["memory_ratio"]),
            f"≥ {goals['memory_ratio']:g}x",
        ),
        ("relative difference of the values", f"{rel:.1e}", f"≤ {rel_goal:g}"),
    ]
    verdicts = [
        goal_verdict(result["time_ratio"], goals["time_ratio"], at_least=True),
        goal_verdict(result["memory_ratio"], goals["memory_ratio"], at_least=True),
        goal_verdict(rel, rel_goal, at_least=False),
    ]
    return _table(
        [(*row, v) for row, v in zip(rows, verdicts, strict=True)],
        (f"measured on {result['machine']}", "ratio", "goal", "verdict"),
    )


def _iqr(spread: Mapping[str, float], digits: int = 3, sign: str = "") -> str:
    return (
        f"{spread['median']:{sign}.{digits}f} ({spread['q1']:{sign}.{digits}f} to "
        f"{spread['q3']:{sign}.{digits}f})"
    )


def step_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Per variant the median seconds per iteration with the interquartile range over rounds; the
    per-round ratio full / baseline with its goal and verdict; per term its extra seconds over the
    baseline in the same round, and its share of the full iteration only where that extra time's
    interquartile range excludes zero ("within the noise" otherwise)."""
    rows = [(f"{name}, s per iteration", _iqr(v), "", "") for name, v in result["variants"].items()]
    ratio = result["ratio_full_baseline"]
    rows.append(("full / baseline", _iqr(ratio), f"≤ {result['goal']:g}", result["verdict"]))
    for term, t in result["terms"].items():
        share = (
            f"{100 * t['share']:.0f} % of the full iteration"
            if t["above_noise"]
            else "within the noise (its interquartile range includes 0)"
        )
        rows.append((f"extra time of {term}, s", _iqr(t["extra_s"], sign="+"), "", share))
    header = (f"measured on {result['machine']}", "median (interquartile range)", "goal", "verdict")
    return _table(rows, header)


def evaluate_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Both mIoU values and their difference, and the wall-time speed-ups of ours over the
    official tool (the first with its goal and verdict)."""
    miou, speed = result["miou"], result["speedups"]
    same = "met" if miou["abs_diff"] == 0 else f"differ by {miou['abs_diff']:.1e}"
    tensors = speed["tensors_vs_official_call"]["wall"]
    rows = [
        (
            "mIoU official / ours / difference",
            f"{miou['official']!r} / {miou['ours']!r} / {miou['abs_diff']:.1e}",
            "identical",
            same,
        ),
        (
            "speed-up, tensors vs official call (wall)",
            _x(tensors),
            f"≥ {result['goal']:g}x",
            goal_verdict(tensors, result["goal"], at_least=True),
        ),
        ("speed-up, evaluation only (wall)", _x(speed["evaluation_only"]["wall"]), "", ""),
        ("speed-up, both reading PNGs (wall)", _x(speed["both_reading_pngs"]["wall"]), "", ""),
    ]
    return _table(rows, (f"measured on {result['machine']}", "value", "goal", "verdict"))


def per_pixel_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Wall nanoseconds per pixel: the official tool's counting (its call minus the PNG reading),
    ours on tensors, and what ours would need for the goal's speed-up over the official call."""
    data, t = result["data"], result["timings"]
    pixels = data["num_images"] * data["height"] * data["width"]
    official = t["official_call"]["wall_s"]
    rows = [
        (
            "official, counting only (call minus PNG reading)",
            (official - t["png_reading"]["wall_s"]) * 1e9 / pixels,
        ),
        ("ours, tensors in memory", t["ours_tensors"]["wall_s"] * 1e9 / pixels),
        (
            f"ours as it would have to be for {result['goal']:g}x over the official call",
            official * 1e9 / pixels / result["goal"],
        ),
    ]
    return _table([(label, f"{ns:.1f}") for label, ns in rows], ("wall time per pixel", "ns"))


def inference_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Per network: PyTorch and ONNX Runtime milliseconds, their ratio, the outputs' largest
    difference."""
    rows = [
        (
            n["network"],
            f"{n['torch_ms']:.1f}",
            f"{n['onnxruntime_ms']:.1f}",
            f"{n['ratio']:.2f}x",
            f"{n['max_abs_diff']:.2e}",
        )
        for n in result["networks"]
    ]
    header = (
        f"network ({result['machine']}; {result['setting']})",
        "PyTorch ms",
        "ONNX Runtime ms",
        "PyTorch / ORT",
        "max abs difference",
    )
    return _table(rows, header)
