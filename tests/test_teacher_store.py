"""The teacher-output store: its key tells teachers, data sets and computations apart (and
nothing else), what it holds is what the in-run cache computes, bit for bit and laid out the
same, a torn store is detected and built again, a store built by one process is reused by
another, and runs reading a store equal runs computing their teacher's outputs (also resumed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from interrupt import train_until_interrupted

from skdlib.data.generate import ensure_embedded
from skdlib.experiments.runs import RunSpec
from skdlib.experiments.stores import ensure_stores, store_requests
from skdlib.models import build_model
from skdlib.train.build import build_dataset_for, build_teacher, torch_threads, train_augment
from skdlib.train.config import apply_overrides, load_config, save_config
from skdlib.train.loop import train
from skdlib.train.step import StepContext, teacher_forward
from skdlib.train.teacher_cache import TeacherCache, augmentation_key
from skdlib.train.teacher_store import (
    LABELLED_STREAM,
    MANIFEST_NAME,
    UNLABELED_STREAM,
    StoreSet,
    StoreUnsupported,
    TeacherStore,
    build_store,
    check_store,
    store_folder,
    store_key,
)

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Tiny embedded data (4 train / 2 val at 64x64), an unlabeled pool of 3 scenes and a random
    quarter-width teacher's weights."""
    root = tmp_path_factory.mktemp("store")
    data = ensure_embedded(root / "data", height=64, width=64, num_train=4, num_val=2)
    pool = ensure_embedded(root / "pool", seed=1, height=64, width=64, num_train=3, num_val=1)
    torch.manual_seed(0)
    teacher = root / "teacher.pt"
    torch.save(build_model("pspnet_resnet18", 8, width=0.25).state_dict(), teacher)
    return {"root": root, "data": data, "pool": pool, "teacher": teacher}


def _config(assets: dict[str, Path], *extra: str):
    """smoke.yaml on the tiny data: whole 64x64 scenes, flips, the teacher cache, an unlabeled
    pool, the pair-wise term (the teacher's ``head`` features)."""
    return load_config(
        REPO / "configs" / "smoke.yaml",
        [
            f"data.root={assets['data']}",
            "data.num_workers=0",
            "data.crop_size=[64,64]",
            "data.batch_size=2",
            "model.teacher_options.width=0.25",
            f"model.teacher_checkpoint={assets['teacher']}",
            "model.teacher_source=0123abcd",
            "distill.holistic=false",  # the critic needs larger maps than 64 px scenes give
            "data.unlabeled.name=embedded",
            f"data.unlabeled.root={assets['pool']}",
            "data.unlabeled.options={seed: 1, height: 64, width: 64, num_train: 3, num_val: 1}",
            "data.unlabeled.batch_size=2",
            "train.max_iters=4",  # 8 draws of each stream: as many as the stores hold, or more
            *extra,
        ],
    )


def _student(cfg, run_dir: Path, key: str = "pi_pa/seed0") -> RunSpec:
    return RunSpec(key, key.split("/")[0], 0, REPO, (), run_dir, cfg)


def _digest(assets, *extra: str, stream: str = LABELLED_STREAM, threads: int = 1) -> str:
    key = store_key(_config(assets, *extra), stream, device=CPU, threads=threads)
    return store_folder("/", key).name


# --------------------------------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------------------------------
def test_the_key_tells_teachers_data_and_computations_apart(assets, tmp_path) -> None:
    base = _digest(assets)
    assert base.startswith("data-train-") and base == _digest(assets)
    # Another teacher: other weights under the same path, another source hash, another width.
    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    torch.save(build_model("pspnet_resnet18", 8, width=0.25).state_dict(), other)
    differ = [
        _digest(assets, f"model.teacher_checkpoint={other}"),
        _digest(assets, "model.teacher_source=fedc9876"),
        # Another data set, another subset of it, another augmentation, another computation.
        _digest(assets, "data.options={num_train: 4}"),
        _digest(assets, "data.train_limit=2"),
        _digest(assets, "data.flip=false"),
        _digest(assets, "data.crop_size=[64,96]"),
        _digest(assets, "train.channels_last=false"),
        _digest(assets, threads=2),
        _digest(assets, stream=UNLABELED_STREAM),
    ]
    assert len({base, *differ}) == len(differ) + 1
    # What changes no teacher output makes the same store: every student setting, the seed,
    # the batch sizes, the terms (the feature maps kept are no part of the key).
    same = [
        "train.seed=3",
        "train.lr=0.5",
        "data.batch_size=4",
        "data.unlabeled.batch_size=4",
        "distill.pairwise=false",
        "distill.lambda_pi=1.0",
        "model.student_options.width=0.125",
    ]
    assert {_digest(assets, extra) for extra in same} == {base}
    assert _digest(assets, "data.unlabeled.batch_size=4", stream=UNLABELED_STREAM) == _digest(
        assets, stream=UNLABELED_STREAM
    )


