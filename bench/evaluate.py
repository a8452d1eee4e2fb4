"""Benchmark: skdlib.metrics against the official Cityscapes pixel-level evaluation, side by side.

Both evaluate the same full-size (1024x2048) Cityscapes-style label maps: blocky random scenes with
ignored regions as ground truth, and a perturbed copy (shifted boundaries, wrong blocks, salt noise)
as prediction. The official tool (``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``)
reads PNG files of labelIds, so the maps are written as PNGs first. Timed:

* official: its ``evaluateImgLists`` call (which reads the PNGs itself), and separately the PNG
  reading alone, to show how much of its time is file I/O;
* ours with I/O: read the same PNGs, map labelIds to trainIds (a uint8 lookup),
  ``ConfusionMeter.update`` per image, ``segmentation_scores``;
* ours on tensors: the maps already in memory as uint8 trainId tensors.

Timings are the best of several runs; torch runs on one thread by default (``--threads``), like the
official numpy path, which also keeps it steady on a shared machine. Both mIoU values are printed in
full and must agree to 1e-9. Usage::

    python bench/evaluate.py [--num-images 20] [--height 1024] [--width 2048] [--repeats 3]
        [--json PATH]

``--json`` also writes the printed numbers (and the goal) to a JSON file.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skdlib.metrics import ConfusionMeter, segmentation_scores
from skdlib.train.runfolder import atomic_write_json, cpu_name

NUM_CLASSES = 19
IGNORE = 255
GOAL = 50.0  # speed-up of the evaluation on tensors over the official call (wall time)


def cityscapes_tables() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(trainId -> labelId, labelId -> trainId) lookups of 256 entries and the 19 class names."""
    from cityscapesscripts.helpers.labels import labels

    train_to_label = np.zeros(256, dtype=np.uint8)  # unmapped (incl. 255) -> 0 'unlabeled', ignored
    label_to_train = np.full(256, IGNORE, dtype=np.uint8)
    names = [""] * NUM_CLASSES
    for label in labels:
        if 0 <= label.trainId < NUM_CLASSES and not label.ignoreInEval:
            train_to_label[label.trainId] = label.id
            label_to_train[label.id] = label.trainId
            names[label.trainId] = label.name
    return train_to_label, label_to_train, names


