"""The training loop: ``train(cfg, run_dir)`` runs one experiment into a run folder.

Each iteration, as in the paper: the teacher's forward pass (eval mode, no gradient), a student
update with the critic fixed, a critic update with the student fixed (all in
:func:`skdlib.train.step.distill_step`). The student's optimiser is SGD (``train.lr``,
``train.momentum``, ``train.weight_decay``); the critic's is SGD or Adam (``distill.disc_*``,
no weight decay: spectral normalisation already bounds it). Both follow the poly schedule
``lr * (1 - it / max_iters) ** poly_power``, set from the iteration number before every step.

Reproducibility and exact resume: every random number is a function of ``(seed, iteration)``:

* sample order: epoch ``e``'s permutation comes from a generator seeded with ``(seed, e)``; the
  global batch of iteration ``i`` takes positions ``[i * G, (i + 1) * G)`` of the concatenated
  epochs (``G = batch_size * world_size``; process ``r`` takes its ``r``-th slice);
* augmentation: each image's parameters come from a generator seeded with ``(seed, position)``,
  so they do not depend on the batch split across processes;
* the global torch generator (dropout) and the gradient penalty's generator are re-seeded every
  iteration from ``(seed, iteration, rank)``.

Unlabeled images (``data.unlabeled``, off by default): each iteration also draws
``data.unlabeled.batch_size`` images from a second data set, in a sample order of their own (the
seed stream ``"unlabeled"``) and with augmentation parameters seeded by ``(seed, position)`` of
that stream. They are appended to the labelled batch with all-ignore labels
(:func:`skdlib.train.step.with_unlabeled`): the task loss counts labelled pixels only, the
distillation terms and the critic see every image.

A resumed run therefore needs only the iteration number and the optimiser states: on CPU,
``N`` iterations straight and ``N/2`` + resume + ``N/2`` give identical weights.

Run folder: see :mod:`skdlib.train.runfolder`. ``data.batch_size`` is per process (see
:mod:`skdlib.train.distributed`); only rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skdlib.train.config import ExperimentConfig, config_hash, save_config, validate_with_model
from skdlib.train.distributed import (
    AllReduceOptimizer,
    DistInfo,
    cleanup,
    convert_sync_batchnorm,
    dist_info,
    init_distributed,
)
from skdlib.train.runfolder import (
    RunFolder,
    atomic_write_json,
    environment_info,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "NonFiniteLossError",
    "RunFolderError",
    "batch_indices",
    "build_dataset_for",
    "build_models",
    "build_unlabeled_dataset",
    "derive_seed",
    "poly_lr",
    "resolve_device",
    "train",
]

logger = logging.getLogger(__name__)

#: Version of the ``last.pt`` layout.
CHECKPOINT_FORMAT = 1
#: The discriminator's five convolutions include four stride-2 ones after the 1/8 logits.
_CRITIC_MIN_MAP = 16
_OUTPUT_STRIDE = 8
_IGNORE_INDEX = 255


class RunFolderError(FileExistsError):
    """The run folder holds a run that this call must not overwrite (see the message for the
    fix)."""


class NonFiniteLossError(RuntimeError):
    """Too many consecutive iterations had a non-finite loss."""


# --------------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------------
def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python
    versions)."""
    text = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & (
        (1 << 63) - 1
    )


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float) -> float:
    """``base_lr * (1 - iteration / max_iters) ** power`` (the paper's schedule)."""
    if max_iters < 1 or not 0 <= iteration <= max_iters:
        raise ValueError(f"iteration must lie in [0, max_iters={max_iters}], got {iteration}")
    return base_lr * (1.0 - iteration / max_iters) ** power