def test_augmentations_without_finite_crops_and_random_teachers_are_refused(assets) -> None:
    refused = {
        "random scaling": ["train.teacher_cache=false", "data.scale_range=[0.5,2.0]"],
        "random teacher": ["model.teacher_checkpoint=null"],
        "no teacher": ["distill.pixelwise=false", "distill.pairwise=false"],
    }
    messages = {}
    for name, extra in refused.items():
        with pytest.raises(StoreUnsupported) as info:
            store_key(_config(assets, *extra), LABELLED_STREAM, device=CPU, threads=1)
        messages[name] = str(info.value)
    assert "scale_range [0.5, 2.0]" in messages["random scaling"]
    assert "teacher_checkpoint is null" in messages["random teacher"]
    # Crops smaller than the scene lie at random offsets: the build says so, before any output.
    with pytest.raises(StoreUnsupported, match=r"scene 0 is 64x64, larger than data.crop_size"):
        build_store(_config(assets, "data.crop_size=[32,64]"), LABELLED_STREAM, assets["root"])
    assert not list(assets["root"].glob(".data-train-*"))  # its temporary folder removed


# --------------------------------------------------------------------------------------------------
# What a store holds
# --------------------------------------------------------------------------------------------------
def test_stored_outputs_are_the_cache_s_bit_for_bit(assets, tmp_path) -> None:
    cfg = _config(assets)
    with torch_threads(1):
        folder = build_store(cfg, LABELLED_STREAM, tmp_path, features=["head"])
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        assert (manifest["count"], manifest["image_size"], manifest["flips"]) == (
            4,
            [64, 64],
            [False, True],
        )
        assert manifest["arrays"]["logits"]["shape"] == [4, 2, 8, 8, 8]  # (N, F, K, h, w)
        assert manifest["arrays"]["feature-head"]["shape"][:2] == [4, 2]
        assert check_store(folder, manifest["key"], features=["head"], verify=True) is None
        # The in-run cache computing the same scenes (channels-last, as the loop gives them),
        # and one reading the store: the same tensors, laid out the same.
        teacher = build_teacher(cfg, 8).to(memory_format=torch.channels_last)
        ctx = StepContext(distill=cfg.distill)
        store = StoreSet({LABELLED_STREAM: TeacherStore(folder, feature="head", device=CPU)})
        caches = [
            TeacherCache(teacher, lambda t, x: teacher_forward(t, x, ctx), feature="head", store=s)
            for s in (None, store)
        ]
        dataset, augment = build_dataset_for(cfg, "train"), train_augment(cfg)
        for index in (0, 3):
            for flip in (False, True):
                params = {"size": (64, 64), "top": 0, "left": 0, "flip": flip}
                item = dataset[index]
                image, _ = augment.apply(item["image"][None], item["label"][None], [params])
                image = image.contiguous(memory_format=torch.channels_last)
                key = augmentation_key(LABELLED_STREAM, index, params)
                computed, read = (cache(image, [key]) for cache in caches)
                pairs = [
                    (read.logits, computed.logits),
                    (read.features["head"], computed.features["head"]),
                    (store(key)[0], caches[0]._logits[key]),  # before stacking
                ]
                for a, b in pairs:
                    assert torch.equal(a, b) and a.stride() == b.stride() and a.dtype == b.dtype
        assert (caches[0].misses, caches[1].misses, caches[1].reads) == (4, 0, 4)
        # What it does not hold: a crop at an offset, another size, an index past its end.
        assert store((LABELLED_STREAM, 0, (64, 64), 1, 0, False)) is None
        assert store((LABELLED_STREAM, 0, (32, 64), 0, 0, False)) is None
        assert store((LABELLED_STREAM, 4, (64, 64), 0, 0, False)) is None
        assert store((UNLABELED_STREAM, 0, (64, 64), 0, 0, False)) is None


