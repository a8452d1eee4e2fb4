"""The teacher-output store: a fixed teacher's outputs for every (scene, flip) of a data set,
computed once and read by every run that learns from that teacher on that data.

It is a persistent, pre-filled form of the in-run teacher cache
(:mod:`skdlib.train.teacher_cache`): each augmented scene is computed as the cache computes it
(alone, a batch of one, the step's teacher forward under the run's autocast and memory format,
with the run's thread count), so a value read from the store is the value the cache would have
computed, bit for bit, and a run that reads a store equals the run with ``train.teacher_cache:
true`` and no store. The store changes no result, so it is no configuration field and no part of
a run's config hash: a run gets the stores' folder as an execution parameter, like its thread
count (``train(..., teacher_store=...)``, ``python -m skdlib.train --teacher-store DIR``, the
training notebook's ``TEACHER_STORE``), and reads the store of each of its streams whose key
matches; for a scene or stream it finds none for, it computes the teacher's outputs itself.

What a store holds: the finite augmentation space of whole-scene crops, ``data.scale_range``
[1, 1] and a crop at least the scene's size (offset 0), flipped or not (``data.flip``): every
scene of the labelled training split (its first ``data.train_limit``) or of the unlabeled pool.
Other augmentations raise :class:`StoreUnsupported` (the run then computes its outputs itself,
with the in-run cache when ``train.teacher_cache`` is on).

Key (:func:`store_key`; any change makes another store): the teacher (every ``model.teacher*``
field but the checkpoint's path, with ``model.teacher_source``, the teacher run's config hash,
and the SHA-256 of the checkpoint file), the data set (name, root, split, options, limit; the
``data.unlabeled`` section for the unlabeled stream), the augmentation and normalisation (every
other ``data`` field but batching and the validation split), and the computation: device type
(and GPU name), autocast dtype, channels-last, torch threads on the CPU (a CPU convolution's
rounding depends on them: measured) and the torch version. The feature maps kept are not part
of the key: a store holds the logits and each ``distill.pair_feature`` map it was asked for; a
run needing a map the store lacks computes its outputs itself (the pipeline rebuilds the store
with the map, :mod:`skdlib.experiments.stores`).

Layout: ``<root>/<data root's name>-<split>-<digest>/`` with ``logits.npy``
``(N, F, K, h, w)`` and ``feature-<name>.npy`` ``(N, F, C, h, w)`` (``F`` flips, ``[False,
True]`` or ``[False]``), float32 (the value of a float16 or bfloat16 autocast exactly), and
``manifest.json``, written last: the key, the scene count and size, the flips, each array's
shape, SHA-256 and the dtype and strides the teacher computed it with (restored when read, so a
read tensor is laid out as a computed one). A run reads the arrays through memory maps: runs at
once share the pages and none keeps the outputs in its own memory.

Atomicity: a store is built in a temporary folder beside it and renamed into place (an older
one moved aside first); a folder without a readable manifest, of another key, or whose arrays do
not match their manifest is torn (:func:`check_store` says why) and built again. Processes
sharing a root hold a lock while they check and build (the pipeline does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skdlib.train.build import (
    autocast_dtype,
    build_dataset_for,
    build_teacher,
    build_unlabeled_dataset,
    num_classes_of,
    resolve_device,
    train_augment,
)
from skdlib.train.config import ExperimentConfig
from skdlib.train.runfolder import atomic_write_json
from skdlib.train.step import StepContext, teacher_forward

__all__ = [
    "LABELLED_STREAM",
    "MANIFEST_NAME",
    "STORE_FORMAT",
    "UNLABELED_STREAM",
    "StoreSet",
    "StoreUnsupported",
    "TeacherStore",
    "build_store",
    "check_store",
    "open_stores",
    "run_draws",
    "store_folder",
    "store_key",
    "store_size",
    "store_streams",
]

logger = logging.getLogger(__name__)

#: Version of the store's layout (part of the key: another layout is another store).
STORE_FORMAT = 1
#: The manifest inside a store folder, written last.
MANIFEST_NAME = "manifest.json"
#: The augmentation streams of the training loop (their seed streams): labelled and unlabeled.
LABELLED_STREAM = "augment"
UNLABELED_STREAM = "augment-unlabeled"
#: ``data`` fields that are no part of the augmentation (the data set's identity is keyed on its
#: own; batching and the validation split change no teacher output). Every other field is.
_NOT_AUGMENTATION = frozenset(
    {"name", "root", "train_split", "val_split", "options", "train_limit", "batch_size"}
    | {"num_workers", "unlabeled"}
)
_LOGITS = "logits"
_CHUNK = 1 << 20


class StoreUnsupported(ValueError):
    """The run's teacher outputs cannot be stored: no finite set of whole-scene crops (random
    scaling, crops smaller than the scene, scenes of several sizes) or a random teacher."""


def store_streams(cfg: ExperimentConfig) -> list[str]:
    """The augmentation streams a run of ``cfg`` draws: labelled, and unlabeled when on."""
    return [LABELLED_STREAM] + ([UNLABELED_STREAM] if cfg.data.unlabeled.enabled else [])


def _file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists), for comparisons with a manifest."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def store_key(
    cfg: ExperimentConfig, stream: str, *, device: torch.device, threads: int
) -> dict[str, Any]:
    """What decides the teacher's outputs for the scenes of ``stream`` of a run of ``cfg`` on
    ``device`` with ``threads`` torch threads (see the module's text), as JSON values.

    Raises:
        StoreUnsupported: no term reads the teacher, random scaling, or a random teacher.
        FileNotFoundError: the teacher checkpoint is missing.
    """
    if stream not in (LABELLED_STREAM, UNLABELED_STREAM):
        raise ValueError(f"stream: expected {LABELLED_STREAM!r} or {UNLABELED_STREAM!r}")
    if not cfg.distill.enabled:
        raise StoreUnsupported("no distillation term reads the teacher")
    if tuple(cfg.data.scale_range) != (1.0, 1.0):
        raise StoreUnsupported(
            f"data.scale_range {list(cfg.data.scale_range)}: random scaling has no finite set "
            "of crops (a store needs [1.0, 1.0])"
        )
    model = dataclasses.asdict(cfg.model)
    checkpoint = model.pop("teacher_checkpoint")
    if checkpoint is None:
        raise StoreUnsupported("model.teacher_checkpoint is null: a random teacher per run")
    teacher = {k: v for k, v in model.items() if k.startswith("teacher")}
    teacher.update(num_classes=model["num_classes"], checkpoint_sha256=_file_sha256(checkpoint))
    data = dataclasses.asdict(cfg.data)
    if stream == LABELLED_STREAM:
        source = {k: data[k] for k in ("name", "root", "train_split", "options", "train_limit")}
    else:
        source = {k: v for k, v in data["unlabeled"].items() if k != "batch_size"}
    autocast = autocast_dtype(cfg, device)
    compute = {
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "autocast": None if autocast is None else str(autocast),
        "channels_last": cfg.train.channels_last,
        "threads": threads if device.type == "cpu" else None,
        "torch": torch.__version__,
    }
    augmentation = {k: v for k, v in data.items() if k not in _NOT_AUGMENTATION}
    key = {"format": STORE_FORMAT, "teacher": teacher, "data": source}
    return _jsonable({**key, "augmentation": augmentation, "compute": compute})


def store_folder(root: str | os.PathLike[str], key: Mapping[str, Any]) -> Path:
    """The folder of the store of ``key`` under ``root``: ``<data root's name>-<split>-<digest
    of the key>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    source = key["data"]
    split = source.get("train_split", source.get("split"))
    label = "-".join(str(part) for part in (Path(str(source["root"])).name, split))
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in label)
    return Path(root) / f"{safe}-{digest}"


