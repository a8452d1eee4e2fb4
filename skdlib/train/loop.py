"""The training loop: ``train(cfg, run_dir)`` runs one experiment into a run folder.

Each iteration, as in the paper: the teacher's forward pass (eval mode, no gradient), a student
update with the critic fixed, a critic update with the student fixed (all in
:func:`skdlib.train.step.distill_step`). The optimisers come from :mod:`skdlib.train.build`; both
follow the poly schedule ``lr * (1 - it / max_iters) ** poly_power``, set from the iteration
number before every step.

The loop reads as three parts: :func:`_setup` (folder checks, networks, optimisers, a resumed
state, loaders) returns a :class:`_State`; :func:`_iteration` runs one iteration on it (step,
logging, validation, checkpoint); :func:`_finish` writes the final checkpoint and the summary.

Reproducibility and exact resume: every random number is a function of ``(seed, iteration)``.
The sample order and the augmentation parameters are seeded per sample position
(:mod:`skdlib.train.sampling`); the global torch generator (dropout) and the gradient penalty's
generator are re-seeded every iteration from ``(seed, iteration, rank)``.

Unlabeled images (``data.unlabeled``, off by default): each iteration also draws
``data.unlabeled.batch_size`` images from a second data set, in a sample order of their own (the
seed stream ``"unlabeled"``) and with augmentation parameters of their own stream. They are
appended to the labelled batch with all-ignore labels (:func:`skdlib.train.step.with_unlabeled`):
the task loss counts labelled pixels only, the distillation terms and the critic see every image.

A resumed run therefore needs only the iteration number and the optimiser states: on CPU,
``N`` iterations straight and ``N/2`` + resume + ``N/2`` give identical weights.

Run folder: see :mod:`skdlib.train.runfolder`. ``data.batch_size`` is per process (see
:mod:`skdlib.train.distributed`); only rank 0 writes files.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skdlib.constants import IGNORE_INDEX
from skdlib.train import step
from skdlib.train.build import (
    autocast_dtype,
    build_critic_optimizer,
    build_dataset_for,
    build_models,
    build_student_optimizer,
    build_unlabeled_dataset,
    make_train_loader,
    num_classes_of,
    resolve_device,
    train_augment,
)
from skdlib.train.config import ExperimentConfig, config_hash, save_config
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
from skdlib.train.sampling import batch_params, batch_positions, derive_seed
from skdlib.train.teacher_cache import TeacherCache, augmentation_key
from skdlib.train.teacher_store import LABELLED_STREAM, UNLABELED_STREAM, StoreSet, open_stores
from skdlib.train.terms import active_terms, needs_features

__all__ = [
    "CHECKPOINT_FORMAT",
    "NonFiniteLossError",
    "RunFolderError",
    "poly_lr",
    "train",
]

logger = logging.getLogger(__name__)

#: Version of the ``last.pt`` layout.
CHECKPOINT_FORMAT = 1


class RunFolderError(FileExistsError):
    """The run folder holds a run that this call must not overwrite (see the message for the
    fix)."""


class NonFiniteLossError(RuntimeError):
    """Too many consecutive iterations had a non-finite loss."""


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float) -> float:
    """``base_lr * (1 - iteration / max_iters) ** power`` (the paper's schedule)."""
    if max_iters < 1 or not 0 <= iteration <= max_iters:
        raise ValueError(f"iteration must lie in [0, max_iters={max_iters}], got {iteration}")
    return base_lr * (1.0 - iteration / max_iters) ** power


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
    dtype = autocast_dtype(cfg, device)
    if dtype is None:
        if cfg.train.amp != "none":
            logger.info(
                "train.amp=%s applies on CUDA only; running float32 on %s", cfg.train.amp, device
            )
        return None, None
    return dtype, (torch.amp.GradScaler("cuda") if dtype == torch.float16 else None)


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


# --------------------------------------------------------------------------------------------------
# The loop: set-up, one iteration, finish
# --------------------------------------------------------------------------------------------------
@dataclass
class _State:
    """Everything one run holds while it trains (built by :func:`_setup`)."""

    cfg: ExperimentConfig
    folder: RunFolder
    info: DistInfo
    device: torch.device
    student: nn.Module  #: what the step calls (DistributedDataParallel under torchrun)
    core_student: nn.Module  #: the network itself (saved, evaluated)
    teacher: nn.Module | None
    critic: nn.Module | None
    adapter: nn.Module | None
    optimizer: Any
    critic_optimizer: Any
    scaler: torch.amp.GradScaler | None
    ctx: step.StepContext
    memory_format: torch.memory_format
    val_set: Any
    num_classes: int
    cost: Any  #: the student's complexity (rank 0), for the summary
    log: _Logger | None = None
    augment: Any = None
    teacher_cache: TeacherCache | None = None
    #: The teacher-output stores the cache reads, by stream (``env.json`` names them).
    stores: dict[str, str] | None = None
    start: int = 0
    elapsed_before: float = 0.0
    streak: int = 0
    t0: float = 0.0
    last_logged: float = 0.0

    @property
    def main(self) -> bool:
        return self.info.is_main

    def elapsed(self) -> float:
        """Training seconds, the time before a resume included."""
        return self.elapsed_before + (time.perf_counter() - self.t0)


def train(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    teacher_store: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` and return the summary (also written to ``summary.json``).

    Args:
        cfg: the experiment.
        run_dir: the run folder (created).
        resume: continue from ``checkpoints/last.pt`` (the config must hash the same).
        force: delete a previous run's files in ``run_dir`` first.
        progress: show a tqdm progress bar (only when stderr is a terminal).
        teacher_store: a folder of teacher-output stores (:mod:`skdlib.train.teacher_store`)
            that the teacher cache (``train.teacher_cache``) reads instead of computing: the
            same values bit for bit, so no part of the config; a stream without a matching
            store is computed as without one.

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
        folder = RunFolder(Path(run_dir))
        state, loaders = _setup(cfg, folder, info, device, resume, force, teacher_store)
        _loop(state, loaders, progress=progress)
        return _finish(state)
    finally:
        cleanup(created)


def _check_folder(
    folder: RunFolder, cfg: ExperimentConfig, info: DistInfo, *, resume: bool, force: bool
) -> bool:
    """Rank 0 checks what the folder holds, the others learn the outcome; True when resuming."""
    error: BaseException | None = None
    resuming = False
    if info.is_main:
        try:
            resuming = _prepare_folder(folder, cfg, resume=resume, force=force)
        except (RunFolderError, ValueError) as exc:
            error = exc
    resuming, failed = _broadcast_flags(info, resuming, error is not None)
    if error is not None:
        raise error
    if failed:
        raise RunFolderError(f"rank 0 refused the run folder {folder.root} (see its log)")
    return resuming


def _setup(
    cfg: ExperimentConfig,
    folder: RunFolder,
    info: DistInfo,
    device: torch.device,
    resume: bool,
    force: bool,
    teacher_store: str | os.PathLike[str] | None = None,
) -> tuple[_State, tuple[Iterable[Any], Iterable[Any]]]:
    """Check the folder, build data, networks and optimisers, restore a resumed run, write the
    run's config and environment; the state and the (labelled, unlabeled) loaders."""
    from skdlib.models import complexity

    resuming = _check_folder(folder, cfg, info, resume=resume, force=force)
    train_set = build_dataset_for(cfg, cfg.data.train_split)
    val_set = build_dataset_for(cfg, cfg.data.val_split)
    num_classes = num_classes_of(cfg, train_set)
    # Initial weights are a function of the seed alone (the same on every rank, whatever ran
    # before).
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    student, teacher, critic, adapter = build_models(cfg, num_classes)
    cost = complexity(student, tuple(cfg.data.crop_size)) if info.is_main else None
    autocast_dtype, scaler = _amp(cfg, device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    for network in (student, teacher):
        if network is not None:
            network.to(device=device, memory_format=memory_format)
    for module in (critic, adapter):
        if module is not None:
            module.to(device)
    state = _State(
        cfg=cfg,
        folder=folder,
        info=info,
        device=device,
        student=student,
        core_student=student,
        teacher=teacher,
        critic=critic,
        adapter=adapter,
        optimizer=build_student_optimizer(cfg, student, adapter),
        critic_optimizer=build_critic_optimizer(cfg, critic) if critic is not None else None,
        scaler=scaler,
        ctx=step.StepContext(
            distill=cfg.distill,
            aux_weight=cfg.train.aux_weight,
            ignore_index=getattr(train_set, "ignore_index", IGNORE_INDEX),
            autocast_dtype=autocast_dtype,
            grad_scaler=scaler,
            critic_generator=torch.Generator(device=device) if critic is not None else None,
        ),
        memory_format=memory_format,
        val_set=val_set,
        num_classes=num_classes,
        cost=cost,
        augment=train_augment(cfg),
    )
    if cfg.train.teacher_cache and teacher is not None:
        _cache(state, teacher_store)
    elif teacher_store is not None:
        logger.info("teacher-output store: read by runs with train.teacher_cache only")
    if resuming:
        _restore(state)
    _wrap_distributed(state)
    _write_run_files(state, resuming=resuming)
    return state, _loaders(state, train_set)


def _cache(state: _State, teacher_store: str | os.PathLike[str] | None) -> None:
    """The teacher cache, reading the teacher-output stores under ``teacher_store`` that match
    this run (its streams' keys, this device and thread count)."""
    cfg = state.cfg
    feature = cfg.distill.pair_feature if needs_features(cfg.distill) else None
    forward = functools.partial(step.teacher_forward, ctx=state.ctx)
    stores = {}
    if teacher_store is not None:
        threads = torch.get_num_threads()
        stores = open_stores(
            teacher_store, cfg, device=state.device, threads=threads, feature=feature
        )
    state.stores = {stream: str(store.folder) for stream, store in stores.items()}
    reader = StoreSet(stores) if stores else None
    state.teacher_cache = TeacherCache(state.teacher, forward, feature=feature, store=reader)


def _restore(state: _State) -> None:
    """Load ``last.pt`` into the networks and optimisers; the iteration to start from."""
    cfg, folder = state.cfg, state.folder
    saved = load_checkpoint(folder.last, map_location=state.device)
    if saved.get("config_hash") != config_hash(cfg):
        raise ValueError(
            f"--resume: {folder.last} was written for config hash {saved.get('config_hash')}, "
            f"this config hashes to {config_hash(cfg)}"
        )
    state.student.load_state_dict(saved["student"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.critic is not None:
        state.critic.load_state_dict(saved["critic"])
        state.critic_optimizer.load_state_dict(saved["critic_optimizer"])
    if state.adapter is not None:
        state.adapter.load_state_dict(saved["adapter"])
    if state.scaler is not None and saved.get("grad_scaler"):
        state.scaler.load_state_dict(saved["grad_scaler"])
    state.start = int(saved["iteration"])
    state.elapsed_before = float(saved.get("elapsed_s", 0.0))
    state.streak = int(saved.get("nonfinite_streak", 0))
    if state.main:
        dropped = folder.truncate_metrics(state.start)
        logger.info(
            "resumed from %s at iteration %d (%d later metric records dropped)",
            folder.last,
            state.start,
            dropped,
        )


def _wrap_distributed(state: _State) -> None:
    """Under torchrun: synchronised batch-norm and DDP for the student; the critic's and the
    adapter's gradients averaged by :class:`AllReduceOptimizer`."""
    if not state.info.enabled:
        return
    core = convert_sync_batchnorm(state.student, state.device)
    device_ids = [state.device.index] if state.device.type == "cuda" else None
    state.core_student = core
    state.student = nn.parallel.DistributedDataParallel(core, device_ids=device_ids)
    if state.critic is not None:
        state.critic_optimizer = AllReduceOptimizer(
            state.critic_optimizer, state.critic.parameters()
        )
    if state.adapter is not None:
        state.optimizer = AllReduceOptimizer(state.optimizer, state.adapter.parameters())


def _write_run_files(state: _State, *, resuming: bool) -> None:
    """``config.yaml`` (a new run), ``env.json`` and the metrics logger (rank 0 writes)."""
    folder = state.folder
    if state.main:
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        if not resuming:
            save_config(state.cfg, folder.config)
        env = environment_info(state.device, world_size=state.info.world_size)
        atomic_write_json(folder.env, {**env, "teacher_stores": state.stores})
    state.log = _Logger(folder, enabled=state.main, tensorboard=state.cfg.train.tensorboard)


def _loaders(state: _State, train_set: Any) -> tuple[Iterable[Any], Iterable[Any]]:
    """The labelled loader and the unlabeled one (``None`` forever when the stream is off), both
    from the state's start iteration."""
    cfg, info = state.cfg, state.info
    common = {
        "start": state.start,
        "stop": cfg.train.max_iters,
        "num_workers": cfg.data.num_workers,
        "device": state.device,
        "world_size": info.world_size,
        "rank": info.rank,
    }
    loader = make_train_loader(
        train_set, batch_size=cfg.data.batch_size, seed=cfg.train.seed, **common
    )
    unlabeled_set = build_unlabeled_dataset(cfg)
    if unlabeled_set is None:
        return loader, itertools.repeat(None)
    unl = cfg.data.unlabeled
    logger.info(
        "unlabeled stream: %d images from %s (%s), %d per step beside %d labelled",
        len(unlabeled_set),
        unl.root,
        unl.name,
        unl.batch_size,
        cfg.data.batch_size,
    )
    # Its own sample order (seed stream "unlabeled"), a function of the iteration like the
    # labelled one.
    seed = derive_seed(cfg.train.seed, "unlabeled")
    return loader, make_train_loader(unlabeled_set, batch_size=unl.batch_size, seed=seed, **common)


def _loop(state: _State, loaders: tuple[Iterable[Any], Iterable[Any]], *, progress: bool) -> None:
    """Every iteration from the state's start to ``train.max_iters``."""
    from tqdm.auto import tqdm

    max_iters = state.cfg.train.max_iters
    bar = tqdm(
        total=max_iters,
        initial=state.start,
        desc=state.cfg.name,
        dynamic_ncols=True,
        disable=not (progress and state.main and sys.stderr.isatty()),
    )
    state.student.train()
    if state.critic is not None:
        state.critic.train()
    state.t0 = state.last_logged = time.perf_counter()
    batches = zip(range(state.start, max_iters), *loaders, strict=False)
    try:
        for iteration, batch, unlabeled_batch in batches:
            terms = _iteration(state, iteration, batch, unlabeled_batch)
            bar.update(1)
            if (iteration + 1) % state.cfg.train.log_every == 0:
                shown = ("total", *(t.name for t in active_terms(state.cfg.distill)))
                bar.set_postfix({k: f"{terms[k]:.3g}" for k in shown if k in terms})
    finally:
        bar.close()
        state.log.close()


def _batch(
    state: _State, iteration: int, batch: dict[str, Any], unlabeled: dict[str, Any] | None
) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """The iteration's augmented input: ``(B [+ M], 3, h, w)`` images and ``(B [+ M], h, w)``
    labels (the ``M`` unlabeled rows all ignore), and each image's augmentation key."""
    cfg, info, device = state.cfg, state.info, state.device
    seed = cfg.train.seed

    def augmented(data: dict[str, Any], size: int, stream: str) -> tuple[Any, ...]:
        positions = batch_positions(iteration, size, info.world_size, info.rank)
        image = data["image"].to(device, non_blocking=True)
        label = data["label"].to(device, non_blocking=True)
        h, w = image.shape[-2:]
        params = batch_params(state.augment, h, w, positions=positions, seed=seed, stream=stream)
        keys = [augmentation_key(stream, i, p) for i, p in zip(data["index"], params, strict=True)]
        # (B, 3, H, W), (B, H, W) -> (B, 3, h, w), (B, h, w) at the crop size
        return (*state.augment.apply(image, label, params), keys)

    image, label, keys = augmented(batch, cfg.data.batch_size, LABELLED_STREAM)
    if unlabeled is not None:
        u_image, _, u_keys = augmented(unlabeled, cfg.data.unlabeled.batch_size, UNLABELED_STREAM)
        # (B, 3, h, w) + (M, 3, h, w) -> (B + M, 3, h, w); labels of the M rows all ignore
        image, label = step.with_unlabeled(
            image, label, u_image, ignore_index=state.ctx.ignore_index
        )
        keys += u_keys
    if state.memory_format is torch.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, label, keys


def _iteration(
    state: _State, iteration: int, batch: dict[str, Any], unlabeled: dict[str, Any] | None
) -> dict[str, float]:
    """One iteration: seeds, learning rates, the two-step distillation step, then the records,
    a validation and a checkpoint when they are due. Returns the step's terms."""
    t = state.cfg.train
    rank = state.info.rank
    torch.manual_seed(derive_seed(t.seed, "torch", iteration, rank))
    if state.ctx.critic_generator is not None:
        state.ctx.critic_generator.manual_seed(derive_seed(t.seed, "critic", iteration, rank))
    image, label, keys = _batch(state, iteration, batch, unlabeled)
    cache = state.teacher_cache
    teacher_out = cache(image, keys) if cache is not None else None
    lr = poly_lr(t.lr, iteration, t.max_iters, t.poly_power)
    _set_lr(state.optimizer, lr)
    if state.critic_optimizer is not None:
        disc_lr = poly_lr(state.cfg.distill.disc_lr, iteration, t.max_iters, t.poly_power)
        _set_lr(state.critic_optimizer, disc_lr)
    # Looked up at call time (step.distill_step), so tests can wrap it.
    terms = step.distill_step(
        student=state.student,
        teacher=state.teacher,
        optimizer=state.optimizer,
        image=image,
        label=label,
        ctx=state.ctx,
        critic=state.critic,
        critic_optimizer=state.critic_optimizer,
        adapter=state.adapter,
        teacher_out=teacher_out,
    )
    done = iteration + 1
    skipped = terms.get("skipped_student", 0.0) > 0 or terms.get("skipped_critic", 0.0) > 0
    if skipped:
        _skipped(state, done, lr, terms)
    else:
        state.streak = 0
        if done % t.log_every == 0:
            _record_terms(state, done, lr, terms)
    if t.eval_every and done % t.eval_every == 0 and done < t.max_iters:
        _validate(state, done)
    due = t.checkpoint_every and done % t.checkpoint_every == 0
    if due and done < t.max_iters and not skipped:
        _checkpoint(state, done)
    return terms


def _skipped(state: _State, done: int, lr: float, terms: dict[str, float]) -> None:
    """Record a skipped (non-finite) step; stop after ``train.max_nonfinite`` in a row."""
    state.streak += 1
    bad = sorted(k for k, v in terms.items() if not math.isfinite(v))
    logger.warning(
        "iteration %d: non-finite loss (terms %s), step skipped (%d in a row)",
        done,
        bad,
        state.streak,
    )
    state.log.record({"iter": done, "lr": lr, **terms, "nonfinite": bad, "time": state.elapsed()})
    limit = state.cfg.train.max_nonfinite
    if state.streak >= limit:
        raise NonFiniteLossError(
            f"iteration {done}: {state.streak} consecutive non-finite losses "
            f"(train.max_nonfinite={limit}); non-finite terms {bad}; the "
            f"last good checkpoint is {state.folder.last}"
        )


def _record_terms(state: _State, done: int, lr: float, terms: dict[str, float]) -> None:
    """A training record in ``metrics.jsonl`` and one log line."""
    now = time.perf_counter()
    log_every = state.cfg.train.log_every
    state.log.record(
        {
            "iter": done,
            "lr": lr,
            **terms,
            "time": state.elapsed(),
            "sec_per_iter": (now - state.last_logged) / log_every,
        }
    )
    state.last_logged = now
    if state.main:
        shown = " ".join(f"{k} {v:.4g}" for k, v in terms.items() if not k.startswith("skipped"))
        logger.info("iter %d/%d lr %.3g %s", done, state.cfg.train.max_iters, lr, shown)


def _evaluate(state: _State) -> dict[str, Any]:
    """The student's scores on the validation split (each process its share under torchrun)."""
    from skdlib.evaluate import evaluate

    cfg = state.cfg
    return evaluate(
        state.core_student,
        state.val_set,
        num_classes=state.num_classes,
        device=state.device,
        mode=cfg.eval.mode,
        flip=cfg.eval.flip,
        crop_size=tuple(cfg.eval.crop_size or cfg.data.crop_size),
        stride_rate=cfg.eval.stride_rate,
        rank=state.info.rank,
        world_size=state.info.world_size,
        normalization=cfg.data.normalize,
    )


def _validate(state: _State, done: int) -> dict[str, Any]:
    """Evaluate, record ``{"split": "val", miou, pixel_acc}`` at ``done``; the scores."""
    scores = _evaluate(state)
    miou, acc = scores["miou"], scores["pixel_acc"]
    record = {"iter": done, "split": "val", "miou": _json_float(miou)}
    state.log.record({**record, "pixel_acc": _json_float(acc)})
    if state.main:
        logger.info("iter %d val miou %.4f pixel_acc %.4f", done, miou, acc)
    return scores


def _checkpoint(state: _State, iteration: int) -> None:
    """``last.pt``: everything a resume needs (rank 0 writes)."""
    if not state.main:
        return

    def saved(module: Any) -> Any:
        return module.state_dict() if module is not None else None

    save_checkpoint(
        state.folder.last,
        {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "config_hash": config_hash(state.cfg),
            "student": state.core_student.state_dict(),
            "critic": saved(state.critic),
            "adapter": saved(state.adapter),
            "optimizer": state.optimizer.state_dict(),
            "critic_optimizer": saved(state.critic_optimizer),
            "grad_scaler": saved(state.scaler),
            "elapsed_s": state.elapsed(),
            "nonfinite_streak": state.streak,
        },
    )


def _finish(state: _State) -> dict[str, Any]:
    """The final checkpoint, validation, ``final.pt`` and ``summary.json`` (rank 0); the
    summary (empty on the other ranks)."""
    from skdlib.metrics import scores_to_json

    cfg, folder = state.cfg, state.folder
    _checkpoint(state, cfg.train.max_iters)
    scores = _validate(state, cfg.train.max_iters)
    wall = state.elapsed()
    if not state.main:
        return {}
    save_checkpoint(folder.final, state.core_student.state_dict())
    json_scores = scores_to_json(scores)
    cost = state.cost
    summary = {
        "name": cfg.name,
        "miou": json_scores["miou"],
        "class_iou": json_scores["class_iou"],
        "pixel_acc": json_scores["pixel_acc"],
        "class_names": list(getattr(state.val_set, "class_names", [])),
        "num_val_images": scores["num_images"],
        "iterations": cfg.train.max_iters,
        "wall_time_s": wall,
        "params": cost.params,
        "params_total": cost.params_total,
        "flops": cost.flops,
        "macs": cost.macs,
        "flops_input_size": list(cfg.data.crop_size),
        "flops_convention": "torch.utils.flop_counter, batch 1, eval mode; flops = 2 * macs "
        "(1 multiply-add = 2 FLOPs; the paper's GFLOPs are GMACs)",
        "eval": {"mode": cfg.eval.mode, "flip": cfg.eval.flip},
        "world_size": state.info.world_size,
        "device": str(state.device),
        "config_hash": config_hash(cfg),
        "finished": True,
    }
    atomic_write_json(folder.summary, summary)
    cache = state.teacher_cache
    if cache is not None:
        logger.info(
            "teacher outputs: %d computed, %d read from stores, %d reused",
            cache.misses,
            cache.reads,
            cache.hits,
        )
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