def test_a_torn_store_is_detected_and_built_again(assets, tmp_path) -> None:
    cfg = _config(assets)
    spec = _student(cfg, tmp_path / "run")
    root = tmp_path / "stores"
    with torch_threads(1):
        done = ensure_stores([spec], root, threads=1)
    assert sorted(done.values()) == ["built", "built"]  # the labelled set and the pool
    folder = Path(next(f for f in done if "/data-" in f))
    key = json.loads((folder / MANIFEST_NAME).read_text())["key"]
    logits = folder / "logits.npy"
    size = logits.stat().st_size
    with open(logits, "r+b") as handle:  # a store cut short while it was written
        handle.truncate(size - 100)
    assert "torn store" in check_store(folder, key)
    with torch_threads(1):
        assert ensure_stores([spec], root, threads=1)[str(folder)] == "built"
    assert logits.stat().st_size == size and check_store(folder, key, verify=True) is None
    # Bytes changed in place: only the SHA-256 sees it (the pipeline verifies it).
    array = np.load(logits, mmap_mode="r+")
    array[0, 0, 0, 0, 0] += 1.0
    array.flush()
    del array
    assert check_store(folder, key) is None
    assert "SHA-256" in check_store(folder, key, verify=True)
    (folder / MANIFEST_NAME).unlink()  # no manifest: a builder that died before its rename
    assert "no readable manifest.json" in check_store(folder, key)
    # A builder's leftovers (its temporary folder) are removed under the lock.
    stale = folder.with_name(f".{folder.name}.tmp-dead")
    stale.mkdir()
    with torch_threads(1):
        assert ensure_stores([spec], root, threads=1)[str(folder)] == "built"
    assert not stale.exists() and check_store(folder, key, verify=True) is None
    assert "another key" in check_store(folder, {**key, "format": 0})


def test_a_change_of_teacher_or_data_builds_another_store(assets, tmp_path) -> None:
    root = tmp_path / "stores"
    first = _config(assets, "distill.pairwise=false")  # logits only
    with torch_threads(1):
        built = ensure_stores([_student(first, tmp_path / "a")], root, threads=1)
        assert ensure_stores([_student(first, tmp_path / "a")], root, threads=1) == dict.fromkeys(
            built, "reused"
        )
        # A run that reads the teacher's features: the store is built again with them.
        with_features = _config(assets)
        again = ensure_stores([_student(with_features, tmp_path / "b")], root, threads=1)
        assert again == dict.fromkeys(built, "built")
        manifest = json.loads((Path(next(iter(again))) / MANIFEST_NAME).read_text())
        assert manifest["features"] == ["head"]
        # Another teacher (new weights under the same file) or another data set: new stores.
        torch.manual_seed(2)
        other = tmp_path / "retrained.pt"
        torch.save(build_model("pspnet_resnet18", 8, width=0.25).state_dict(), other)
        retrained = _config(assets, f"model.teacher_checkpoint={other}")
        subset = _config(assets, "data.train_limit=2")  # the same pool: its store is reused
        specs = [_student(retrained, tmp_path / "c"), _student(subset, tmp_path / "d")]
        more = ensure_stores(specs, root, threads=1)
    pool = next(folder for folder in built if "/pool-" in folder)
    assert more == {**dict.fromkeys(set(more) - {pool}, "built"), pool: "reused"}
    assert len(more) == 4 and len([p for p in root.iterdir() if p.is_dir()]) == 5


def test_a_store_is_built_only_when_its_runs_draw_as_many_images(assets, tmp_path) -> None:
    # One 3-iteration run draws 6 labelled images, fewer than the 8 (scene, flip) pairs of the
    # labelled set: not built; two such runs of another seed draw 12: built.
    short = _config(assets, "train.max_iters=3", "data.unlabeled.batch_size=0")  # no pool
    root = tmp_path / "stores"
    with torch_threads(1):
        (done,) = ensure_stores([_student(short, tmp_path / "a")], root, threads=1).values()
        assert done == "not built: 6 draws < 8 pairs"
        other = apply_overrides(short, ["train.seed=1"])
        specs = [_student(short, tmp_path / "a"), _student(other, tmp_path / "b", "pi/seed1")]
        assert list(ensure_stores(specs, root, threads=1).values()) == ["built"]
        # Once built, a store is read by any run, however short.
        assert list(ensure_stores(specs[:1], root, threads=1).values()) == ["reused"]