# --------------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------------
def check_store(
    folder: str | os.PathLike[str],
    key: Mapping[str, Any],
    *,
    features: Iterable[str] = (),
    verify: bool = False,
) -> str | None:
    """``None`` when ``folder`` holds a complete store of ``key`` with the ``features`` maps,
    else why not (one phrase). ``verify`` also compares every array's SHA-256 with its
    manifest's (reads every byte)."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not built yet"
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return f"no readable {MANIFEST_NAME} (a torn store)"
    if not isinstance(manifest, dict) or manifest.get("key") != _jsonable(key):
        return f"its {MANIFEST_NAME} holds another key"
    missing = sorted(set(features) - set(manifest.get("features", [])))
    if missing:
        return f"it holds no {missing} feature maps"
    for spec in manifest.get("arrays", {}).values():
        path = folder / spec["file"]
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            return f"{path.name} is unreadable ({error}): a torn store"
        if list(array.shape) != spec["shape"] or array.dtype != np.float32:
            return f"{path.name} holds {array.dtype} {list(array.shape)}, not {spec['shape']}"
        if verify and _file_sha256(path) != spec["sha256"]:
            return f"{path.name} does not match its SHA-256"
    return None


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------
def store_size(cfg: ExperimentConfig, stream: str) -> int:
    """The (scene, flip) pairs a store of ``stream`` of a run of ``cfg`` holds (the teacher
    forwards it costs to build)."""
    dataset, _ = _stream_dataset(cfg, stream)
    return len(dataset) * (2 if cfg.data.flip else 1)


def run_draws(cfg: ExperimentConfig, stream: str) -> int:
    """The images a run of ``cfg`` draws from ``stream`` (per process): at most as many teacher
    forwards as its in-run cache computes."""
    unl = stream == UNLABELED_STREAM
    return cfg.train.max_iters * (cfg.data.unlabeled.batch_size if unl else cfg.data.batch_size)


def _stream_dataset(cfg: ExperimentConfig, stream: str) -> tuple[Any, int]:
    """The data set of ``stream`` (as the loop reads it) and the run's class count."""
    labelled = build_dataset_for(cfg, cfg.data.train_split)
    dataset = labelled if stream == LABELLED_STREAM else build_unlabeled_dataset(cfg)
    return dataset, num_classes_of(cfg, labelled)


