"""The benchmarks' results for the performance appendix.

Each script in ``bench/`` prints a text report and, with ``--json PATH``, writes the same numbers
(and its goals) to a JSON file; ``make bench`` keeps both in ``bench/results/<script>.{txt,json}``.
The functions here read those JSON files and lay them out as tables of text; nothing is
measured or parsed from the text reports. :func:`run_costs` adds what a runs tree's runs cost.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from skdlib.analysis.runs import RunsTree

__all__ = [
    "BENCHMARKS",
    "evaluate_table",
    "inference_table",
    "load_benchmark",
    "machine_note",
    "pairwise_table",
    "per_pixel_table",
    "run_costs",
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
    """Time and peak-memory ratio (authors / Gram) and the values' relative difference."""
    rows = [
        ("time, authors / Gram", _x(result["time_ratio"])),
        ("peak memory, authors / Gram", _x(result["memory_ratio"])),
        ("relative difference of the values", f"{result['value_relative_difference']:.1e}"),
    ]
    return _table(rows, (f"measured on {result['machine']}", "value"))


def _iqr(spread: Mapping[str, float], digits: int = 3, sign: str = "") -> str:
    return (
        f"{spread['median']:{sign}.{digits}f} ({spread['q1']:{sign}.{digits}f} to "
        f"{spread['q3']:{sign}.{digits}f})"
    )


def step_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Per variant the median seconds per iteration with the interquartile range over rounds; the
    per-round ratio full / baseline; per term its extra seconds over the baseline in the same
    round, and its share of the full iteration only where that extra time's interquartile range
    excludes zero ("within the noise" otherwise)."""
    rows = [(f"{name}, s per iteration", _iqr(v), "") for name, v in result["variants"].items()]
    rows.append(("full / baseline", _iqr(result["ratio_full_baseline"]), ""))
    for term, t in result["terms"].items():
        share = (
            f"{100 * t['share']:.0f} % of the full iteration"
            if t["above_noise"]
            else "within the noise (its interquartile range includes 0)"
        )
        rows.append((f"extra time of {term}, s", _iqr(t["extra_s"], sign="+"), share))
    header = (f"measured on {result['machine']}", "median (interquartile range)", "share")
    return _table(rows, header)


def evaluate_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Both mIoU values (six decimals) and their difference, and the wall-time speed-ups of ours
    over the official tool."""
    miou, speed = result["miou"], result["speedups"]
    tensors = speed["tensors_vs_official_call"]["wall"]
    rows = [
        ("mIoU, official tool", f"{miou['official']:.6f}"),
        ("mIoU, ours", f"{miou['ours']:.6f}"),
        ("difference", f"{miou['abs_diff']:.1e}"),
        (
            "speed-up, tensors vs official call (wall)",
            _x(tensors),
        ),
        ("speed-up, evaluation only (wall)", _x(speed["evaluation_only"]["wall"])),
        ("speed-up, both reading PNGs (wall)", _x(speed["both_reading_pngs"]["wall"])),
    ]
    return _table(rows, (f"measured on {result['machine']}", "value"))


def per_pixel_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """Wall nanoseconds per pixel: the official tool's counting (its call minus the PNG reading)
    and ours on tensors."""
    data, t = result["data"], result["timings"]
    pixels = data["num_images"] * data["height"] * data["width"]
    official = t["official_call"]["wall_s"]
    rows = [
        (
            "official, counting only (call minus PNG reading)",
            (official - t["png_reading"]["wall_s"]) * 1e9 / pixels,
        ),
        ("official, the whole call (PNG reading included)", official * 1e9 / pixels),
        ("ours, tensors in memory", t["ours_tensors"]["wall_s"] * 1e9 / pixels),
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


def run_costs(tree: RunsTree) -> pd.DataFrame:
    """What the finished runs of a tree cost, per group of experiments (each experiment in its
    first group): ``group, runs, total (min), mean per run (s), slowest run (s)``, from the
    training loop's wall time in each run's summary, and a last ``all`` row."""
    from skdlib.analysis.runs import collect_runs

    runs = collect_runs(tree)
    runs = runs[runs["status"] == "finished"] if len(runs) else runs
    first = {e["name"]: (e.get("groups") or ["-"])[0] for e in tree.experiments()}
    rows = []
    parts = [(g, runs[runs["experiment"].map(first) == g]) for g in dict.fromkeys(first.values())]
    for group, mine in [*parts, ("all", runs)]:
        if not len(mine):
            continue
        seconds = mine["wall_time_s"]
        rows.append(
            {
                "group": group,
                "runs": len(mine),
                "total (min)": round(seconds.sum() / 60, 1),
                "mean per run (s)": round(seconds.mean(), 1),
                "slowest run (s)": round(seconds.max(), 1),
            }
        )
    columns = ["group", "runs", "total (min)", "mean per run (s)", "slowest run (s)"]
    return pd.DataFrame(rows, columns=columns)