def make_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One (target, prediction) pair of uint8 trainId maps ``(H, W)`` that look like street
    scenes."""
    # Coarse cells of random classes, upsampled to blocks, plus random rectangles.
    cells_h, cells_w = 16, 32
    coarse = rng.integers(0, NUM_CLASSES, size=(cells_h, cells_w), dtype=np.uint8)  # (16, 32)
    target = np.repeat(
        np.repeat(coarse, height // cells_h, axis=0), width // cells_w, axis=1
    )  # (H, W)
    for _ in range(40):
        h, w = rng.integers(8, height // 4), rng.integers(8, width // 4)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        target[y : y + h, x : x + w] = rng.integers(0, NUM_CLASSES)
    # Ignored regions: the ego-vehicle strip at the bottom and a few void blobs.
    target[int(height * 0.85) :, :] = IGNORE
    for _ in range(6):
        h, w = rng.integers(8, height // 8), rng.integers(8, width // 8)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        target[y : y + h, x : x + w] = IGNORE
    # Prediction: the target with shifted boundaries, some wrong blocks and salt noise.
    pred = np.roll(target, shift=(int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
    pred = pred.copy()
    pred[pred == IGNORE] = 0  # a network predicts a class everywhere
    for _ in range(15):
        h, w = rng.integers(8, height // 6), rng.integers(8, width // 6)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        pred[y : y + h, x : x + w] = rng.integers(0, NUM_CLASSES)
    noise = rng.random((height, width)) < 0.02
    pred[noise] = rng.integers(0, NUM_CLASSES, size=int(noise.sum()), dtype=np.uint8)
    return target, pred


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[tuple[float, float], object]:
    """(fastest wall time, fastest process CPU time) of ``repeats`` calls, and the last result.

    CPU time counts only this process's own work, so it stays meaningful on a machine shared with
    other jobs, where wall time also counts waiting for a core.
    """
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return (min(walls), min(cpus)), result


def speedups(t: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    """Speed-ups of ours over the official tool, for wall time (index 0) and CPU time (1)."""
    ratios = {
        "tensors_vs_official_call": lambda i: t["official_call"][i] / t["ours_tensors"][i],
        "both_reading_pngs": lambda i: t["official_call"][i] / t["ours_reading_pngs"][i],
        "evaluation_only": lambda i: (
            (t["official_call"][i] - t["png_reading"][i]) / t["ours_tensors"][i]
        ),
    }
    return {name: {"wall": ratio(0), "cpu": ratio(1)} for name, ratio in ratios.items()}


def report(summary: dict) -> None:
    """Print what ``summary`` holds (the same numbers as the JSON)."""
    data, miou = summary["data"], summary["miou"]
    n = data["num_images"]
    print(f"machine   : {summary['machine']}")
    print(f"official  : {summary['official']}")
    print(
        f"data      : {n} label maps {data['height']}x{data['width']}, {data['classes']} classes, "
        f"{data['scenes']}"
    )
    print(
        f"mIoU      : official {miou['official']!r}  ours {miou['ours']!r}  |diff| "
        f"{miou['abs_diff']:.1e}  (ours from PNGs {miou['ours_from_pngs']!r})"
    )
    print(f"class IoU : max |diff| over 19 classes {summary['class_iou_max_abs_diff']:.1e}")
    print(f"{'best of runs':42s} {'wall s':>8s} {'ms/image':>9s} {'CPU s':>8s} {'ms/image':>9s}")
    labels = {
        "official_call": "official evaluateImgLists (reads PNGs)",
        "png_reading": "  of which PNG reading alone",
        "ours_reading_pngs": "ours, reading the same PNGs",
        "ours_tensors": "ours, tensors in memory",
    }
    for key, label in labels.items():
        wall, cpu = summary["timings"][key]["wall_s"], summary["timings"][key]["cpu_s"]
        print(f"{label:42s} {wall:8.3f} {1000 * wall / n:9.2f} {cpu:8.3f} {1000 * cpu / n:9.2f}")
    print(f"{'speed-up (wall, CPU)':42s}")
    names = {
        "tensors_vs_official_call": "evaluation on tensors vs official call",
        "both_reading_pngs": "both reading PNGs",
        "evaluation_only": "evaluation only (official minus reading)",
    }
    for key, label in names.items():
        ratio = summary["speedups"][key]
        print(f"  {label:40s} {ratio['wall']:7.1f}x {ratio['cpu']:7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=20)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timings are the best of this many runs"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (the official numpy path uses one core)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)

    workdir = Path(tempfile.mkdtemp(prefix="skd_eval_bench_"))
    # the official module reads it at import
    os.environ.setdefault("CITYSCAPES_DATASET", str(workdir))
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    train_to_label, label_to_train, names = cityscapes_tables()
    rng = np.random.default_rng(opts.seed)
    targets, preds, gt_files, pred_files = [], [], [], []
    for n in range(opts.num_images):
        target, pred = make_pair(rng, opts.height, opts.width)
        targets.append(torch.from_numpy(target))
        preds.append(torch.from_numpy(pred))
        gt_path = workdir / f"frame{n:03d}_gtFine_labelIds.png"
        pred_path = workdir / f"frame{n:03d}_pred_labelIds.png"
        Image.fromarray(train_to_label[target]).save(gt_path)
        Image.fromarray(train_to_label[pred]).save(pred_path)
        gt_files.append(str(gt_path))
        pred_files.append(str(pred_path))

    args = copy.copy(official.args)
    args.evalInstLevelScore = False  # needs instanceIds files; not part of the IoU
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.exportFile = str(workdir / "result.json")

    def run_official() -> dict:
        return official.evaluateImgLists(pred_files, gt_files, args)

    def read_only() -> int:
        total = 0
        for gt_path, pred_path in zip(gt_files, pred_files, strict=True):
            total += np.array(Image.open(pred_path)).size + np.array(Image.open(gt_path)).size
        return total

    def ours_with_io() -> dict:
        meter = ConfusionMeter(NUM_CLASSES, ignore_index=IGNORE)
        for gt_path, pred_path in zip(gt_files, pred_files, strict=True):
            gt = torch.from_numpy(
                label_to_train[np.array(Image.open(gt_path))]
            )  # (H, W) labelId -> trainId
            pr = torch.from_numpy(label_to_train[np.array(Image.open(pred_path))])  # (H, W) uint8
            meter.update(pr, gt)
        return meter.compute()

    def ours_tensors() -> dict:
        meter = ConfusionMeter(NUM_CLASSES, ignore_index=IGNORE)
        for gt, pr in zip(targets, preds, strict=True):
            meter.update(pr, gt)
        return segmentation_scores(meter.matrix)

    t_official, result = best_of(opts.repeats, run_official)
    t_read, _ = best_of(opts.repeats, read_only)
    t_ours_io, ours_io = best_of(opts.repeats, ours_with_io)
    t_ours, ours = best_of(3 * opts.repeats, ours_tensors)

    official_miou = float(result["averageScoreClasses"])
    official_iou = [result["classScores"][name] for name in names]
    max_class_diff = max(
        abs(a - b)
        for a, b in zip(ours["class_iou"], official_iou, strict=True)
        if not (np.isnan(a) and np.isnan(b))
    )
    timings = {
        "official_call": t_official,
        "png_reading": t_read,
        "ours_reading_pngs": t_ours_io,
        "ours_tensors": t_ours,
    }
    load = os.getloadavg()[0]  # one reading for the text and the JSON
    summary = {
        "machine": (
            f"{cpu_name()}, {os.cpu_count()} logical CPUs (load average {load:.1f}), "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, numpy "
            f"{np.__version__}, Python {platform.python_version()}"
        ),
        "load_average": load,
        "cpu_count": os.cpu_count(),
        "official": "cityscapesscripts evalPixelLevelSemanticLabeling, Cython extension "
        + ("used" if official.CSUPPORT else "not available (its numpy path)"),
        "data": {
            "num_images": opts.num_images,
            "height": opts.height,
            "width": opts.width,
            "classes": NUM_CLASSES,
            "scenes": "blocky scenes with ignored regions",
        },
        "miou": {
            "official": official_miou,
            "ours": float(ours["miou"]),
            "ours_from_pngs": float(ours_io["miou"]),
            "abs_diff": abs(official_miou - float(ours["miou"])),
        },
        "class_iou_max_abs_diff": float(max_class_diff),
        "timings": {k: {"wall_s": wall, "cpu_s": cpu} for k, (wall, cpu) in timings.items()},
        "speedups": speedups(timings),
        "goal": GOAL,
    }
    report(summary)
    if opts.json is not None:
        atomic_write_json(opts.json, summary)
    if abs(official_miou - ours["miou"]) > 1e-9 or max_class_diff > 1e-9:
        raise SystemExit("MISMATCH between the official evaluation and skdlib.metrics")
    for path in (*gt_files, *pred_files):
        Path(path).unlink()
    workdir.rmdir()


if __name__ == "__main__":
    main()