def build_store(
    cfg: ExperimentConfig,
    stream: str,
    root: str | os.PathLike[str],
    *,
    features: Iterable[str] = (),
    device: torch.device | None = None,
) -> Path:
    """Compute the teacher's outputs for every (scene, flip) of ``stream`` of a run of ``cfg``
    (on ``device``, default ``train.device``; with this process's torch threads) and put them
    in their store folder under ``root``, atomically (an older store there is replaced); the
    folder. ``features``: the feature maps to keep besides the logits.

    Raises:
        StoreUnsupported: see :func:`store_key`; a scene larger than ``data.crop_size``, or
            scenes of several sizes.
    """
    device = device if device is not None else resolve_device(cfg.train.device)
    key = store_key(cfg, stream, device=device, threads=torch.get_num_threads())
    folder = store_folder(root, key)
    dataset, num_classes = _stream_dataset(cfg, stream)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    teacher = build_teacher(cfg, num_classes).to(device=device, memory_format=memory_format)
    ctx = StepContext(distill=cfg.distill, autocast_dtype=autocast_dtype(cfg, device))
    names = sorted(set(features))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    start = time.perf_counter()
    try:
        flips = [False, True] if cfg.data.flip else [False]
        job = _Computation(teacher, train_augment(cfg), ctx, device, memory_format, names)
        arrays, size = job.run(dataset, flips, tmp)
        manifest = {
            "format": STORE_FORMAT,
            "key": key,
            "count": len(dataset),
            "image_size": list(size),
            "flips": flips,
            "features": names,
            "arrays": arrays,
            "seconds": round(time.perf_counter() - start, 3),
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        _fsync_dir(tmp)
        _swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "teacher-output store %s: %d scenes x %d flips in %.1f s",
        folder,
        len(dataset),
        len(flips),
        time.perf_counter() - start,
    )
    return folder


