"""The pipeline's teacher-output stores: built once per (teacher, data set) before the students.

For the student runs it is to train, :func:`ensure_stores` works out the store each of their
streams reads (:func:`skdlib.train.teacher_store.store_key`: the teacher, the data set, the
augmentation, the device, the students' thread count) and builds every one that is missing, torn
or lacks a feature map a run reads, in ``<runs_root>/<profile>/teacher_outputs/``
(:data:`~skdlib.experiments.plan.STORE_DIR`). Each check and build holds the store's lock
(``<store>.lock`` beside it, :mod:`skdlib.experiments.locks`), so pipelines sharing a runs tree
build each store once and never read a half-built one; the store itself is written atomically.
The runs then get the folder as an execution parameter and read what matches them.

A run whose augmentation has no finite set of whole-scene crops (random scaling, crops smaller
than the scene), or that has no teacher cache (``train.teacher_cache: false``), gets no store
and computes its teacher outputs as before (logged once per reason). A store is not built when
its runs draw fewer images, all together (iterations x images per step, each run's count capped
at the store's size), than the (scene, flip) pairs it holds: computing them in each run then
costs no more (short runs on a large pool, the smoke profile's pools); one already built is
read all the same.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skdlib.experiments.locks import FileLock
from skdlib.experiments.runs import RunSpec

__all__ = ["StoreRequest", "ensure_stores", "store_requests"]

logger = logging.getLogger(__name__)


@dataclass
class StoreRequest:
    """One store the student runs read: a run's config and stream that make it, and every
    feature map those runs read."""

    config: Any
    stream: str
    key: dict[str, Any]
    folder: Path
    features: set[str] = field(default_factory=set)
    runs: list[str] = field(default_factory=list)
    #: The (scene, flip) pairs the store holds, and the images its runs draw (each run's count
    #: capped at that size).
    size: int = 0
    draws: int = 0


def store_requests(
    specs: Sequence[RunSpec], root: str | os.PathLike[str], *, threads: int
) -> list[StoreRequest]:
    """The stores ``specs``' student runs read under ``root`` with ``threads`` torch threads,
    one per key, in the order the runs need them; runs that cannot read one are logged."""
    from skdlib.train.build import resolve_device
    from skdlib.train.teacher_store import (
        StoreUnsupported,
        run_draws,
        store_folder,
        store_key,
        store_size,
        store_streams,
    )
    from skdlib.train.terms import needs_features

    requests: dict[Path, StoreRequest] = {}
    said: set[str] = set()
    for spec in specs:
        cfg = spec.config
        if spec.experiment is None or not cfg.train.teacher_cache or not cfg.distill.enabled:
            continue
        device = resolve_device(cfg.train.device)
        for stream in store_streams(cfg):
            try:
                key = store_key(cfg, stream, device=device, threads=threads)
            except (StoreUnsupported, FileNotFoundError) as error:  # no finite crops; no teacher
                if str(error) not in said:
                    said.add(str(error))
                    logger.info("no teacher-output store for %s and alike: %s", spec.key, error)
                break
            folder = store_folder(root, key)
            if folder not in requests:
                request = StoreRequest(cfg, stream, key, folder, size=store_size(cfg, stream))
                requests[folder] = request
            request = requests[folder]
            if needs_features(cfg.distill):
                request.features.add(cfg.distill.pair_feature)
            request.runs.append(spec.key)
            request.draws += min(run_draws(cfg, stream), request.size)
    return list(requests.values())


def ensure_stores(
    specs: Sequence[RunSpec], root: str | os.PathLike[str], *, threads: int
) -> dict[str, str]:
    """Build every store ``specs``' student runs read that is not complete under ``root``
    (with ``threads`` torch threads, the students' count), each under its lock; what was done
    with each store folder: ``"reused"``, ``"built"``, ``"not built: <draws> < <size>"``,
    ``"unsupported: <why>"`` or ``"failed: <error>"`` (a store that fails to build fails no run:
    its runs compute their outputs)."""
    from skdlib.train.build import torch_threads
    from skdlib.train.teacher_store import StoreUnsupported, build_store, check_store

    done: dict[str, str] = {}
    for request in store_requests(specs, root, threads=threads):
        folder = request.folder
        with FileLock(folder.with_name(f"{folder.name}.lock")):
            _remove_leftovers(folder)
            manifest = folder / "manifest.json"
            held = _features_held(manifest)
            wanted = request.features | held
            problem = check_store(folder, request.key, features=wanted, verify=True)
            if problem is None:
                done[str(folder)] = "reused"
                logger.info("teacher-output store %s: reused", folder.name)
                continue
            if request.draws < request.size:
                done[str(folder)] = f"not built: {request.draws} draws < {request.size} pairs"
                logger.info(
                    "teacher-output store %s: not built, its %d run(s) draw %d images, fewer than "
                    "its %d (scene, flip) pairs (each run computes those it meets)",
                    folder.name,
                    len(request.runs),
                    request.draws,
                    request.size,
                )
                continue
            logger.info(
                "teacher-output store %s (%d runs): %s; building it",
                folder.name,
                len(request.runs),
                problem,
            )
            start = time.perf_counter()
            try:
                with torch_threads(threads):
                    build_store(request.config, request.stream, folder.parent, features=wanted)
            except StoreUnsupported as error:
                done[str(folder)] = f"unsupported: {error}"
                logger.info("no teacher-output store %s: %s", folder.name, error)
                continue
            except Exception as error:  # the runs compute their teacher outputs instead
                done[str(folder)] = f"failed: {error}"
                logger.exception("teacher-output store %s failed; its runs compute", folder.name)
                continue
            done[str(folder)] = "built"
            logger.info("built %s in %.1f s", folder.name, time.perf_counter() - start)
    return done


def _features_held(manifest: Path) -> set[str]:
    """The feature maps an existing store holds (kept when it is rebuilt for another one)."""
    import json

    try:
        return set(json.loads(manifest.read_text()).get("features", []))
    except (OSError, ValueError, AttributeError):
        return set()


def _remove_leftovers(folder: Path) -> None:
    """Delete what a builder that died left beside ``folder`` (its temporary and moved-aside
    folders); only called under the store's lock, so no live builder owns them."""
    for stale in folder.parent.glob(f".{folder.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