class _EpochOrder:
    """Permutations of ``range(n)`` per epoch, seeded by ``(seed, epoch)``; the latest is cached."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def __call__(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm


def _positions(iteration: int, batch_size: int, world_size: int, rank: int) -> list[int]:
    """Global sample positions this process takes at ``iteration``."""
    start = (iteration * world_size + rank) * batch_size
    return list(range(start, start + batch_size))


def batch_indices(
    iteration: int,
    *,
    num_items: int,
    batch_size: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
) -> list[int]:
    """Data-set indices of process ``rank``'s batch at ``iteration`` (see the module docstring)."""
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    order = _EpochOrder(num_items, seed)
    return [
        int(order(p // num_items)[p % num_items])
        for p in _positions(iteration, batch_size, world_size, rank)
    ]


class _BatchSampler:
    """Yields the index lists of iterations ``start .. stop - 1`` for one process (a DataLoader
    batch_sampler)."""

    def __init__(
        self, num_items: int, *, start: int, stop: int, batch_size: int, seed: int, info: DistInfo
    ) -> None:
        self.num_items, self.start, self.stop = num_items, start, stop
        self.batch_size, self.info = batch_size, info
        self.order = _EpochOrder(num_items, seed)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        n = self.num_items
        for iteration in range(self.start, self.stop):
            positions = _positions(iteration, self.batch_size, self.info.world_size, self.info.rank)
            yield [int(self.order(p // n)[p % n]) for p in positions]


def _collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    sizes = {tuple(item["image"].shape) for item in items}
    if len(sizes) != 1:
        raise ValueError(
            f"images of one batch differ in size {sorted(sizes)}; use a data set with one image "
            "size or data.batch_size=1"
        )
    return {
        "image": torch.stack([item["image"] for item in items]),  # B x (3, H, W) -> (B, 3, H, W)
        "label": torch.stack([item["label"] for item in items]),  # B x (H, W) -> (B, H, W)
        "name": [item.get("name", "") for item in items],
    }


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; other names checked for availability."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"train.device: {name!r} requested but MPS is not available")
    return device


def build_dataset_for(cfg: ExperimentConfig, split: str) -> Any:
    """The data set of ``split`` from ``cfg.data`` via :func:`skdlib.data.build_dataset`; the
    training split restricted to its first ``data.train_limit`` samples when that is set."""
    from skdlib.data import DataError, build_dataset

    dataset = build_dataset(cfg.data.name, cfg.data.root, split, **dict(cfg.data.options))
    limit = cfg.data.train_limit
    if limit is None or split != cfg.data.train_split:
        return dataset
    if limit > len(dataset):
        raise DataError(
            f"data.train_limit={limit}, but the {split!r} split of {cfg.data.root} has only "
            f"{len(dataset)} samples"
        )
    return dataset.first(limit)


class _WithoutLabels(torch.utils.data.Dataset):
    """A labelled data set used as unlabeled images: every label replaced by ``ignore_index``."""

    def __init__(self, dataset: Any, ignore_index: int) -> None:
        self.dataset, self.ignore_index = dataset, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["label"] = torch.full_like(
            item["label"], self.ignore_index
        )  # (H, W), nothing labelled
        item["labelled"] = False
        return item


def build_unlabeled_dataset(cfg: ExperimentConfig) -> Any:
    """The unlabeled stream's data set (``cfg.data.unlabeled``), or ``None`` when it is off.

    ``images`` reads image files only (no label file is opened); any other data set is read
    through :func:`skdlib.data.build_dataset` and its labels are replaced by the ignore label.
    """
    from skdlib.data import build_dataset

    unl = cfg.data.unlabeled
    if not unl.enabled:
        return None
    dataset = build_dataset(unl.name, unl.root, unl.split, **dict(unl.options))
    if unl.name == "images":
        return dataset
    return _WithoutLabels(dataset, getattr(dataset, "ignore_index", _IGNORE_INDEX))


def _teacher_hint(path: str) -> str:
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "checkpoints" and parts[-1] == "final.pt":
        run_dir = Path(*parts[:-2])
        return (
            f"it is written by the run in {run_dir} (e.g. `python -m skdlib.train --config "
            f"configs/{run_dir.name}.yaml --run-dir {run_dir}`)"
        )
    return (
        "train the teacher first (a teacher preset, e.g. "
        "configs/teacher_quick.yaml) and point to its final.pt"
    )


def build_models(
    cfg: ExperimentConfig, num_classes: int
) -> tuple[nn.Module, nn.Module | None, nn.Module | None, nn.Module | None]:
    """``(student, teacher, critic, adapter)`` on the CPU, checked against the config.

    The teacher is built when a term needs it and loaded (strict) from ``model.teacher_checkpoint``;
    a null checkpoint leaves it randomly initialised (smoke runs), with a warning.

    Raises:
        FileNotFoundError: the teacher checkpoint is set but missing (the message says which run
            writes it); ``ValueError`` from :func:`validate_with_model` and the critic's size check.
    """
    from skdlib.models import build_model, load_pretrained
    from skdlib.models.discriminator import Discriminator
    from skdlib.train.step import needs_critic, needs_teacher

    d = cfg.distill
    teacher = None
    if needs_teacher(d):
        path = cfg.model.teacher_checkpoint
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(
                f"model.teacher_checkpoint: teacher weights not found at {path}; "
                f"{_teacher_hint(path)}"
            )
        teacher = build_model(cfg.model.teacher, num_classes, **dict(cfg.model.teacher_options))
        if path is None:
            logger.warning("model.teacher_checkpoint is null: the teacher is randomly initialised")
        else:
            load_pretrained(teacher, path, strict=True)
            logger.info("teacher loaded from %s", path)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student = build_model(cfg.model.student, num_classes, **dict(cfg.model.student_options))
    if cfg.model.student_pretrained is not None:
        report = load_pretrained(student, cfg.model.student_pretrained, prefix="backbone.")
        logger.info(
            "student backbone initialised from %s: %s", cfg.model.student_pretrained, report
        )
    validate_with_model(cfg, student, teacher=teacher)
    critic = None
    if needs_critic(d):
        side = min(cfg.data.crop_size) // _OUTPUT_STRIDE
        if side < _CRITIC_MIN_MAP:
            raise ValueError(
                f"data.crop_size: {list(cfg.data.crop_size)} gives {side}-pixel logit maps at "
                f"output stride {_OUTPUT_STRIDE}; the holistic term's discriminator needs >= "
                f"{_CRITIC_MIN_MAP} (crops of at least {_CRITIC_MIN_MAP * _OUTPUT_STRIDE} pixels a "
                "side) or distill.holistic=false"
            )
        critic = Discriminator(
            num_classes,
            widths=tuple(d.disc_widths),
            use_image=d.disc_use_image,
            input=d.disc_input,
            input_batchnorm=d.disc_input_batchnorm,
        )
    adapter = None
    if d.mimic:
        from skdlib.losses import make_mimic_adapter

        adapter = make_mimic_adapter(
            student.feature_channels[d.pair_feature], teacher.feature_channels[d.pair_feature]
        )
    return student, teacher, critic, adapter


def _critic_optimizer(cfg: ExperimentConfig, critic: nn.Module) -> torch.optim.Optimizer:
    d = cfg.distill
    if d.disc_optimizer == "adam":
        return torch.optim.Adam(critic.parameters(), lr=d.disc_lr, betas=tuple(d.disc_betas))
    return torch.optim.SGD(critic.parameters(), lr=d.disc_lr, momentum=d.disc_momentum)


def _set_lr(optimizer: Any, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------------
# Run-folder state
# --------------------------------------------------------------------------------------------------
def _prepare_folder(folder: RunFolder, cfg: ExperimentConfig, *, resume: bool, force: bool) -> bool:
    """Check what the folder holds; returns True when training resumes from ``last.pt``."""
    if force:
        if folder.has_partial_run():
            logger.warning("--force: removing the previous run's files in %s", folder.root)
            folder.clear()
        return False
    if folder.is_finished():
        if resume:
            raise RunFolderError(
                f"{folder.root} holds a finished run (summary.json says finished: true); nothing "
                "to resume. Use --force to train it again from scratch"
            )
        raise RunFolderError(
            f"{folder.root} holds a finished run (summary.json says finished: true); it is never "
            "overwritten without --force"
        )
    if not folder.has_partial_run():
        if resume:
            logger.warning("--resume: %s holds no previous run; starting from scratch", folder.root)
        return False
    if not resume:
        raise RunFolderError(
            f"{folder.root} holds a partial run (no finished summary.json); pass --resume to "
            "continue it or --force to start over"
        )
    if folder.config.is_file():
        from skdlib.train.config import load_config

        previous = config_hash(load_config(folder.config))
        current = config_hash(cfg)
        if previous != current:
            raise ValueError(
                f"--resume: the config differs from the one in {folder.config} (hash {current} vs "
                f"{previous}); resume with the same config or use --force to start over"
            )
    if not folder.last.is_file():
        logger.warning("--resume: %s has no checkpoint yet; starting from iteration 0", folder.last)
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Numerics per device
# --------------------------------------------------------------------------------------------------
def _amp(
    cfg: ExperimentConfig, device: torch.device
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if device.type != "cuda" or cfg.train.amp == "none":
        if cfg.train.amp != "none":
            logger.info(
                "train.amp=%s applies on CUDA only; running float32 on %s", cfg.train.amp, device
            )
        return None, None
    if cfg.train.amp == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------
class _Logger:
    """metrics.jsonl, logging lines and optional TensorBoard (rank 0 only)."""

    def __init__(self, folder: RunFolder, *, enabled: bool, tensorboard: bool) -> None:
        self.folder, self.enabled = folder, enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning(
                    "train.tensorboard: the tensorboard package is not installed; skipping it"
                )
            else:
                self.writer = SummaryWriter(str(folder.tensorboard))

    def record(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.folder.append_metrics(
            {k: _json_float(v) if isinstance(v, float) else v for k, v in record.items()}
        )
        if self.writer is not None:
            prefix = "val/" if record.get("split") == "val" else "train/"
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("iter", "split"):
                    self.writer.add_scalar(prefix + key, value, record["iter"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def train(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` and return the summary (also written to ``summary.json``).

    Args:
        cfg: the experiment.
        run_dir: the run folder (created).
        resume: continue from ``checkpoints/last.pt`` (the config must hash the same).
        force: delete a previous run's files in ``run_dir`` first.
        progress: show a tqdm progress bar (only when stderr is a terminal).

    Raises:
        RunFolderError: the folder holds a finished run (without ``force``) or a partial one
            (without ``resume`` or ``force``).
        ValueError: a resumed config that differs; a config that does not fit the models.
        FileNotFoundError: the teacher checkpoint is missing.
        NonFiniteLossError: ``train.max_nonfinite`` consecutive iterations had a non-finite loss
            (``last.pt`` keeps the last good checkpoint).
    """
    if not isinstance(cfg, ExperimentConfig):
        raise ValueError(f"cfg must be an ExperimentConfig, got {type(cfg).__name__}")
    info = dist_info()
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    created = init_distributed(info, device)
    try:
        return _train(
            cfg,
            RunFolder(Path(run_dir)),
            info,
            device,
            resume=resume,
            force=force,
            progress=progress,
        )
    finally:
        cleanup(created)


def _train(
    cfg: ExperimentConfig,
    folder: RunFolder,
    info: DistInfo,
    device: torch.device,
    *,
    resume: bool,
    force: bool,
    progress: bool,
) -> dict[str, Any]:
    from skdlib.data.transforms import TrainAugment
    from skdlib.evaluate import evaluate
    from skdlib.models import complexity
    from skdlib.train.step import StepContext, distill_step, with_unlabeled

    t_cfg, d_cfg = cfg.train, cfg.distill
    main = info.is_main
    # Folder checks happen on rank 0; the others wait and learn the outcome.
    error: BaseException | None = None
    resuming = False
    if main:
        try:
            resuming = _prepare_folder(folder, cfg, resume=resume, force=force)
        except (RunFolderError, ValueError) as exc:
            error = exc
    resuming, failed = _broadcast_flags(info, resuming, error is not None)
    if error is not None:
        raise error
    if failed:
        raise RunFolderError(f"rank 0 refused the run folder {folder.root} (see its log)")

    train_set = build_dataset_for(cfg, cfg.data.train_split)
    val_set = build_dataset_for(cfg, cfg.data.val_split)
    unlabeled_set = build_unlabeled_dataset(cfg)
    num_classes = cfg.model.num_classes or train_set.num_classes
    # Initial weights are a function of the seed alone (the same on every rank, whatever ran
    # before).
    torch.manual_seed(derive_seed(t_cfg.seed, "init"))
    student, teacher, critic, adapter = build_models(cfg, num_classes)
    cost = complexity(student, tuple(cfg.data.crop_size)) if main else None

    autocast_dtype, scaler = _amp(cfg, device)
    memory_format = (
        torch.channels_last
        if (device.type == "cuda" and t_cfg.channels_last)
        else torch.preserve_format
    )
    student.to(device=device, memory_format=memory_format)
    if teacher is not None:
        teacher.to(device=device, memory_format=memory_format)
    if critic is not None:
        critic.to(device)
    if adapter is not None:
        adapter.to(device)

    student_params = list(student.parameters()) + (
        list(adapter.parameters()) if adapter is not None else []
    )
    optimizer: Any = torch.optim.SGD(
        student_params, lr=t_cfg.lr, momentum=t_cfg.momentum, weight_decay=t_cfg.weight_decay
    )
    critic_optimizer: Any = _critic_optimizer(cfg, critic) if critic is not None else None

    start = 0
    elapsed_before = 0.0
    streak = 0
    if resuming:
        state = load_checkpoint(folder.last, map_location=device)
        if state.get("config_hash") != config_hash(cfg):
            raise ValueError(
                f"--resume: {folder.last} was written for config hash {state.get('config_hash')}, "
                f"this config hashes to {config_hash(cfg)}"
            )
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        if critic is not None:
            critic.load_state_dict(state["critic"])
            critic_optimizer.load_state_dict(state["critic_optimizer"])
        if adapter is not None:
            adapter.load_state_dict(state["adapter"])
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        start = int(state["iteration"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        streak = int(state.get("nonfinite_streak", 0))
        if main:
            dropped = folder.truncate_metrics(start)
            logger.info(
                "resumed from %s at iteration %d (%d later metric records dropped)",
                folder.last,
                start,
                dropped,
            )

    core_student = student
    if info.enabled:
        student = convert_sync_batchnorm(student, device)
        core_student = student
        student = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )
        if critic is not None:
            critic_optimizer = AllReduceOptimizer(critic_optimizer, critic.parameters())
        if adapter is not None:
            optimizer = AllReduceOptimizer(optimizer, adapter.parameters())

    if main:
        folder.root.mkdir(parents=True, exist_ok=True)
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        if not resuming:
            save_config(cfg, folder.config)
        atomic_write_json(folder.env, environment_info(device, world_size=info.world_size))
    log = _Logger(folder, enabled=main, tensorboard=t_cfg.tensorboard)

    critic_generator = torch.Generator(device=device) if critic is not None else None
    ctx = StepContext(
        distill=d_cfg,
        aux_weight=t_cfg.aux_weight,
        ignore_index=getattr(train_set, "ignore_index", _IGNORE_INDEX),
        autocast_dtype=autocast_dtype,
        grad_scaler=scaler,
        critic_generator=critic_generator,
    )
    augment = TrainAugment(cfg.data.crop_size, scale_range=cfg.data.scale_range, flip=cfg.data.flip)
    workers = cfg.data.num_workers
    if workers is None:
        workers = min(4, max(0, (os.cpu_count() or 1) // max(1, info.world_size) - 1))
    sampler = _BatchSampler(
        len(train_set),
        start=start,
        stop=t_cfg.max_iters,
        batch_size=cfg.data.batch_size,
        seed=t_cfg.seed,
        info=info,
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    unlabeled_loader: Any = itertools.repeat(None)
    unlabeled_size = cfg.data.unlabeled.batch_size
    if unlabeled_set is not None:
        # Its own sample order (seed stream "unlabeled"), a function of the iteration like the
        # labelled one.
        unlabeled_sampler = _BatchSampler(
            len(unlabeled_set),
            start=start,
            stop=t_cfg.max_iters,
            batch_size=unlabeled_size,
            seed=derive_seed(t_cfg.seed, "unlabeled"),
            info=info,
        )
        unlabeled_loader = torch.utils.data.DataLoader(
            unlabeled_set,
            batch_sampler=unlabeled_sampler,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        logger.info(
            "unlabeled stream: %d images from %s (%s), %d per step beside %d labelled",
            len(unlabeled_set),
            cfg.data.unlabeled.root,
            cfg.data.unlabeled.name,
            unlabeled_size,
            cfg.data.batch_size,
        )

    def evaluate_now() -> dict[str, Any]:
        return evaluate(
            core_student,
            val_set,
            num_classes=num_classes,
            device=device,
            mode=cfg.eval.mode,
            flip=cfg.eval.flip,
            crop_size=tuple(cfg.eval.crop_size or cfg.data.crop_size),
            stride_rate=cfg.eval.stride_rate,
            rank=info.rank,
            world_size=info.world_size,
        )

    def checkpoint(iteration: int) -> None:
        if not main:
            return
        save_checkpoint(
            folder.last,
            {
                "format": CHECKPOINT_FORMAT,
                "iteration": iteration,
                "config_hash": config_hash(cfg),
                "student": core_student.state_dict(),
                "critic": critic.state_dict() if critic is not None else None,
                "adapter": adapter.state_dict() if adapter is not None else None,
                "optimizer": optimizer.state_dict(),
                "critic_optimizer": critic_optimizer.state_dict()
                if critic_optimizer is not None
                else None,
                "scheduler": {
                    "kind": "poly",
                    "power": t_cfg.poly_power,
                    "max_iters": t_cfg.max_iters,
                    "base_lr": t_cfg.lr,
                    "disc_base_lr": d_cfg.disc_lr,
                    "iteration": iteration,
                },
                "grad_scaler": scaler.state_dict() if scaler is not None else None,
                "rng": _rng_state(),
                "elapsed_s": elapsed_before + (time.perf_counter() - t0),
                "nonfinite_streak": streak,
            },
        )

    from tqdm.auto import tqdm

    bar = tqdm(
        total=t_cfg.max_iters,
        initial=start,
        desc=cfg.name,
        dynamic_ncols=True,
        disable=not (progress and main and sys.stderr.isatty()),
    )
    student.train()
    if critic is not None:
        critic.train()
    t0 = time.perf_counter()
    last_logged = time.perf_counter()
    try:
        for iteration, batch, unlabeled_batch in zip(
            range(start, t_cfg.max_iters), loader, unlabeled_loader, strict=False
        ):
            torch.manual_seed(derive_seed(t_cfg.seed, "torch", iteration, info.rank))
            if critic_generator is not None:
                critic_generator.manual_seed(
                    derive_seed(t_cfg.seed, "critic", iteration, info.rank)
                )
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            positions = _positions(iteration, cfg.data.batch_size, info.world_size, info.rank)
            params = []
            for p in positions:
                generator = torch.Generator().manual_seed(derive_seed(t_cfg.seed, "augment", p))
                params.extend(augment.sample_params(1, image.shape[2], image.shape[3], generator))
            image, label = augment.apply(
                image, label, params
            )  # (B, 3, h, w), (B, h, w) at the crop size
            if unlabeled_batch is not None:
                u_image = unlabeled_batch["image"].to(device, non_blocking=True)
                u_label = unlabeled_batch["label"].to(device, non_blocking=True)  # all ignore
                u_params = []
                for p in _positions(iteration, unlabeled_size, info.world_size, info.rank):
                    generator = torch.Generator().manual_seed(
                        derive_seed(t_cfg.seed, "augment-unlabeled", p)
                    )
                    u_params.extend(
                        augment.sample_params(1, u_image.shape[2], u_image.shape[3], generator)
                    )
                u_image, _ = augment.apply(
                    u_image, u_label, u_params
                )  # (M, 3, h, w) at the crop size
                # (B, 3, h, w) + (M, 3, h, w) -> (B + M, 3, h, w); labels of the M rows all ignore
                image, label = with_unlabeled(image, label, u_image, ignore_index=ctx.ignore_index)
            if memory_format is torch.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            lr = poly_lr(t_cfg.lr, iteration, t_cfg.max_iters, t_cfg.poly_power)
            _set_lr(optimizer, lr)
            if critic_optimizer is not None:
                _set_lr(
                    critic_optimizer,
                    poly_lr(d_cfg.disc_lr, iteration, t_cfg.max_iters, t_cfg.poly_power),
                )
            terms = distill_step(
                student=student,
                teacher=teacher,
                optimizer=optimizer,
                image=image,
                label=label,
                ctx=ctx,
                critic=critic,
                critic_optimizer=critic_optimizer,
                adapter=adapter,
            )
            done = iteration + 1
            skipped = terms.get("skipped_student", 0.0) > 0 or terms.get("skipped_critic", 0.0) > 0
            if skipped:
                streak += 1
                bad = sorted(k for k, v in terms.items() if not math.isfinite(v))
                logger.warning(
                    "iteration %d: non-finite loss (terms %s), step skipped (%d in a row)",
                    done,
                    bad,
                    streak,
                )
                log.record(
                    {
                        "iter": done,
                        "lr": lr,
                        **terms,
                        "nonfinite": bad,
                        "time": time.perf_counter() - t0 + elapsed_before,
                    }
                )
                if streak >= t_cfg.max_nonfinite:
                    raise NonFiniteLossError(
                        f"iteration {done}: {streak} consecutive non-finite losses "
                        f"(train.max_nonfinite={t_cfg.max_nonfinite}); non-finite terms {bad}; the "
                        f"last good checkpoint is {folder.last}"
                    )
            else:
                streak = 0
            bar.update(1)
            if done % t_cfg.log_every == 0 and not skipped:
                now = time.perf_counter()
                record = {
                    "iter": done,
                    "lr": lr,
                    **terms,
                    "time": now - t0 + elapsed_before,
                    "sec_per_iter": (now - last_logged) / t_cfg.log_every,
                }
                last_logged = now
                log.record(record)
                if main:
                    logger.info(
                        "iter %d/%d lr %.3g %s",
                        done,
                        t_cfg.max_iters,
                        lr,
                        " ".join(
                            f"{k} {v:.4g}" for k, v in terms.items() if not k.startswith("skipped")
                        ),
                    )
                bar.set_postfix(
                    {k: f"{terms[k]:.3g}" for k in ("total", "pixel", "pair", "gen") if k in terms}
                )
            if t_cfg.eval_every and done % t_cfg.eval_every == 0 and done < t_cfg.max_iters:
                scores = evaluate_now()
                log.record(
                    {
                        "iter": done,
                        "split": "val",
                        "miou": _json_float(scores["miou"]),
                        "pixel_acc": _json_float(scores["pixel_acc"]),
                    }
                )
                if main:
                    logger.info(
                        "iter %d val miou %.4f pixel_acc %.4f",
                        done,
                        scores["miou"],
                        scores["pixel_acc"],
                    )
            if (
                t_cfg.checkpoint_every
                and done % t_cfg.checkpoint_every == 0
                and done < t_cfg.max_iters
                and not skipped
            ):
                checkpoint(done)
    finally:
        bar.close()
        log.close()

    checkpoint(t_cfg.max_iters)
    scores = evaluate_now()
    wall = elapsed_before + (time.perf_counter() - t0)
    log.record(
        {
            "iter": t_cfg.max_iters,
            "split": "val",
            "miou": _json_float(scores["miou"]),
            "pixel_acc": _json_float(scores["pixel_acc"]),
        }
    )
    summary: dict[str, Any] = {}
    if main:
        from skdlib.metrics import scores_to_json

        save_checkpoint(folder.final, core_student.state_dict())
        json_scores = scores_to_json(scores)
        summary = {
            "name": cfg.name,
            "miou": json_scores["miou"],
            "class_iou": json_scores["class_iou"],
            "pixel_acc": json_scores["pixel_acc"],
            "class_names": list(getattr(val_set, "class_names", [])),
            "num_val_images": scores["num_images"],
            "iterations": t_cfg.max_iters,
            "wall_time_s": wall,
            "params": cost.params,
            "params_total": cost.params_total,
            "flops": cost.flops,
            "macs": cost.macs,
            "flops_input_size": list(cfg.data.crop_size),
            "flops_convention": "torch.utils.flop_counter, batch 1, eval mode; flops = 2 * macs "
            "(1 multiply-add = 2 FLOPs; the paper's GFLOPs are GMACs)",
            "eval": {"mode": cfg.eval.mode, "flip": cfg.eval.flip},
            "world_size": info.world_size,
            "device": str(device),
            "config_hash": config_hash(cfg),
            "finished": True,
        }
        atomic_write_json(folder.summary, summary)
        logger.info("finished %s: val miou %.4f in %.1f s", cfg.name, scores["miou"], wall)
    return summary


def _broadcast_flags(info: DistInfo, *flags: bool) -> tuple[bool, ...]:
    """Rank 0's boolean flags on every rank (identity without a process group)."""
    if not info.enabled:
        return tuple(flags)
    import torch.distributed as dist

    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    values = torch.tensor([int(f) for f in flags], device=device)
    dist.broadcast(values, src=0)
    return tuple(bool(v) for v in values.tolist())