@dataclasses.dataclass
class _Computation:
    """The teacher's outputs, one augmented scene at a time, as the in-run cache computes them."""

    teacher: torch.nn.Module
    augment: Any
    ctx: StepContext
    device: torch.device
    memory_format: torch.memory_format
    features: Sequence[str]

    def outputs(self, image: torch.Tensor, label: torch.Tensor, flip: bool) -> dict[str, Any]:
        """``{"logits", "feature-<name>"...}`` of one ``(1, 3, H, W)`` scene: ``(1, ...)``."""
        h, w = image.shape[-2:]
        params = [{"size": (h, w), "top": 0, "left": 0, "flip": flip}]  # a whole-scene crop
        crop, _ = self.augment.apply(image, label, params)  # (1, 3, H, W) -> (1, 3, ch, cw)
        if self.memory_format is torch.channels_last:
            crop = crop.contiguous(memory_format=torch.channels_last)
        out = teacher_forward(self.teacher, crop, self.ctx)
        return {_LOGITS: out.logits, **{f"feature-{n}": out.features[n] for n in self.features}}

    def run(
        self, dataset: Any, flips: Sequence[bool], folder: Path
    ) -> tuple[dict[str, Any], tuple[int, int]]:
        """Every (scene, flip) into ``.npy`` files in ``folder``; their manifest entries and the
        scenes' size."""
        crop = tuple(self.augment.crop_size)
        size: tuple[int, int] | None = None
        maps: dict[str, np.memmap] = {}
        specs: dict[str, dict[str, Any]] = {}
        for index in range(len(dataset)):
            item = dataset[index]
            image = item["image"][None].to(self.device)  # (3, H, W) -> (1, 3, H, W)
            label = item["label"][None].to(self.device)  # (H, W) -> (1, H, W)
            scene = (int(image.shape[-2]), int(image.shape[-1]))
            if scene[0] > crop[0] or scene[1] > crop[1]:
                raise StoreUnsupported(
                    f"scene {index} is {scene[0]}x{scene[1]}, larger than data.crop_size "
                    f"{list(crop)}: its crops lie at random offsets"
                )
            if size is not None and scene != size:
                raise StoreUnsupported(f"scenes of several sizes ({size} and {scene})")
            size = scene
            for f, flip in enumerate(flips):
                for name, tensor in self.outputs(image, label, flip).items():
                    if name not in maps:
                        shape = (len(dataset), len(flips), *tensor.shape[1:])  # (N, F, ...)
                        specs[name] = _array_spec(name, tensor, shape)
                        maps[name] = np.lib.format.open_memmap(
                            folder / specs[name]["file"], mode="w+", dtype=np.float32, shape=shape
                        )
                    _check_layout(specs[name], tensor)
                    maps[name][index, f] = tensor[0].float().cpu().numpy()  # (1, ...) -> (...)
        for name, array in maps.items():
            array.flush()
            _fsync(folder / specs[name]["file"])
            specs[name]["sha256"] = _file_sha256(folder / specs[name]["file"])
        return specs, size or (0, 0)


def _array_spec(name: str, tensor: torch.Tensor, shape: Sequence[int]) -> dict[str, Any]:
    """The manifest entry of the array ``name`` of ``shape``, computed as ``tensor`` (1, ...)."""
    return {
        "file": f"{name}.npy",
        "shape": list(shape),
        "dtype": "float32",
        "computed_dtype": str(tensor.dtype).removeprefix("torch."),
        "strides": list(tensor.stride()),
    }