def test_runs_without_a_teacher_cache_or_teacher_get_no_store(assets, tmp_path) -> None:
    specs = [
        _student(_config(assets, "train.teacher_cache=false"), tmp_path / "a"),
        _student(
            _config(assets, "distill.pixelwise=false", "distill.pairwise=false"), tmp_path / "b"
        ),
        RunSpec("teacher", None, None, REPO, (), tmp_path / "t", _config(assets), teacher="t"),
    ]
    assert store_requests(specs, tmp_path, threads=1) == []


# --------------------------------------------------------------------------------------------------
# Runs reading a store
# --------------------------------------------------------------------------------------------------
_BUILD_IN_ANOTHER_PROCESS = """
import json, sys
from skdlib.experiments.runs import RunSpec
from skdlib.experiments.stores import ensure_stores
from skdlib.train.config import load_config
cfg = load_config(sys.argv[1])
spec = RunSpec("pi_pa/seed0", "pi_pa", 0, sys.argv[2], (), sys.argv[2], cfg)
print(json.dumps(ensure_stores([spec], sys.argv[2], threads=1)))
"""


@pytest.mark.slow
def test_runs_reading_a_store_equal_runs_computing_their_teacher_outputs(
    assets, tmp_path, monkeypatch, caplog
) -> None:
    cfg = apply_overrides(_config(assets), ["train.max_iters=4", "train.checkpoint_every=2"])
    root = tmp_path / "stores"
    # The store is built by another process (as the pipeline builds it for its runs).
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    save_config(cfg, tmp_path / "config.yaml")
    args = [sys.executable, "-c", _BUILD_IN_ANOTHER_PROCESS, str(tmp_path / "config.yaml")]
    made = subprocess.run([*args, str(root)], capture_output=True, text=True, env=env, check=True)
    built = json.loads(made.stdout.strip().splitlines()[-1])
    assert sorted(built.values()) == ["built", "built"]
    with torch_threads(1):
        assert set(ensure_stores([_student(cfg, tmp_path)], root, threads=1).values()) == {"reused"}
        caplog.set_level(logging.INFO, logger="skdlib.train.loop")
        train(cfg, tmp_path / "computed", progress=False)
        train(cfg, tmp_path / "stored", progress=False, teacher_store=root)
        assert "teacher outputs: 0 computed, 16 read from stores, 0 reused" in caplog.text
        # Interrupted after 3 steps (its checkpoint holds 2), resumed reading the store.
        train_until_interrupted(cfg, tmp_path / "resumed", monkeypatch, steps=3)
        train(cfg, tmp_path / "resumed", resume=True, progress=False, teacher_store=root)
    env_json = json.loads((tmp_path / "stored" / "env.json").read_text())
    assert set(env_json["teacher_stores"]) == {LABELLED_STREAM, UNLABELED_STREAM}
    assert json.loads((tmp_path / "computed" / "env.json").read_text())["teacher_stores"] == {}
    reference = torch.load(tmp_path / "computed" / "checkpoints" / "final.pt")
    metrics = (tmp_path / "computed" / "metrics.jsonl").read_text()
    summary = json.loads((tmp_path / "computed" / "summary.json").read_text())
    for name in ("stored", "resumed"):
        weights = torch.load(tmp_path / name / "checkpoints" / "final.pt")
        assert all(torch.equal(reference[k], weights[k]) for k in reference), name
        other = json.loads((tmp_path / name / "summary.json").read_text())
        assert [other[k] for k in ("miou", "class_iou", "pixel_acc", "config_hash")] == [
            summary[k] for k in ("miou", "class_iou", "pixel_acc", "config_hash")
        ]
        # Every record but its timing.
        strip = lambda text: [  # noqa: E731
            {k: v for k, v in json.loads(line).items() if k not in ("sec_per_iter", "time")}
            for line in text.splitlines()
        ]
        assert strip((tmp_path / name / "metrics.jsonl").read_text()) == strip(metrics), name
