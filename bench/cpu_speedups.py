"""Two CPU speedups of a quick-size run, each measured side by side with what it replaced.

* ``resize``: the task loss's upsampling of the 1/8 logits to the labels' size, forward and
  backward, ``(8, 8, 8, 16) -> 64 x 128`` (batch 8, the embedded data's 8 classes):
  ``F.interpolate`` against :func:`skdlib.losses.task.bilinear_resize` (two matrix products);
* ``decode``: reading every item of a 100-scene embedded data set ``--epochs`` times (a run of
  1000 iterations at batch 8 reads each scene 80 times): decoding its PNG files each time against
  :meth:`~skdlib.data.base.SegmentationDataset.keep_decoded` (each file decoded once).

Interleaved rounds (each round runs both variants of a pair once, so a change of load hits both
alike); printed and written to ``--json``: the median over rounds of each variant and the median
of the per-round ratio old / new. One torch thread.

Usage: ``python bench/cpu_speedups.py [--rounds 7] [--epochs 5] [--json PATH]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from skdlib.constants import DECODED_CACHE_BYTES
from skdlib.data import build_dataset
from skdlib.data.generate import generate_embedded
from skdlib.losses.task import bilinear_resize
from skdlib.train.runfolder import atomic_write_json


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _resize_pair(repeats: int = 50) -> tuple[Callable[[], None], Callable[[], None]]:
    x = torch.randn(8, 8, 8, 16, requires_grad=True)
    size = (64, 128)

    def old() -> None:
        for _ in range(repeats):
            F.interpolate(x, size=size, mode="bilinear", align_corners=False).sum().backward()

    def new() -> None:
        for _ in range(repeats):
            bilinear_resize(x, size).sum().backward()

    return old, new


def _decode_pair(root: Path, epochs: int) -> tuple[Callable[[], None], Callable[[], None]]:
    options = {"height": 64, "width": 128, "num_train": 100, "num_val": 1}

    def read(keep: bool) -> None:
        dataset = build_dataset("embedded", root, "train", **options)
        if keep:
            dataset.keep_decoded(DECODED_CACHE_BYTES)
        for _ in range(epochs):
            for i in range(len(dataset)):
                dataset[i]

    return (lambda: read(False)), (lambda: read(True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "embedded"
        generate_embedded(root, height=64, width=128, num_train=100, num_val=1)
        pairs = {"resize": _resize_pair(), "decode": _decode_pair(root, args.epochs)}
        for name, (old, new) in pairs.items():
            old(), new()  # warm-up
            times = [(_timed(old), _timed(new)) for _ in range(args.rounds)]
            results[name] = {
                "old_s": statistics.median(t[0] for t in times),
                "new_s": statistics.median(t[1] for t in times),
                "ratio_old_over_new": statistics.median(t[0] / t[1] for t in times),
                "rounds": args.rounds,
            }
            r = results[name]
            print(
                f"{name}: old {1000 * r['old_s']:.1f} ms, new {1000 * r['new_s']:.1f} ms, "
                f"old / new = {r['ratio_old_over_new']:.2f} (median of {args.rounds} rounds)"
            )
    if args.json is not None:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
