"""Every factory from a configuration to an object: device, data sets, loaders, networks, the
critic, the MIMIC adapter, optimisers, a network read back from a run folder, and the pinning of
relative paths.

The training loop, evaluation, the analysis helpers and the benchmarks build what they need here,
so a configuration means the same objects everywhere. Nothing here trains or writes files.

Relative paths in a configuration (``data.root``, ``data.unlabeled.root``,
``model.student_pretrained``) are read relative to the current directory, like any command-line
path; :func:`load_config_pinned` makes them absolute against a chosen base (the pipeline pins
them to its project root, so a run does not depend on the directory it runs in).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skdlib.constants import DECODED_CACHE_BYTES, IGNORE_INDEX
from skdlib.train.config import (
    ExperimentConfig,
    apply_overrides,
    config_hash,
    load_config,
    validate_with_model,
)
from skdlib.train.runfolder import RunFolder, load_checkpoint
from skdlib.train.terms import needs_adapter, needs_critic

__all__ = [
    "PINNED_PATHS",
    "PORTABLE_PATHS",
    "WithoutLabels",
    "autocast_dtype",
    "build_adapter",
    "build_critic",
    "build_critic_optimizer",
    "build_dataset_for",
    "build_models",
    "build_network",
    "build_student",
    "build_student_optimizer",
    "build_teacher",
    "build_unlabeled_dataset",
    "embedded_data_sets",
    "load_config_pinned",
    "load_run_critic",
    "load_run_network",
    "make_train_loader",
    "num_classes_of",
    "portable_config_hash",
    "resolve_device",
    "torch_threads",
    "train_augment",
]

logger = logging.getLogger(__name__)

#: Configuration keys holding file paths that :func:`load_config_pinned` makes absolute.
PINNED_PATHS = ("data.root", "data.unlabeled.root", "model.student_pretrained")
#: Every config field that holds a file path (the pipeline also sets the teacher's weights):
#: :func:`portable_config_hash` writes them relative to the folders they lie in.
PORTABLE_PATHS = (*PINNED_PATHS, "model.teacher_checkpoint")


# --------------------------------------------------------------------------------------------------
# Device and paths
# --------------------------------------------------------------------------------------------------
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


def autocast_dtype(cfg: ExperimentConfig, device: torch.device) -> torch.dtype | None:
    """The dtype of ``train.amp``'s autocast on ``device`` (CUDA only), ``None`` elsewhere."""
    if device.type != "cuda" or cfg.train.amp == "none":
        return None
    return torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (``None``: unchanged), restoring the
    setting after, also when the block raises."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _dotted(cfg: ExperimentConfig, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def load_config_pinned(
    preset: str | os.PathLike[str],
    overrides: Sequence[str],
    base: str | os.PathLike[str],
) -> tuple[list[str], ExperimentConfig]:
    """:func:`load_config` of ``preset`` + ``overrides`` with the relative file paths of
    :data:`PINNED_PATHS` made absolute against ``base``.

    Returns the overrides with the pins appended (``key="<absolute path>"``) and the config they
    make, so the same list given to a run elsewhere (a notebook, a cluster job) makes the same
    config.
    """
    cfg = load_config(preset, overrides)
    pins = []
    for key in PINNED_PATHS:
        value = _dotted(cfg, key)
        if value is not None and not Path(value).expanduser().is_absolute():
            pins.append(f"{key}={json.dumps(str(Path(base) / Path(value).expanduser()))}")
    pinned = [*overrides, *pins]
    return pinned, (load_config(preset, pinned) if pins else cfg)


def portable_config_hash(
    cfg: ExperimentConfig,
    root: str | os.PathLike[str],
    *,
    named: Mapping[str, str | os.PathLike[str]] | None = None,
) -> str:
    """:func:`config_hash` of ``cfg`` with its file paths (:data:`PORTABLE_PATHS`) written
    relative to the folders they lie in, so the same run set up in another checkout, or read from
    a runs tree mounted at another path, hashes the same.

    A path inside one of the ``named`` folders (checked first, e.g. ``{"runs": <runs root>,
    "data": <data base>}``) is written ``<name>/<relative path>``; else a path inside ``root``
    (the project root) is written relative to it, as the runs kept in the repository have always
    been matched; any other path is kept as it is. A named folder that holds ``root`` is not
    used (every path of the project would move with it).
    """
    base = Path(root).resolve()
    folders = []
    for name, folder in (named or {}).items():
        where = Path(folder).resolve()
        if not base.is_relative_to(where):
            folders.append((f"<{name}>", where))
    folders.append(("", base))
    relative = []
    for key in PORTABLE_PATHS:
        value = _dotted(cfg, key)
        if value is None or not Path(value).is_absolute():
            continue
        path = Path(value).resolve()
        for tag, folder in folders:
            if path.is_relative_to(folder):
                inside = path.relative_to(folder)
                text = f"{tag}/{inside}" if tag else str(inside)
                relative.append(f"{key}={json.dumps(text)}")
                break
    return config_hash(apply_overrides(cfg, relative) if relative else cfg)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def build_dataset_for(cfg: ExperimentConfig, split: str) -> Any:
    """The data set of ``split`` from ``cfg.data`` via :func:`skdlib.data.build_dataset`; the
    training split restricted to its first ``data.train_limit`` samples when that is set."""
    from skdlib.data import DataError, build_dataset

    dataset = build_dataset(cfg.data.name, cfg.data.root, split, **dict(cfg.data.options))
    _keep_decoded(dataset)
    limit = cfg.data.train_limit
    if limit is None or split != cfg.data.train_split:
        return dataset
    if limit > len(dataset):
        raise DataError(
            f"data.train_limit={limit}, but the {split!r} split of {cfg.data.root} has only "
            f"{len(dataset)} samples"
        )
    return dataset.first(limit)