def _check_layout(spec: Mapping[str, Any], tensor: torch.Tensor) -> None:
    dtype = str(tensor.dtype).removeprefix("torch.")
    if list(tensor.stride()) != spec["strides"] or dtype != spec["computed_dtype"]:
        raise StoreUnsupported(
            f"{spec['file']}: the teacher's outputs change layout between scenes "
            f"({dtype} {list(tensor.stride())} vs {spec['computed_dtype']} {spec['strides']})"
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # a file system that cannot sync a folder
        _fsync(path)


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename the built ``tmp`` to ``folder``, an existing ``folder`` moved aside first and
    deleted after (a run reading it keeps its open files)."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(folder, old)
    os.rename(tmp, folder)
    _fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
class TeacherStore:
    """One store, read through memory maps: the teacher's outputs of one augmented scene.

    Args:
        folder: the store folder (checked by :func:`check_store` first).
        feature: the feature map the run reads besides the logits, or ``None``.
        device: where the outputs go (the teacher's device in the run).
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, feature: str | None, device: torch.device
    ) -> None:
        self.folder = Path(folder)
        manifest = json.loads((self.folder / MANIFEST_NAME).read_text())
        self.count = int(manifest["count"])
        self.image_size = tuple(manifest["image_size"])
        self.flips = [bool(f) for f in manifest["flips"]]
        self.device = device
        names = [_LOGITS] + ([f"feature-{feature}"] if feature is not None else [])
        self._specs = [manifest["arrays"][name] for name in names]
        self._maps = [np.load(self.folder / spec["file"], mmap_mode="r") for spec in self._specs]

    def read(
        self, index: int, size: Sequence[int], top: int, left: int, flip: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``(logits (K, h, w), feature (C, h, w) or None)`` of scene ``index`` augmented with
        these parameters, laid out as the teacher computed them; ``None`` when the store does
        not hold that augmentation."""
        whole = top == 0 and left == 0 and tuple(size) == self.image_size
        if not whole or flip not in self.flips or not 0 <= index < self.count:
            return None
        f = self.flips.index(flip)
        pairs = zip(self._maps, self._specs, strict=True)
        tensors = [self._restore(array[index, f], spec) for array, spec in pairs]
        return tensors[0], (tensors[1] if len(tensors) > 1 else None)

    def _restore(self, values: np.ndarray, spec: Mapping[str, Any]) -> torch.Tensor:
        """One stored map ``(K, h, w)`` as the computed ``(1, K, h, w)`` tensor's ``[0]``: its
        dtype, strides and device."""
        dtype = getattr(torch, spec["computed_dtype"])
        data = torch.from_numpy(np.array(values))[None]  # (K, h, w) -> (1, K, h, w), a copy
        out = torch.empty_strided(data.shape, spec["strides"], dtype=dtype, device=self.device)
        out.copy_(data)
        return out[0]


class StoreSet:
    """The stores of a run by stream: ``store(key)`` for a teacher-cache key
    (:func:`~skdlib.train.teacher_cache.augmentation_key`) is the stored outputs, or ``None``."""

    def __init__(self, stores: Mapping[str, TeacherStore]) -> None:
        self.stores = dict(stores)

    def __call__(self, key: Hashable) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        stream, index, size, top, left, flip = key  # type: ignore[misc]
        store = self.stores.get(stream)
        return None if store is None else store.read(index, size, top, left, flip)


def open_stores(
    root: str | os.PathLike[str],
    cfg: ExperimentConfig,
    *,
    device: torch.device,
    threads: int,
    feature: str | None,
) -> dict[str, TeacherStore]:
    """The stores under ``root`` a run of ``cfg`` on ``device`` with ``threads`` threads reads,
    by stream; a stream without a matching complete store is left out (logged: the run
    computes those outputs itself)."""
    stores = {}
    for stream in store_streams(cfg):
        try:
            key = store_key(cfg, stream, device=device, threads=threads)
        except StoreUnsupported as error:
            logger.info("teacher-output store: not for this run (%s)", error)
            return {}
        folder = store_folder(root, key)
        problem = check_store(folder, key, features=[feature] if feature else [])
        if problem is not None:
            logger.warning(
                "teacher-output store %s: %s; this run computes the %s stream's teacher outputs",
                folder,
                problem,
                stream,
            )
            continue
        stores[stream] = TeacherStore(folder, feature=feature, device=device)
        logger.info("teacher-output store: the %s stream reads %s", stream, folder)
    return stores
