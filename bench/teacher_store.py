"""Benchmark: what the teacher-output store saves a run, and what a large store costs.

Times are CPU seconds of the process (one torch thread: the work, not the shared machine's
load); the end-to-end pair also gives wall times.

Part 1, per run, side by side in one process with the students' one thread: the in-run cache runs
the teacher once per distinct (scene, flip) the run meets (counted exactly by replaying the run's
sample order and flips); a run reading a store reads every image it draws from the memory map
instead, after opening the store (its key: the checkpoint's SHA-256; the manifest and array
headers). Timed: one teacher forward of a batch of one (median of ``--repeats``), one store read,
the open; the saving per run is ``distinct x forward - draws x read - open``. Then one run of
``--iters`` iterations trained with the in-run cache and reading a store, twice each in turn (the
faster of two; the same weights, checked), to compare the estimate with a measured difference.
Sizes: the smoke profile's and the quick profile's (its kept teacher, its 100 labelled scenes,
and its 16x unlabeled pool).

Part 2, a large store: 3000 scenes x 2 flips of 8x16 logits (8 classes) and of 8x16 feature maps
of 64 to 256 channels: its size on disk, the time to open it and check it (header sizes; SHA-256 as
the pipeline verifies), and to read one run's draws (600 iterations x 8 images) from the warm page
cache, with the process's anonymous memory before and after (the maps' pages are file-backed and
shared by the runs reading them at once).

Usage::

    python bench/teacher_store.py [--iters 150] [--repeats 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from skdlib.data.generate import ensure_embedded
from skdlib.train.build import (
    build_dataset_for,
    build_teacher,
    build_unlabeled_dataset,
    torch_threads,
    train_augment,
)
from skdlib.train.config import load_config
from skdlib.train.runfolder import atomic_write_json, cpu_name
from skdlib.train.sampling import _EpochOrder, batch_params, batch_positions, derive_seed
from skdlib.train.step import StepContext, teacher_forward
from skdlib.train.teacher_store import (
    LABELLED_STREAM,
    UNLABELED_STREAM,
    TeacherStore,
    build_store,
    check_store,
    open_stores,
)
from skdlib.train.terms import needs_features

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _clock() -> float:
    """CPU seconds of this process: with one torch thread, the work done, whatever else the
    machine runs (wall times on a shared machine vary several-fold)."""
    return time.process_time()


def _rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def distinct_and_draws(cfg, stream: str, num_items: int, size: tuple[int, int]) -> tuple[int, int]:
    """(distinct (scene, flip), images drawn) of ``stream`` over a run of ``cfg``: its sample
    order and flips replayed as the loop draws them (one process)."""
    unl = stream == UNLABELED_STREAM
    batch = cfg.data.unlabeled.batch_size if unl else cfg.data.batch_size
    seed = derive_seed(cfg.train.seed, "unlabeled") if unl else cfg.train.seed
    order, augment, seen = _EpochOrder(num_items, seed), train_augment(cfg), set()
    for iteration in range(cfg.train.max_iters):
        positions = batch_positions(iteration, batch, 1, 0)
        indices = order.indices(positions)
        params = batch_params(
            augment, *size, positions=positions, seed=cfg.train.seed, stream=stream
        )
        seen.update((i, p["flip"]) for i, p in zip(indices, params, strict=True))
    return len(seen), cfg.train.max_iters * batch


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = _clock()
        fn()
        times.append(_clock() - start)
    return statistics.median(times)


def per_run(name: str, cfg, root: Path, repeats: int) -> dict:
    """Part 1's numbers for one run configuration ``cfg``."""
    feature = cfg.distill.pair_feature if needs_features(cfg.distill) else None
    stores, row = root / "stores", {"run": name, "feature": feature}
    datasets = {LABELLED_STREAM: build_dataset_for(cfg, cfg.data.train_split)}
    if cfg.data.unlabeled.enabled:
        datasets[UNLABELED_STREAM] = build_unlabeled_dataset(cfg)
    teacher = build_teacher(cfg, 8).to(memory_format=torch.channels_last)
    ctx, augment = StepContext(distill=cfg.distill), train_augment(cfg)
    item = datasets[LABELLED_STREAM][0]
    size = tuple(item["image"].shape[-2:])
    params = [{"size": size, "top": 0, "left": 0, "flip": False}]
    image = augment.apply(item["image"][None], item["label"][None], params)[0]
    image = image.contiguous(memory_format=torch.channels_last)
    row["forward_ms"] = 1e3 * _median_s(lambda: teacher_forward(teacher, image, ctx), repeats)
    distinct = draws = 0
    build_s = 0.0
    for stream, dataset in datasets.items():
        d, n = distinct_and_draws(cfg, stream, len(dataset), size)
        distinct, draws = distinct + d, draws + n
        start = _clock()
        build_store(cfg, stream, stores, features=[feature] if feature else [], device=CPU)
        build_s += _clock() - start
        row[f"scenes_{stream}"] = len(dataset)
    row.update(distinct=distinct, draws=draws, store_build_s=build_s)
    start = _clock()
    opened = open_stores(stores, cfg, device=CPU, threads=1, feature=feature)
    row["open_ms"] = 1e3 * (_clock() - start)
    store = opened[LABELLED_STREAM]
    rng = np.random.default_rng(0)
    indices, flips = rng.integers(0, store.count, 500), rng.integers(0, 2, 500)
    keys = [(int(i), bool(f)) for i, f in zip(indices, flips, strict=True)]
    start = _clock()
    for index, flip in keys:
        store.read(index, size, 0, 0, flip)
    row["read_ms"] = 1e3 * (_clock() - start) / len(keys)
    row["forwards_s"] = distinct * row["forward_ms"] / 1e3
    row["reads_s"] = draws * row["read_ms"] / 1e3
    row["saving_s"] = row["forwards_s"] - row["reads_s"] - row["open_ms"] / 1e3
    return row


