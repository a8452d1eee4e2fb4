"""CPU inference time of the students: PyTorch eager against ONNX Runtime, side by side.

Setting: one image of the embedded data set's size (128 x 256), 19 classes, eval mode, no
gradient. Each network is exported once with ``skdlib.models.export_onnx`` and checked with
``check_onnx``; then PyTorch and ONNX Runtime run alternately (one pass each per round, so load
from other jobs hits both alike) for ``--repeats`` rounds after a warm-up. Prints the medians
and their ratio. Randomly initialised weights with BatchNorm statistics calibrated on random
images (speed does not depend on the values).

One thread by default: on a machine shared with other jobs, two OpenMP threads wait on each
other whenever one is descheduled and single passes vary by 10x or more.

    python bench/inference.py [--repeats 15] [--threads 1] [--size 128 256] [--json PATH]

``--json`` also writes the printed numbers to a JSON file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skdlib.models import build_model, check_onnx, export_onnx
from skdlib.train.runfolder import atomic_write_json, cpu_name

STUDENTS = [
    ("PSPNet-ResNet18(1.0)", "pspnet_resnet18", {}),
    ("PSPNet-ResNet18(0.5)", "pspnet_resnet18", {"width": 0.5}),
    ("MobileNetV2Plus", "mobilenetv2plus", {}),
    ("ESPNet-C", "espnet_c", {}),
    ("ESPNet", "espnet", {}),
]
NUM_CLASSES = 19


def _calibrate(model: nn.Module, size: tuple[int, int]) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, *size))
    return model.eval()


def time_pair(
    model: nn.Module, session: Any, image: torch.Tensor, repeats: int
) -> tuple[float, float]:
    """Median seconds of one PyTorch pass and one ONNX Runtime pass, run alternately."""
    feed = {"image": image.numpy()}
    torch_times, ort_times = [], []
    with torch.no_grad():
        model(image)
        session.run(None, feed)
        for _ in range(repeats):
            start = time.perf_counter()
            model(image)
            torch_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, feed)
            ort_times.append(time.perf_counter() - start)
    return statistics.median(torch_times), statistics.median(ort_times)


def measure(args: argparse.Namespace, options: Any, folder: Path) -> list[dict]:
    """One row per student: PyTorch and ONNX Runtime milliseconds, their ratio, the largest
    difference of the outputs."""
    import onnxruntime

    size = (args.size[0], args.size[1])
    rows = []
    for label, name, opts in STUDENTS:
        torch.manual_seed(0)
        model = _calibrate(build_model(name, NUM_CLASSES, **opts), size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = export_onnx(model, folder / f"{name}.onnx", size)
        image = torch.randn(1, 3, *size)
        diff = check_onnx(model, path, image)
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        t, o = time_pair(model, session, image, args.repeats)
        row = {"network": label, "torch_ms": 1e3 * t, "onnxruntime_ms": 1e3 * o}
        row.update(ratio=t / o, max_abs_diff=float(diff))
        rows.append(row)
        print(
            f"{label:24s} {row['torch_ms']:9.1f} {row['onnxruntime_ms']:10.1f} "
            f"{row['ratio']:10.2f} {row['max_abs_diff']:11.2e}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256))
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    import onnxruntime

    torch.set_num_threads(args.threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    # idle onnxruntime threads would otherwise spin and steal the cores from the next torch pass
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    load = os.getloadavg()[0]
    machine = (
        f"{cpu_name()} ({os.cpu_count()} CPUs, load average {load:.1f}), torch "
        f"{torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads"
    )
    setting = f"input 1x3x{args.size[0]}x{args.size[1]}, {args.repeats} alternating rounds"
    print(f"machine: {machine}, {setting}")
    print(
        f"{'network':24s} {'torch ms':>9s} {'onnxrt ms':>10s} {'torch/ort':>10s} "
        f"{'max |diff|':>11s}"
    )
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args, options, Path(folder))
    if args.json is not None:
        result = {"machine": machine, "load_average": load, "setting": setting}
        atomic_write_json(args.json, {**result, "cpu_count": os.cpu_count(), "networks": rows})


if __name__ == "__main__":
    main()