def train_augment(cfg: ExperimentConfig) -> Any:
    """The training augmentation of ``cfg.data`` (crop, scaling, flip, normalisation): one
    :class:`~skdlib.data.transforms.TrainAugment` for the loop and the teacher-output store."""
    from skdlib.data.transforms import TrainAugment

    return TrainAugment(
        cfg.data.crop_size,
        scale_range=cfg.data.scale_range,
        flip=cfg.data.flip,
        normalization=cfg.data.normalize,
    )


def _keep_decoded(dataset: Any) -> None:
    """Decoded items kept in memory (:data:`skdlib.constants.DECODED_CACHE_BYTES`) where the data
    set can keep them."""
    keep = getattr(dataset, "keep_decoded", None)
    if keep is not None:
        keep(DECODED_CACHE_BYTES)


def embedded_data_sets(cfg: ExperimentConfig) -> list[tuple[Path, dict[str, Any]]]:
    """The embedded data sets ``cfg`` reads: ``(root, generator options)`` for its labelled data
    and for its unlabeled stream, when they are the embedded data set (the options are those of
    :data:`skdlib.data.generate.GENERATOR_OPTIONS`; others, such as ``class_groups``, act when
    the data set is read)."""
    from skdlib.data.generate import GENERATOR_OPTIONS

    found = []
    if cfg.data.name == "embedded":
        found.append((Path(cfg.data.root), dict(cfg.data.options)))
    unlabeled = cfg.data.unlabeled
    if unlabeled.enabled and unlabeled.name == "embedded" and unlabeled.root is not None:
        found.append((Path(unlabeled.root), dict(unlabeled.options)))
    return [
        (root, {k: v for k, v in options.items() if k in GENERATOR_OPTIONS})
        for root, options in found
    ]


class WithoutLabels(torch.utils.data.Dataset):
    """A labelled data set used as unlabeled images: every label replaced by ``ignore_index``."""

    def __init__(self, dataset: Any, ignore_index: int) -> None:
        self.dataset, self.ignore_index = dataset, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["label"] = torch.full_like(item["label"], self.ignore_index)  # (H, W), no labels
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
    _keep_decoded(dataset)
    if unl.name == "images":
        return dataset
    return WithoutLabels(dataset, getattr(dataset, "ignore_index", IGNORE_INDEX))


def num_classes_of(cfg: ExperimentConfig, dataset: Any) -> int:
    """``model.num_classes``, or the data set's class count when the config leaves it null."""
    return cfg.model.num_classes or dataset.num_classes