def end_to_end(cfg, root: Path) -> dict:
    """One run trained twice: in-run cache, then reading the stores; wall times and equality."""
    from skdlib.train.loop import train

    times: dict[str, float] = {}
    weights = {}
    # Twice each, alternating (the first run of a process pays one-off costs): the faster of two.
    for name, store in 2 * (("cache", None), ("store", root / "stores")):
        start, wall = _clock(), time.perf_counter()
        train(cfg, root / name, progress=False, force=True, teacher_store=store)
        times[name] = min(times.get(name, float("inf")), _clock() - start)
        wall = time.perf_counter() - wall
        times[f"{name}_wall"] = min(times.get(f"{name}_wall", float("inf")), wall)
        weights[name] = torch.load(root / name / "checkpoints" / "final.pt")
    same = all(torch.equal(weights["cache"][k], weights["store"][k]) for k in weights["cache"])
    return {
        "iters": cfg.train.max_iters,
        **{f"{k}_s": v for k, v in times.items()},
        "bit_identical": same,
    }


def large_store(root: Path, channels: int, scenes: int = 3000) -> dict:
    """Part 2 for one feature width: a synthetic store in the store's layout."""
    rng = np.random.default_rng(0)
    folder = root / f"large{channels}"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, shape in (
        ("logits", (scenes, 2, 8, 8, 16)),
        ("feature-head", (scenes, 2, channels, 8, 16)),
    ):
        array = np.lib.format.open_memmap(
            folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape
        )
        for start in range(0, scenes, 500):  # in chunks: the writer's memory stays small
            array[start : start + 500] = rng.standard_normal(
                (min(500, scenes - start), *shape[1:]), dtype=np.float32
            )
        array.flush()
        del array
        sizes[name] = (folder / f"{name}.npy").stat().st_size
    arrays = {}
    for name, c in (("logits", 8), ("feature-head", channels)):
        shape = list(np.load(folder / f"{name}.npy", mmap_mode="r").shape)
        strides = [c * 128, 128, 16, 1]  # (1, C, 8, 16) contiguous
        arrays[name] = {"file": f"{name}.npy", "shape": shape, "computed_dtype": "float32"}
        arrays[name].update(dtype="float32", strides=strides)
    manifest = {"count": scenes, "image_size": [64, 128], "flips": [False, True]}
    manifest.update(features=["head"], arrays=arrays)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    anon_before = _rss_anon_mb()
    start = _clock()
    store = TeacherStore(folder, feature="head", device=CPU)
    open_s = _clock() - start
    start = _clock()
    check_store(folder, {}, features=["head"])  # another key: returns at once, a cheap look
    for spec in manifest["arrays"].values():
        np.load(folder / spec["file"], mmap_mode="r")
    header_s = _clock() - start
    import hashlib

    start = _clock()
    for spec in manifest["arrays"].values():
        digest = hashlib.sha256()
        with open(folder / spec["file"], "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    sha_s = _clock() - start
    keys = rng.integers(0, scenes, 600 * 8)
    flips = rng.integers(0, 2, 600 * 8)
    start = _clock()
    for index, flip in zip(keys, flips, strict=True):
        store.read(int(index), (64, 128), 0, 0, bool(flip))
    read_s = _clock() - start
    return {
        "channels": channels,
        "logits_mb": sizes["logits"] / 2**20,
        "feature_mb": sizes["feature-head"] / 2**20,
        "open_ms": 1e3 * open_s,
        "headers_ms": 1e3 * header_s,
        "sha256_s": sha_s,
        "reads": len(keys),
        "reads_s": read_s,
        "read_us": 1e6 * read_s / len(keys),
        "anon_mb_before": anon_before,
        "anon_mb_after": _rss_anon_mb(),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def configs(data: Path, iters: int) -> dict:
    """The run configurations of part 1 (the smoke and quick profiles' sizes)."""
    quick = REPO / "configs" / "quick.yaml"
    common = [
        f"data.root={data / 'quick'}",
        f"model.teacher_checkpoint={REPO / 'kept/quick/teacher/checkpoints/final.pt'}",
        "model.teacher_source=kept",
        "model.student_pretrained=null",
    ]
    pool = [
        "data.unlabeled.name=embedded",
        f"data.unlabeled.root={data / 'pool1600'}",
        "data.unlabeled.options={seed: 1, height: 64, width: 128, num_train: 1600, num_val: 1,"
        " small_object_scale: 2.0}",
        "data.unlabeled.batch_size=8",
    ]
    smoke = [
        f"data.root={data / 'smoke'}",
        "data.options={height: 128, width: 128, num_train: 8, num_val: 4}",
        "distill.node_size=2",
        "model.teacher_checkpoint=" + str(data / "smoke_teacher.pt"),
    ]
    pi = ["distill.pairwise=false", "distill.holistic=false"]
    return {
        "smoke pi (3 its)": load_config(REPO / "configs" / "smoke.yaml", [*smoke, *pi]),
        "quick pi (600 its)": load_config(quick, [*common, *pi]),
        "quick pi_pa_ho (600 its)": load_config(quick, common),
        "quick pi_unl16x (600 its)": load_config(quick, [*common, *pi, *pool]),
        "end-to-end": load_config(quick, [*common, *pi, f"train.max_iters={iters}"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=150, help="iterations of the end-to-end pair")
    parser.add_argument("--repeats", type=int, default=30, help="timed teacher forwards")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    results = {
        "cpu": cpu_name(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": 1,
    }
    with torch_threads(1), tempfile.TemporaryDirectory(prefix="skd-store-bench-") as tmp:
        root = Path(tmp)
        ensure_embedded(
            root / "data" / "quick",
            height=64,
            width=128,
            num_train=100,
            num_val=100,
            small_object_scale=2.0,
        )
        ensure_embedded(
            root / "data" / "pool1600",
            seed=1,
            height=64,
            width=128,
            num_train=1600,
            num_val=1,
            small_object_scale=2.0,
        )
        ensure_embedded(root / "data" / "smoke", height=128, width=128, num_train=8, num_val=4)
        from skdlib.models import build_model

        torch.manual_seed(0)
        torch.save(
            build_model("pspnet_resnet18", 8, width=0.5).state_dict(),
            root / "data" / "smoke_teacher.pt",
        )
        runs = configs(root / "data", args.iters)
        e2e = runs.pop("end-to-end")
        results["per_run"] = []
        for name, cfg in runs.items():
            row = per_run(name, cfg, root / name.split()[0] / name.split()[1], args.repeats)
            results["per_run"].append(row)
            print(
                f"{name:26s} forward {row['forward_ms']:6.2f} ms x {row['distinct']:5d} distinct"
                f" = {row['forwards_s']:6.2f} s | read {row['read_ms']:.3f} ms x"
                f" {row['draws']:5d} draws = {row['reads_s']:5.2f} s, open {row['open_ms']:5.1f} ms"
                f" | saved per run {row['saving_s']:6.2f} s (store built once in"
                f" {row['store_build_s']:.1f} s)"
            )
        results["end_to_end"] = end_to_end(e2e, root / "quick" / "pi")
        r = results["end_to_end"]
        print(
            f"quick pi, {r['iters']} its: in-run cache {r['cache_s']:.1f} s CPU"
            f" ({r['cache_wall_s']:.1f} s wall), store {r['store_s']:.1f} s CPU"
            f" ({r['store_wall_s']:.1f} s wall), bit-identical weights: {r['bit_identical']}"
        )
        results["large"] = [large_store(root / "large", c) for c in (64, 128, 256)]
        for r in results["large"]:
            print(
                f"3000 x 2 scenes, {r['channels']:3d}-channel 8x16 feature: logits"
                f" {r['logits_mb']:.1f} MB, feature {r['feature_mb']:.0f} MB; open"
                f" {r['open_ms']:.1f} ms, headers {r['headers_ms']:.1f} ms, SHA-256"
                f" {r['sha256_s']:.2f} s; {r['reads']} reads {r['reads_s']:.2f} s"
                f" ({r['read_us']:.0f} us each); anonymous memory {r['anon_mb_before']:.0f}"
                f" -> {r['anon_mb_after']:.0f} MB"
            )
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
