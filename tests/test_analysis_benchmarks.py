"""skdlib.analysis.benchmarks: the performance appendix's tables from hand-made benchmark JSON."""

from __future__ import annotations

import json
from pathlib import Path

from skdlib.analysis.benchmarks import (
    evaluate_table,
    inference_table,
    load_benchmark,
    machine_note,
    pairwise_table,
    per_pixel_table,
    step_table,
)


def _spread(median: float, q1: float, q3: float) -> dict:
    return {"min": q1 - 1, "q1": q1, "median": median, "q3": q3, "max": q3 + 1}


def test_load_benchmark_reads_json_and_tolerates_absence(tmp_path: Path) -> None:
    (tmp_path / "step.json").write_text(json.dumps({"goal": 1.35}))
    (tmp_path / "bad.json").write_text("{not json")
    assert load_benchmark(tmp_path, "step") == {"goal": 1.35}
    assert load_benchmark(tmp_path, "bad") is None
    assert load_benchmark(tmp_path, "absent") is None


def test_machine_note_says_when_the_machine_was_busy() -> None:
    quiet = machine_note({"step": {"load_average": 0.5, "cpu_count": 2}, "inference": None})
    assert quiet == "Load average when each script ran, on 2 CPUs: `bench/step.py` 0.5."
    busy = machine_note(
        {
            "step": {"load_average": 3.04, "cpu_count": 2},
            "pairwise": {"load_average": 1.0, "cpu_count": 2},
        }
    )
    assert busy.startswith(
        "Load average when each script ran, on 2 CPUs: `bench/step.py` 3.0, "
        "`bench/pairwise.py` 1.0."
    )
    assert "other jobs were competing" in busy
    assert "run `make bench`" in machine_note({"step": None})


def test_pairwise_table() -> None:
    result = {
        "machine": "M",
        "time_ratio": 53.14,
        "memory_ratio": 12.0,
        "value_relative_difference": 0.0,
        "goals": {"time_ratio": 10, "memory_ratio": 15, "value_relative_difference": 1e-5},
    }
    assert pairwise_table(result).values.tolist() == [
        ["time, authors / Gram", "53.1x"],
        ["peak memory, authors / Gram", "12.0x"],
        ["relative difference of the values", "0.0e+00"],
    ]


def test_step_table_shows_shares_only_above_the_noise() -> None:
    result = {
        "machine": "M",
        "goal": 1.35,
        "verdict": "within the noise of the goal",
        "variants": {"baseline": _spread(2.0, 1.9, 2.2), "full": _spread(2.6, 2.5, 2.9)},
        "ratio_full_baseline": _spread(1.3, 1.25, 1.4),
        "terms": {
            "pixel": {"extra_s": _spread(0.05, -0.1, 0.2), "above_noise": False, "share": None},
            "pair": {"extra_s": _spread(0.5, 0.3, 0.6), "above_noise": True, "share": 0.5 / 2.6},
        },
    }
    frame = step_table(result)
    assert list(frame.columns) == ["measured on M", "median (interquartile range)", "share"]
    assert frame.values.tolist() == [
        ["baseline, s per iteration", "2.000 (1.900 to 2.200)", ""],
        ["full, s per iteration", "2.600 (2.500 to 2.900)", ""],
        ["full / baseline", "1.300 (1.250 to 1.400)", ""],
        [
            "extra time of pixel, s",
            "+0.050 (-0.100 to +0.200)",
            "within the noise (its interquartile range includes 0)",
        ],
        ["extra time of pair, s", "+0.500 (+0.300 to +0.600)", "19 % of the full iteration"],
    ]


def _evaluate() -> dict:
    return {
        "machine": "M",
        "goal": 50,
        "miou": {"official": 0.5, "ours": 0.5, "ours_from_pngs": 0.5, "abs_diff": 0.0},
        "speedups": {
            "tensors_vs_official_call": {"wall": 23.9, "cpu": 17.2},
            "both_reading_pngs": {"wall": 3.2, "cpu": 2.3},
            "evaluation_only": {"wall": 20.3, "cpu": 13.2},
        },
        # 2 images of 1000 x 1000 pixels: 2e6 pixels
        "data": {"num_images": 2, "height": 1000, "width": 1000},
        "timings": {
            "official_call": {"wall_s": 0.2, "cpu_s": 0.1},
            "png_reading": {"wall_s": 0.05, "cpu_s": 0.02},
            "ours_tensors": {"wall_s": 0.004, "cpu_s": 0.004},
        },
    }


def test_evaluate_table() -> None:
    assert evaluate_table(_evaluate()).values.tolist() == [
        ["mIoU, official tool", "0.500000"],
        ["mIoU, ours", "0.500000"],
        ["difference", "0.0e+00"],
        ["speed-up, tensors vs official call (wall)", "23.9x"],
        ["speed-up, evaluation only (wall)", "20.3x"],
        ["speed-up, both reading PNGs (wall)", "3.2x"],
    ]


def test_per_pixel_table_by_hand() -> None:
    # (0.2 - 0.05) s / 2e6 px = 75 ns; 0.2 s / 2e6 px = 100 ns; 0.004 s / 2e6 px = 2 ns
    assert per_pixel_table(_evaluate()).values.tolist() == [
        ["official, counting only (call minus PNG reading)", "75.0"],
        ["official, the whole call (PNG reading included)", "100.0"],
        ["ours, tensors in memory", "2.0"],
    ]


def test_inference_table() -> None:
    result = {
        "machine": "M",
        "setting": "input 1x3x128x256",
        "networks": [
            {
                "network": "ESPNet",
                "torch_ms": 26.04,
                "onnxruntime_ms": 21.2,
                "ratio": 1.2283,
                "max_abs_diff": 5.13e-06,
            }
        ],
    }
    frame = inference_table(result)
    assert frame.columns[0] == "network (M; input 1x3x128x256)"
    assert frame.values.tolist() == [["ESPNet", "26.0", "21.2", "1.23x", "5.13e-06"]]


def test_run_costs_by_hand(tmp_path: Path) -> None:
    from skdlib.analysis.benchmarks import run_costs
    from skdlib.analysis.runs import RunsTree

    times = {"a/seed0": 30.0, "a/seed1": 90.0, "b/seed0": 60.0, "b/seed1": None}
    for run_dir, seconds in times.items():
        (tmp_path / run_dir).mkdir(parents=True)
        summary = {"finished": seconds is not None, "miou": 0.5, "wall_time_s": seconds}
        (tmp_path / run_dir / "summary.json").write_text(json.dumps(summary))
    experiments = [
        {"name": n, "groups": [g], "runs": [{"seed": s, "run_dir": f"{n}/seed{s}"} for s in (0, 1)]}
        for n, g in (("a", "ablation"), ("b", "variants"))
    ]
    tree = RunsTree(tmp_path, {"profile": "p", "experiments": experiments}, tmp_path)
    assert run_costs(tree).values.tolist() == [
        ["ablation", 2, 2.0, 60.0, 90.0],
        ["variants", 1, 1.0, 60.0, 60.0],  # the unfinished seed is not counted
        ["all", 3, 3.0, 60.0, 90.0],
    ]