def make_train_loader(
    dataset: Any,
    *,
    start: int,
    stop: int,
    batch_size: int,
    seed: int,
    num_workers: int | None,
    device: torch.device,
    world_size: int = 1,
    rank: int = 0,
) -> torch.utils.data.DataLoader:
    """A loader yielding the batches of iterations ``start .. stop - 1`` of one process, in the
    seeded order of :class:`skdlib.train.sampling.BatchSampler`.

    ``num_workers=None`` takes ``min(4, cores per process - 1)`` loader processes.
    """
    from skdlib.train.sampling import BatchSampler, Indexed, collate

    if num_workers is None:
        num_workers = min(4, max(0, (os.cpu_count() or 1) // max(1, world_size) - 1))
    sampler = BatchSampler(
        len(dataset),
        start=start,
        stop=stop,
        batch_size=batch_size,
        seed=seed,
        world_size=world_size,
        rank=rank,
    )
    return torch.utils.data.DataLoader(
        Indexed(dataset),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------
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


def build_network(cfg: ExperimentConfig, num_classes: int, *, role: str) -> nn.Module:
    """``model.<role>`` (``"student"`` or ``"teacher"``) built with its variant, options and taps
    (``model.<role>_variant``, ``_options``, ``_taps``): :func:`skdlib.models.build_model` of a
    book network, a registered name or an import path. The one builder of training, evaluation
    and a run's network read back; no weights are loaded here."""
    from skdlib.models import build_model

    if role not in ("student", "teacher"):
        raise ValueError(f"role must be 'student' or 'teacher', got {role!r}")
    m = cfg.model
    name = getattr(m, role)
    if name is None:
        raise ValueError(f"model.{role}: no network is named (null)")
    if "num_classes" in getattr(m, f"{role}_options"):
        raise ValueError(
            f"model.{role}_options: num_classes is no option (it comes from model.num_classes "
            "or the data set, and reaches a factory that has a num_classes parameter)"
        )
    try:
        return build_model(
            name,
            num_classes,
            variant=getattr(m, f"{role}_variant"),
            taps=dict(getattr(m, f"{role}_taps")) or None,
            **dict(getattr(m, f"{role}_options")),
        )
    except ValueError as error:
        raise ValueError(f"model.{role}: {error}") from error


def build_teacher(cfg: ExperimentConfig, num_classes: int) -> nn.Module | None:
    """The fixed teacher (eval mode, no gradients) when a term needs it, else ``None``.

    Built as ``model.teacher`` of ``model.teacher_variant``, loaded strictly from
    ``model.teacher_checkpoint``: with :func:`skdlib.models.load_pretrained` (layout ``"skdlib"``)
    or :func:`skdlib.models.load_released` (``model.teacher_checkpoint_layout``: a released
    file). A null checkpoint leaves it randomly initialised (smoke runs), with a warning.

    Raises:
        FileNotFoundError: the checkpoint is set but missing (the message says which run writes it).
    """
    from skdlib.models import load_pretrained, load_released

    if not cfg.distill.enabled:
        return None
    path = cfg.model.teacher_checkpoint
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(
            f"model.teacher_checkpoint: teacher weights not found at {path}; {_teacher_hint(path)}"
        )
    m = cfg.model
    teacher = build_network(cfg, num_classes, role="teacher")
    if path is None:
        logger.warning("model.teacher_checkpoint is null: the teacher is randomly initialised")
    elif m.teacher_checkpoint_layout == "skdlib":
        load_pretrained(teacher, path, strict=True)
        logger.info("teacher loaded from %s", path)
    else:
        load_released(teacher, path, layout=m.teacher_checkpoint_layout)
        logger.info("teacher loaded from %s (layout %s)", path, m.teacher_checkpoint_layout)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_student(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """The trained network (``model.student`` of ``model.student_variant``, built by
    :func:`build_network`), its backbone from ``model.student_pretrained`` when that is set
    (``model.student_pretrained_layout``: the library's names, or ``"csail_imagenet"``, read
    strictly by :func:`skdlib.models.load_released`)."""
    from skdlib.models import load_pretrained, load_released

    m = cfg.model
    student = build_network(cfg, num_classes, role="student")
    if m.student_pretrained is None:
        return student
    if m.student_pretrained_layout == "skdlib":
        report = load_pretrained(
            student,
            m.student_pretrained,
            prefix="backbone.",
            source_prefix=m.student_pretrained_prefix,
        )
    else:
        report = load_released(student, m.student_pretrained, layout=m.student_pretrained_layout)
    logger.info(
        "student backbone initialised from %s: %d tensor(s), %d missing, %d unexpected, %d ignored",
        m.student_pretrained,
        len(report.loaded),
        len(report.missing_keys),
        len(report.unexpected_keys),
        len(report.ignored),
    )
    return student


def build_critic(
    cfg: ExperimentConfig, num_classes: int, *, output_stride: int | None = None
) -> nn.Module:
    """The holistic term's discriminator with the ``distill.disc_*`` options.

    With ``output_stride`` (the student's), the training crop is checked against the smallest
    map the discriminator accepts.

    Raises:
        ValueError: ``data.crop_size`` gives logit maps smaller than the discriminator accepts.
    """
    from skdlib.models.discriminator import Discriminator, min_map_size

    d = cfg.distill
    if output_stride is not None:
        side = min(cfg.data.crop_size) // output_stride
        min_map = min_map_size(d.disc_downsample)
        if side < min_map:
            raise ValueError(
                f"data.crop_size: {list(cfg.data.crop_size)} gives {side}-pixel logit maps at "
                f"output stride {output_stride}; the holistic term's discriminator "
                f"(distill.disc_downsample={d.disc_downsample}) needs >= {min_map} (crops of at "
                f"least {min_map * output_stride} pixels a side), a smaller "
                "distill.disc_downsample, or distill.holistic=false"
            )
    return Discriminator(
        num_classes,
        widths=tuple(d.disc_widths),
        use_image=d.disc_use_image,
        input=d.disc_input,
        input_batchnorm=d.disc_input_batchnorm,
        downsample=d.disc_downsample,
    )


def build_adapter(cfg: ExperimentConfig, student: nn.Module, teacher: nn.Module) -> nn.Module:
    """MIMIC's 1x1 convolution from the student's ``distill.pair_feature`` channels to the
    teacher's."""
    from skdlib.losses import make_mimic_adapter

    name = cfg.distill.pair_feature
    return make_mimic_adapter(student.feature_channels[name], teacher.feature_channels[name])


def build_models(
    cfg: ExperimentConfig, num_classes: int
) -> tuple[nn.Module, nn.Module | None, nn.Module | None, nn.Module | None]:
    """``(student, teacher, critic, adapter)`` on the CPU, checked against the config.

    Built in this order (the teacher first), so that after one ``torch.manual_seed`` the initial
    weights are a function of the seed alone. The critic exists when an enabled term reads it
    (the holistic term), the adapter likewise (MIMIC): see :mod:`skdlib.train.terms`.

    Raises:
        FileNotFoundError: the teacher checkpoint is set but missing. ``ValueError`` from
            :func:`validate_with_model` and the critic's size check.
    """
    teacher = build_teacher(cfg, num_classes)
    student = build_student(cfg, num_classes)
    validate_with_model(cfg, student, teacher=teacher)
    critic = None
    if needs_critic(cfg.distill):
        # The critic scores maps on the grid the terms compare on (distill.align).
        on_grid = teacher if cfg.distill.align == "teacher" and teacher is not None else student
        critic = build_critic(cfg, num_classes, output_stride=on_grid.output_stride)
    adapter = build_adapter(cfg, student, teacher) if needs_adapter(cfg.distill) else None
    return student, teacher, critic, adapter


def build_student_optimizer(
    cfg: ExperimentConfig, student: nn.Module, adapter: nn.Module | None = None
) -> torch.optim.Optimizer:
    """The optimiser of the student's (and the MIMIC adapter's) parameters: ``train.optimizer``
    ``"sgd"`` (the paper's: SGD with ``train.momentum``) or ``"adamw"`` (AdamW with its default
    betas), both with ``train.lr`` and ``train.weight_decay``."""
    t = cfg.train
    params = list(student.parameters()) + (list(adapter.parameters()) if adapter else [])
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def build_critic_optimizer(cfg: ExperimentConfig, critic: nn.Module) -> torch.optim.Optimizer:
    """The critic's SGD or Adam (``distill.disc_*``; no weight decay: spectral normalisation
    already bounds it)."""
    d = cfg.distill
    if d.disc_optimizer == "adam":
        return torch.optim.Adam(critic.parameters(), lr=d.disc_lr, betas=tuple(d.disc_betas))
    return torch.optim.SGD(critic.parameters(), lr=d.disc_lr, momentum=d.disc_momentum)


# --------------------------------------------------------------------------------------------------
# Networks read back from a run folder
# --------------------------------------------------------------------------------------------------
def load_run_network(
    run_dir: str | os.PathLike[str],
    num_classes: int,
    *,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The network a run trained (``model.student`` of its ``config.yaml``) with its
    ``checkpoints/final.pt``, in eval mode on ``device``.

    Raises:
        FileNotFoundError: the folder has no config.yaml or no final.pt (the run did not finish).
    """
    from skdlib.models import load_pretrained

    folder = RunFolder(Path(run_dir))
    cfg = folder.read_config()
    if not folder.final.is_file():
        raise FileNotFoundError(
            f"run_dir: no checkpoints/final.pt in {folder.root} (has the run finished?)"
        )
    model = build_network(cfg, num_classes, role="student")
    load_pretrained(model, folder.final, strict=True)
    return model.to(device).eval()


def load_run_critic(
    run_dir: str | os.PathLike[str],
    num_classes: int,
    *,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, int]:
    """The discriminator a holistic run saved in ``checkpoints/last.pt``, built from the run's
    ``distill`` options, in eval mode on ``device``; and the iteration it was saved at.

    Raises:
        FileNotFoundError: no config.yaml or no last.pt. ``ValueError``: last.pt holds no critic
            (the holistic term was off in that run).
    """
    folder = RunFolder(Path(run_dir))
    cfg = folder.read_config()
    state = load_checkpoint(folder.last)
    if state.get("critic") is None:
        raise ValueError(
            f"run_dir: {folder.last} has no critic (is the holistic term on in that run?)"
        )
    critic = build_critic(cfg, num_classes)
    critic.load_state_dict(state["critic"], strict=True)
    return critic.to(device).eval(), int(state.get("iteration", -1))
