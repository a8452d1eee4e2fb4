"""Experiment configuration: frozen dataclasses loaded from YAML presets with dotted overrides.

A configuration is an :class:`ExperimentConfig` made of five sections (``model``, ``data``,
``distill``, ``train``, ``eval``). Every field has a default (the paper's value where the paper
gives one) and a one-line description in its ``metadata["doc"]``; :func:`describe_fields` lists
them.

Loading::

    cfg = load_config("configs/quick.yaml", ["train.max_iters=100", "distill.pairwise=false"])

* A preset may start with ``base: other.yaml`` (a path relative to the including file). The base is
  loaded first (recursively), then the including file is merged into it deeply: mappings merge key
  by key, every other value (scalars, lists) is replaced; an option mapping set to ``null`` (e.g.
  ``data.options: null``) drops the base's options. ``name`` is never inherited: a file
  without ``name`` is named after its file stem.
* Overrides ``key=value`` use dotted keys and YAML scalars for values (``data.crop_size=[64,128]``,
  ``model.teacher_checkpoint=null``, ``model.student_options.width=0.5``); they are applied after
  the merge.
* Type checking follows the annotations: ``int`` (not bool, not float), ``float`` (ints accepted;
  numeric strings such as ``1e-4``, which PyYAML reads as text, are accepted too), ``bool``,
  ``str``, ``Literal`` choices, ``tuple`` of fixed or variable length (from YAML lists),
  ``X | None``, nested sections, and ``dict[str, Any]`` option mappings (stored as
  :class:`FrozenDict`, lists inside them as tuples). Unknown keys, wrong types and impossible values
  raise ``ValueError`` naming the dotted key, before any training starts.

How a run is expressed: ``model.student`` is always *the network being trained*. A teacher run (or a
baseline without distillation) sets every ``distill`` switch off; a teacher run also sets
``model.student`` to the teacher's architecture and ``model.teacher: null`` (see
``configs/teacher_paper.yaml``).

Model names are checked here for an early, clear error (one of :data:`KNOWN_MODELS`, a name given to
``skdlib.models.register_model`` in this process, or the form of an import path
``package.module:function``, which is imported only when the network is built); model options and
feature names are checked against a built model by :func:`validate_with_model`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "KNOWN_MODELS",
    "MAX_CROP_SIZE",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FrozenDict",
    "ModelConfig",
    "TrainConfig",
    "UnlabeledConfig",
    "apply_overrides",
    "config_from_dict",
    "config_hash",
    "config_to_dict",
    "describe_fields",
    "load_config",
    "save_config",
    "validate_with_model",
]

#: The book's networks (``model.student`` / ``model.teacher`` also take a name given to
#: ``skdlib.models.register_model`` or an import path ``package.module:function``).
ModelName = Literal[
    "pspnet_resnet101",
    "pspnet_resnet50",
    "pspnet_resnet34",
    "pspnet_resnet18",
    "deeplabv3_resnet101",
    "mobilenetv2plus",
    "espnet_c",
    "espnet",
]
#: The book's architectures ``skdlib.models.build_model`` knows (checked early, before building).
KNOWN_MODELS: tuple[str, ...] = get_args(ModelName)
#: ``build_model`` variants (``skdlib.models.VARIANTS``).
VariantName = Literal["default", "authors", "cirkd"]
#: How a weights file spells its tensors: ``"skdlib"`` (the library's own names) or a released
#: layout of ``skdlib.models.load_released`` (``skdlib.models.LAYOUTS``).
TeacherLayout = Literal["skdlib", "skd_authors", "cirkd"]
StudentLayout = Literal["skdlib", "csail_imagenet"]
#: Input conventions (``skdlib.data.transforms.NORMALIZATIONS``).
NormalizeName = Literal["imagenet", "caffe_bgr"]

#: Largest crop side accepted (pixels): Cityscapes frames are 1024x2048, the largest data set used.
MAX_CROP_SIZE = 4096

_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DEVICE_TEXT = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_NAME_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_NONE_TYPE = type(None)


# --------------------------------------------------------------------------------------------------
# Immutable mapping for option dictionaries
# --------------------------------------------------------------------------------------------------
class FrozenDict(Mapping[str, Any]):
    """Read-only, hashable mapping; compares equal to a ``dict`` with the same items."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items: dict[str, Any] = dict(items or {})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({self._items!r})"


#: ``metadata`` key of a field left out of :func:`config_hash` while it holds its default.
_HASHED_AT_DEFAULT = "hashed_at_default"


def _doc(default: Any, doc: str, *, hashed_at_default: bool = True) -> Any:
    """A dataclass field with a default and its description in ``metadata['doc']``.

    ``hashed_at_default=False``: a field added after runs were kept in the repository with a
    default that changes nothing; at its default it is left out of :func:`config_hash`, so the
    hashes of the runs written before it (and the golden hash) stay what they were.
    """
    metadata = {"doc": doc, _HASHED_AT_DEFAULT: hashed_at_default}
    if isinstance(default, dict):
        frozen = FrozenDict(default)
        return field(default_factory=lambda: frozen, metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------------------------------
# Generic conversion from YAML values to annotated types
# --------------------------------------------------------------------------------------------------
def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _type_name(tp: Any) -> str:
    if tp is float:
        return "float"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _freeze(value: Any, path: str) -> Any:
    """Deep-freeze a YAML value: mappings -> FrozenDict, lists -> tuples; scalars only otherwise."""
    if isinstance(value, Mapping):
        frozen = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: option keys must be strings, got {_describe(key)}")
            frozen[key] = _freeze(item, f"{path}.{key}")
        return FrozenDict(frozen)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item, f"{path}[{i}]") for i, item in enumerate(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{path}: expected a YAML scalar, list or mapping, got {_describe(value)}")


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze` for output: FrozenDict -> dict, tuples -> lists."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return _freeze(value, path)
    if origin is Union or origin is types.UnionType:
        if value is None:
            if _NONE_TYPE in args:
                return None
            raise ValueError(f"{path}: expected {_type_name(tp)}, got None")
        options = [a for a in args if a is not _NONE_TYPE]
        if len(options) != 1:
            raise TypeError(f"{path}: unsupported annotation {tp!r}")
        return _convert(options[0], value, path)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{path}: expected one of {choices}, got {_describe(value)}{hint}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{path}: expected bool (true/false), got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{path}: expected int, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            return float(value)
        raise ValueError(f"{path}: expected float, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{path}: expected str, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(
                f"{path}: expected a list for {_type_name(tp)}, got {_describe(value)}"
            )
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ValueError(
                    f"{path}: expected {len(args)} values, got {len(value)}: {list(value)!r}"
                )
            item_types = list(args)
        return tuple(
            _convert(t, v, f"{path}[{i}]")
            for i, (t, v) in enumerate(zip(item_types, value, strict=True))
        )
    if origin is dict:
        if value is None:  # an inheriting preset drops its base's options with `null`
            return FrozenDict({})
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {_describe(value)}")
        return _freeze(value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _build(tp, value)
        raise ValueError(f"{path}: expected a mapping, got {_describe(value)}")
    raise TypeError(f"{path}: unsupported annotation {tp!r}")


def _build(cls: type[_Section], data: Mapping[str, Any]) -> Any:
    """Build section ``cls`` from a mapping, rejecting unknown keys with a close-match hint."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if not isinstance(key, str) or key not in names:
            dotted = f"{cls._path}.{key}" if cls._path else str(key)
            close = difflib.get_close_matches(str(key), names, n=1)
            if close:
                suggestion = f"{cls._path}.{close[0]}" if cls._path else close[0]
                hint = f" (did you mean {suggestion!r}?)"
            else:
                hint = f" (valid keys: {', '.join(names)})"
            raise ValueError(f"unknown key {dotted!r}{hint}")
    return cls(**data)


class _Section:
    """Mixin: converts every field from its annotation after ``__init__``, then checks values."""

    _path: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _convert(hints[f.name], getattr(self, f.name), self._key(f.name))
            object.__setattr__(self, f.name, value)
        self._validate()

    def _key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _fail(self, name: str, message: str) -> None:
        raise ValueError(f"{self._key(name)}: {message}, got {getattr(self, name)!r}")

    def _at_least(self, name: str, low: float) -> None:
        if getattr(self, name) < low:
            self._fail(name, f"must be >= {low}")

    def _positive(self, name: str) -> None:
        if not getattr(self, name) > 0:
            self._fail(name, "must be > 0")

    def _unit_interval(self, name: str, *, closed_right: bool) -> None:
        value = getattr(self, name)
        if not (0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0):
            self._fail(name, "must lie in [0, 1]" if closed_right else "must lie in [0, 1)")

    def _finite(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                self._fail(f.name, "must be finite")

    def _validate(self) -> None:
        self._finite()


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig(_Section):
    """Networks: the trained network (``student``) and the fixed ``teacher``."""

    _path: ClassVar[str] = "model"

    student: str = _doc(
        "pspnet_resnet18",
        "architecture being trained (the student; the teacher itself in a teacher run): a book "
        "network, a name given to skdlib.models.register_model, or an import path "
        "'package.module:function' of one's own",
    )
    student_options: dict[str, Any] = _doc({}, "keyword options for build_model, e.g. {width: 0.5}")
    student_taps: dict[str, Any] = _doc(
        {},
        "for a student of one's own: skdlib.models.tap's options (logits, aux_logits, features: "
        "{name: module name}, output_stride, probe_size, in_channels); {} = none",
        hashed_at_default=False,
    )
    teacher: str | None = _doc(
        "pspnet_resnet101",
        "fixed teacher architecture (paper: PSPNet, dilated ResNet-101), named as model.student; "
        "null = none",
    )
    teacher_options: dict[str, Any] = _doc({}, "keyword options for building the teacher")
    teacher_taps: dict[str, Any] = _doc(
        {}, "likewise model.student_taps, for the teacher", hashed_at_default=False
    )
    teacher_checkpoint: str | None = _doc(None, "file with the trained teacher's weights")
    student_pretrained: str | None = _doc(
        None, "backbone weights for the student (e.g. ImageNet's); null = random init"
    )
    teacher_source: str | None = _doc(
        None,
        "the config hash of the run that wrote teacher_checkpoint (the pipeline sets it, so a "
        "student is trained again when its teacher's configuration changes); null = unknown",
    )
    student_pretrained_source: str | None = _doc(
        None, "likewise for student_pretrained (the pipeline's pretraining run); null = unknown"
    )
    student_pretrained_prefix: str = _doc(
        "",
        "read only the keys of student_pretrained under this prefix: '' for a backbone file, "
        "'backbone.' for a whole network of the same kind (e.g. a pretraining run's final.pt)",
    )
    num_classes: int | None = _doc(None, "number of classes; null = taken from the data set")
    student_variant: VariantName = _doc(
        "default",
        "build_model variant of the student: 'default' (the library's networks), 'authors' "
        "(the SKD authors' PSPNets: deep stem, ceil-mode pool, leaky-ReLU heads) or 'cirkd'",
        hashed_at_default=False,
    )
    teacher_variant: VariantName = _doc(
        "default",
        "build_model variant of the teacher ('authors' for the authors' released teacher, "
        "'cirkd' for CIRKD's); a teacher and a student of the authors' variant share their "
        "logit grid (ceil-mode pool)",
        hashed_at_default=False,
    )
    teacher_checkpoint_layout: TeacherLayout = _doc(
        "skdlib",
        "how teacher_checkpoint spells its tensors: 'skdlib' (a run's final.pt) or a released "
        "file read by skdlib.models.load_released: 'skd_authors' (the authors' "
        "CS_scenes_38413_0.7832174615268139.pth), 'cirkd' (CIRKD's "
        "deeplabv3_resnet101_citys_best_model.pth)",
        hashed_at_default=False,
    )
    student_pretrained_layout: StudentLayout = _doc(
        "skdlib",
        "how student_pretrained spells its tensors: 'skdlib' (a backbone with torchvision's "
        "names, or a whole network with student_pretrained_prefix) or 'csail_imagenet' (the "
        "deep-stem ImageNet ResNet the authors' student starts from, resnet18-imagenet.pth)",
        hashed_at_default=False,
    )

    def _validate(self) -> None:
        super()._validate()
        if self.num_classes is not None:
            self._at_least("num_classes", 1)
        for name in ("teacher_checkpoint", "student_pretrained"):
            if getattr(self, name) == "":
                self._fail(name, "must be a file path or null, not empty")
        for role in ("student", "teacher"):
            self._check_network(role)
        self._check_variants()

    def _check_network(self, role: str) -> None:
        """``model.<role>`` names a network :func:`skdlib.models.build_model` accepts (an import
        path is checked for its form only, not imported); its taps are :func:`skdlib.models.tap`
        options, and only for a network of one's own."""
        from skdlib.models.build import builtin_models, is_model_name
        from skdlib.models.tap import TAP_OPTIONS

        name, taps = getattr(self, role), getattr(self, f"{role}_taps")
        if name is not None and not is_model_name(name):
            choices = ", ".join(repr(m) for m in KNOWN_MODELS)
            close = difflib.get_close_matches(name, builtin_models(), n=1)
            raise ValueError(
                f"{self._key(role)}: expected one of {choices} (or a name given to "
                "skdlib.models.register_model, or an import path 'package.module:function'), got "
                f"{_describe(name)}" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        unknown = sorted(set(taps) - set(TAP_OPTIONS))
        if unknown:
            self._fail(f"{role}_taps", f"unknown option(s) {unknown}; valid: {list(TAP_OPTIONS)}")
        if taps and (name is None or name in builtin_models()):
            self._fail(
                f"{role}_taps",
                f"taps are for a network of one's own; model.{role} {name!r} needs none",
            )

    def _check_variants(self) -> None:
        """Each network has its variant (variants are the book's networks' only: a network of
        one's own has ``"default"``), and each released layout fits its network's variant."""
        from skdlib.models import LAYOUT_VARIANTS, builtin_models, model_variants

        for role in ("student", "teacher"):
            name, variant = getattr(self, role), getattr(self, f"{role}_variant")
            if name is None or variant == "default":
                continue
            if name not in builtin_models():
                self._fail(
                    f"{role}_variant",
                    f"variants are for the book's networks; {name!r} is a network of one's own "
                    "(its factory and options build it): use 'default'",
                )
            if variant not in model_variants(name):
                self._fail(
                    f"{role}_variant", f"{name} has the variants {list(model_variants(name))}"
                )
        for key, role in (
            ("teacher_checkpoint_layout", "teacher"),
            ("student_pretrained_layout", "student"),
        ):
            layout, variant = getattr(self, key), getattr(self, f"{role}_variant")
            if layout != "skdlib" and variant not in LAYOUT_VARIANTS[layout]:
                raise ValueError(
                    f"model.{key}: {layout!r} files fit the variant(s) "
                    f"{list(LAYOUT_VARIANTS[layout])} (model.{role}_variant), got "
                    f"model.{role}_variant={variant!r}"
                )
        if self.student_pretrained_layout != "skdlib" and self.student_pretrained_prefix:
            self._fail(
                "student_pretrained_prefix", "is read with student_pretrained_layout 'skdlib' only"
            )


@dataclass(frozen=True)
class UnlabeledConfig(_Section):
    """A second training stream of images without labels, for the distillation terms only.

    Each iteration then draws ``batch_size`` unlabeled images beside the labelled batch; the task
    loss sees the labelled images only (the unlabeled ones carry ignore labels), the pixel-wise,
    pair-wise and holistic terms and the critic step see both. Labels that the data set has are
    not read for this stream. ``batch_size: 0`` turns the stream off (a run equal to one without
    it).
    """

    _path: ClassVar[str] = "data.unlabeled"

    name: str | None = _doc(
        None,
        "data set name for build_dataset ('images' = a plain image folder); null = no unlabeled "
        "stream",
    )
    root: str | None = _doc(None, "folder of the unlabeled data set")
    split: str = _doc("train", "split of the unlabeled data set")
    batch_size: int = _doc(
        0, "unlabeled images per step (the ratio to data.batch_size); 0 = stream off"
    )
    options: dict[str, Any] = _doc({}, "extra keyword options for build_dataset")

    def _validate(self) -> None:
        super()._validate()
        self._at_least("batch_size", 0)
        if self.name == "":
            self._fail("name", "must be a data set name or null, not empty")
        if self.batch_size > 0 and self.name is None:
            self._fail("batch_size", "needs data.unlabeled.name (and root): which images to draw")
        if self.name is not None and not self.root:
            self._fail(
                "root", "must name the unlabeled data set's folder when data.unlabeled.name is set"
            )

    @property
    def enabled(self) -> bool:
        """Whether the loop draws unlabeled images at all."""
        return self.name is not None and self.batch_size > 0


@dataclass(frozen=True)
class DataConfig(_Section):
    """Data set, training augmentation and batching."""

    _path: ClassVar[str] = "data"

    name: str = _doc("embedded", "data set name for skdlib.data.build_dataset")
    root: str = _doc("data/embedded", "data set folder")
    train_split: str = _doc("train", "split used for training")
    val_split: str = _doc("val", "split used for evaluation")
    crop_size: tuple[int, int] = _doc(
        (512, 512), "random training crop (height, width); paper: 512x512"
    )
    scale_range: tuple[float, float] = _doc(
        (0.5, 2.1), "random rescaling range (min, max); paper: 0.5-2.1"
    )
    flip: bool = _doc(True, "random horizontal flip; paper: yes")
    batch_size: int = _doc(8, "images per training step; paper: 8")
    num_workers: int | None = _doc(
        None, "loader worker processes; null = chosen from the CPU count"
    )
    options: dict[str, Any] = _doc({}, "extra keyword options for build_dataset")
    normalize: NormalizeName = _doc(
        "imagenet",
        "input normalisation: 'imagenet' (RGB in [0, 1], ImageNet mean and std) or 'caffe_bgr' "
        "(the authors': BGR 0-255 minus (104.01, 116.67, 122.68), no std; their released "
        "networks expect it)",
        hashed_at_default=False,
    )
    train_limit: int | None = _doc(
        None,
        "train on the first N samples of train_split only (a labelled subset); null = all of them",
    )
    unlabeled: UnlabeledConfig = field(
        default_factory=UnlabeledConfig,
        metadata={"doc": "optional stream of unlabeled images (distillation only)"},
    )

    def _validate(self) -> None:
        super()._validate()
        if not self.name:
            self._fail("name", "must not be empty")
        if self.name == "images":
            self._fail(
                "name",
                "'images' reads images without labels: it can feed the unlabeled stream "
                "(data.unlabeled.name), not the labelled training and validation data",
            )
        _check_crop(self, "crop_size")
        low, high = self.scale_range
        if not (0.0 < low <= high):
            self._fail("scale_range", "must satisfy 0 < min <= max")
        self._at_least("batch_size", 1)
        if self.num_workers is not None:
            self._at_least("num_workers", 0)
        if self.train_limit is not None:
            self._at_least("train_limit", 1)


def _check_crop(section: _Section, name: str) -> None:
    value = getattr(section, name)
    if any(side < 1 for side in value):
        section._fail(name, "sides must be positive")
    if any(side > MAX_CROP_SIZE for side in value):
        section._fail(name, f"sides must be <= MAX_CROP_SIZE={MAX_CROP_SIZE}")


@dataclass(frozen=True)
class DistillConfig(_Section):
    """Distillation terms, their weights and the discriminator of the holistic term."""

    _path: ClassVar[str] = "distill"

    # Switches: the paper's three terms on, the pair-wise variants (paper's comparison) off.
    pixelwise: bool = _doc(True, "pixel-wise KL term (Eq. 1)")
    pairwise: bool = _doc(True, "global pair-wise similarity term (Eq. 2-3)")
    holistic: bool = _doc(True, "holistic conditional-GAN term (Eq. 4)")
    mimic: bool = _doc(False, "variant: 1x1-conv feature regression (MIMIC)")
    attention: bool = _doc(False, "variant: attention transfer")
    local_pairwise: bool = _doc(False, "variant: pair-wise similarity to the 8 neighbours only")
    # Weights.
    lambda_pi: float = _doc(10.0, "weight of the pixel-wise term; paper: lambda1 = 10")
    lambda_pa: float = _doc(
        10.0, "weight of the pair-wise term; paper: lambda1 = 10 (authors' code: 0.5)"
    )
    lambda_ho: float = _doc(
        0.1, "weight of the holistic term for the student; paper: lambda2 = 0.1"
    )
    lambda_mimic: float = _doc(
        10.0, "MIMIC weight; project choice: the weight of the pair-wise term it replaces"
    )
    lambda_at: float = _doc(
        10.0, "attention-transfer weight; project choice: the pair-wise term's weight"
    )
    lambda_local: float = _doc(
        10.0, "local pair-wise weight; project choice: the pair-wise term's weight"
    )
    # Later methods (off by default), on the logits.
    cwd: bool = _doc(False, "later method: channel-wise distillation on logits (CWD)")
    lambda_cwd: float = _doc(3.0, "CWD weight; CWD's Cityscapes setting on logits: 3")
    cwd_temperature: float = _doc(4.0, "CWD temperature; CWD's Cityscapes setting: 4")
    dist: bool = _doc(False, "later method: DIST (inter- and intra-class Pearson correlation)")
    lambda_dist: float = _doc(1.0, "DIST weight; DIST's segmentation code: lambda_kd = 1")
    dist_temperature: float = _doc(1.0, "DIST temperature; DIST's segmentation code: none (1)")
    dist_beta: float = _doc(1.0, "DIST inter-class weight beta; DIST: 1")
    dist_gamma: float = _doc(1.0, "DIST intra-class weight gamma; DIST: 1")
    temperature: float = _doc(
        1.0, "softmax temperature of the pixel-wise term; paper: 1 (plain softmax)"
    )
    # Networks on different grids (other output strides or feature sizes).
    align: str = _doc(
        "student",
        "the grid the terms compare two maps of different sizes on: the student's (the teacher's "
        "map resized to it) or the teacher's; maps of one size are never resized",
        hashed_at_default=False,
    )
    # Pair-wise graph.
    pair_feature: str = _doc(
        "head",
        "feature map (model.features key) for pair-wise and its variants; authors' code: PSP "
        "output",
    )
    node_size: int = _doc(
        2, "beta: node = beta x beta patch; extended paper's best 2 (CVPR text: 1)"
    )
    pool: Literal["avg", "max"] = _doc("avg", "pooling of features into nodes; authors' code: max")
    node_fraction: float | None = _doc(
        None, "pool kernel as a fraction of the map side (needs node_size 1); authors' code: 0.5"
    )
    detach_norm: bool = _doc(
        False, "stop the gradient through the feature norms of the cosine similarity"
    )
    # Holistic term: discriminator (embedding network) and its training.
    gan_kind: Literal["wgan", "hinge"] = _doc(
        "wgan", "adversarial loss: WGAN-GP (paper, master) or hinge (cvpr_19)"
    )
    gp_weight: float = _doc(10.0, "gradient-penalty weight (WGAN-GP); authors' code: 10")
    disc_widths: tuple[int, int, int, int] = _doc(
        (64, 128, 256, 512), "channels of D's four strided convs; authors' code: 64-128-256-512"
    )
    disc_downsample: int = _doc(
        4,
        "stride-2 convs among D's four (1-4); D needs maps of 2**n a side (authors' code: 4)",
    )
    disc_use_image: bool = _doc(True, "condition D on the RGB image (paper; authors' master: no)")
    disc_input: Literal["softmax", "logits"] = _doc(
        "softmax", "map fed to D (paper: softmax; master: logits)"
    )
    disc_input_batchnorm: bool = _doc(False, "batch-norm on D's input (authors' master: yes)")
    disc_lr: float = _doc(4e-4, "discriminator learning rate; authors' code: 4e-4")
    disc_optimizer: Literal["sgd", "adam"] = _doc(
        "sgd", "discriminator optimiser; authors' code: SGD"
    )
    disc_momentum: float = _doc(0.9, "SGD momentum of the discriminator")
    disc_betas: tuple[float, float] = _doc(
        (0.9, 0.99), "Adam betas of the discriminator (disc_optimizer: adam)"
    )
    disc_loss_scale: float = _doc(1.0, "factor on D's own loss (authors' code: lambda2 = 0.1)")

    @property
    def enabled(self) -> bool:
        """True when any distillation term of the registry is on (a teacher is needed)."""
        from skdlib.train.terms import needs_teacher

        return needs_teacher(self)

    @property
    def uses_pair_feature(self) -> bool:
        """True when an enabled term reads ``features[pair_feature]``."""
        from skdlib.train.terms import needs_features

        return needs_features(self)

    def _validate(self) -> None:
        from skdlib.train.terms import ALIGNS, TERMS

        super()._validate()
        if self.align not in ALIGNS:
            self._fail("align", f"expected one of {', '.join(map(repr, ALIGNS))}")
        for term in TERMS:
            if hasattr(self, term.weight):
                self._at_least(term.weight, 0.0)
        for name in ("temperature", "cwd_temperature", "dist_temperature"):
            self._positive(name)
        self._at_least("dist_beta", 0.0)
        self._at_least("dist_gamma", 0.0)
        if not self.pair_feature:
            self._fail("pair_feature", "must not be empty")
        self._at_least("node_size", 1)
        if self.node_fraction is not None:
            if not 0.0 < self.node_fraction <= 1.0:
                self._fail("node_fraction", "must lie in (0, 1] or be null")
            if self.node_size != 1:
                raise ValueError(
                    "distill.node_size: must be 1 when distill.node_fraction is set (the kernel "
                    f"then comes from node_fraction), got node_size={self.node_size}, "
                    f"node_fraction={self.node_fraction}"
                )
        self._at_least("gp_weight", 0.0)
        if any(width < 1 for width in self.disc_widths):
            self._fail("disc_widths", "must be positive ints")
        if not 1 <= self.disc_downsample <= len(self.disc_widths):
            self._fail("disc_downsample", f"must lie in [1, {len(self.disc_widths)}]")
        self._positive("disc_lr")
        self._unit_interval("disc_momentum", closed_right=False)
        if not all(0.0 <= beta < 1.0 for beta in self.disc_betas):
            self._fail("disc_betas", "must lie in [0, 1)")
        self._positive("disc_loss_scale")


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Optimisation of the trained network and the loop's bookkeeping."""

    _path: ClassVar[str] = "train"

    max_iters: int = _doc(40000, "training iterations; paper: 40000")
    seed: int = _doc(0, "random seed")
    optimizer: Literal["sgd", "adamw"] = _doc(
        "sgd",
        "student optimiser: SGD with momentum (paper) or AdamW (train.lr, train.weight_decay, "
        "default betas; momentum unused)",
    )
    lr: float = _doc(0.01, "base learning rate; paper: 0.01 (SGD)")
    momentum: float = _doc(0.9, "SGD momentum; paper: 0.9")
    weight_decay: float = _doc(5e-4, "weight decay (AdamW: decoupled); paper: 5e-4")
    poly_power: float = _doc(0.9, "poly schedule lr * (1 - iter/max_iters)^power; paper: 0.9")
    aux_weight: float = _doc(0.4, "weight of the auxiliary (deep supervision) loss; PSPNet: 0.4")
    log_every: int = _doc(20, "iterations between metrics.jsonl records")
    eval_every: int = _doc(0, "iterations between validations; 0 = only at the end")
    checkpoint_every: int = _doc(1000, "iterations between checkpoints; 0 = only at the end")
    amp: Literal["none", "bf16", "fp16"] = _doc("none", "mixed precision (CUDA only)")
    channels_last: bool = _doc(
        True,
        "channels-last memory format of the networks and batches (on CUDA and on the CPU: "
        "measured 15 % faster training steps on the project's CPU)",
    )
    max_nonfinite: int = _doc(5, "consecutive skipped non-finite steps before stopping")
    device: str = _doc("auto", "auto | cpu | cuda | cuda:N | mps")
    tensorboard: bool = _doc(False, "also write TensorBoard events")
    teacher_cache: bool = _doc(
        False,
        "keep the teacher's outputs per augmented image and reuse them (needs data.scale_range "
        "[1, 1]); project choice for the CPU budget",
    )

    def _validate(self) -> None:
        super()._validate()
        self._at_least("max_iters", 1)
        self._at_least("seed", 0)
        self._positive("lr")
        self._unit_interval("momentum", closed_right=False)
        for name in ("weight_decay", "poly_power", "aux_weight", "eval_every", "checkpoint_every"):
            self._at_least(name, 0)
        self._at_least("log_every", 1)
        self._at_least("max_nonfinite", 1)
        if not _DEVICE_TEXT.fullmatch(self.device):
            self._fail("device", "must be one of auto, cpu, cuda, cuda:N, mps")


@dataclass(frozen=True)
class EvalConfig(_Section):
    """Validation inference."""

    _path: ClassVar[str] = "eval"

    mode: Literal["whole", "sliding"] = _doc(
        "whole", "whole image (authors' code) or sliding window"
    )
    flip: bool = _doc(False, "average with the flipped image; authors' code: no")
    crop_size: tuple[int, int] | None = _doc(None, "sliding-window size; null = data.crop_size")
    stride_rate: float = _doc(2 / 3, "sliding-window stride as a fraction of the window")

    def _validate(self) -> None:
        super()._validate()
        if self.crop_size is not None:
            _check_crop(self, "crop_size")
        if not 0.0 < self.stride_rate <= 1.0:
            self._fail("stride_rate", "must lie in (0, 1]")


@dataclass(frozen=True)
class ExperimentConfig(_Section):
    """One experiment: what is trained, on what, with which distillation terms."""

    _path: ClassVar[str] = ""

    name: str = _doc(
        "unnamed", "experiment name, also the run folder name (e.g. r18_pi_pa_ho_paper)"
    )
    description: str = _doc("", "one sentence saying what the experiment is")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "networks"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "data and augmentation"})
    distill: DistillConfig = field(
        default_factory=DistillConfig, metadata={"doc": "distillation terms"}
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"doc": "optimisation"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"doc": "validation inference"})

    def _validate(self) -> None:
        super()._validate()
        if not _NAME_TEXT.fullmatch(self.name):
            self._fail("name", "must be a folder-safe name (letters, digits, '_', '-', '.')")
        if self.train.teacher_cache and tuple(self.data.scale_range) != (1.0, 1.0):
            raise ValueError(
                "train.teacher_cache: needs data.scale_range [1.0, 1.0] (with random scaling an "
                f"image never comes again the same), got {list(self.data.scale_range)}"
            )
        if self.distill.enabled and self.model.teacher is None:
            raise ValueError(
                "model.teacher: distillation terms are on, so a teacher is needed, got None "
                "(set model.teacher or switch every distill term off)"
            )


# --------------------------------------------------------------------------------------------------
# Dict / YAML conversion, overrides, hashing
# --------------------------------------------------------------------------------------------------
def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested mapping (missing keys:
    defaults)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config: expected a mapping, got {_describe(data)}")
    if "base" in data:
        raise ValueError(
            "base: only load_config understands 'base' (a preset file to inherit from)"
        )
    return _build(ExperimentConfig, data)


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Canonical nested dict of plain YAML/JSON values (tuples as lists), in field order."""
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"config: expected an ExperimentConfig, got {type(config).__name__}")
    return _section_to_dict(config)


def _section_to_dict(section: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        out[f.name] = _section_to_dict(value) if dataclasses.is_dataclass(value) else _thaw(value)
    return out


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write ``config`` as a resolved YAML file (no ``base``) that :func:`load_config` reads back
    equal."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
    target.write_text(f"# Resolved skdlib experiment config (hash {config_hash(config)}).\n{text}")


def config_hash(config: ExperimentConfig) -> str:
    """Stable 16-hex-digit hash of the canonical dict (independent of key order and of YAML
    layout); fields declared ``hashed_at_default=False`` are left out while at their default."""
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"config: expected an ExperimentConfig, got {type(config).__name__}")
    canonical = json.dumps(
        _hashed_dict(config), sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _hashed_dict(section: Any) -> dict[str, Any]:
    """:func:`config_to_dict`'s form without the fields that are at a default not hashed."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _hashed_dict(value)
        elif f.metadata.get(_HASHED_AT_DEFAULT, True) or value != _default_of(f):
            out[f.name] = _thaw(value)
    return out


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _parse_override(text: str) -> tuple[list[str], Any]:
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. train.max_iters=100)")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {text!r}: the key must be dotted names, e.g. train.max_iters")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ValueError(f"override {text!r}: value is not valid YAML ({error})") from error
    return parts, value


def _set_dotted(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ValueError(f"override {text!r}: {where!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _apply_raw_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    if isinstance(overrides, str):
        raise ValueError(
            f"overrides must be a sequence of 'key=value' strings, got the string {overrides!r}"
        )
    result = copy.deepcopy(data)
    for text in overrides:
        parts, value = _parse_override(text)
        _set_dotted(result, parts, value, text)
    return result


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """Return a new config with ``key=value`` overrides applied (values parsed as YAML) and
    validated."""
    return config_from_dict(_apply_raw_overrides(config_to_dict(config), overrides))


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_preset(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """Read one preset and, recursively, its bases; returns the merged raw dict (without 'name')."""
    resolved = path.resolve()
    if resolved in chain:
        loop = " -> ".join(str(p) for p in (*chain, resolved))
        raise ValueError(f"base: circular inheritance {loop}")
    if not resolved.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with resolved.open("r", encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {_describe(data)}")
    base = data.pop("base", None)
    if base is None:
        merged: dict[str, Any] = {}
    elif isinstance(base, str) and base:
        merged = _read_preset(resolved.parent / base, (*chain, resolved))
        merged.pop("name", None)
    else:
        raise ValueError(f"{path}: base: expected a file path, got {_describe(base)}")
    return _deep_merge(merged, data)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load a YAML preset (following ``base``), apply ``key=value`` overrides, validate.

    A preset without ``name`` is named after its file stem (``configs/quick.yaml`` -> ``quick``).
    """
    source = Path(path)
    data = _read_preset(source, ())
    data.setdefault("name", source.stem)
    return config_from_dict(_apply_raw_overrides(data, overrides))


# --------------------------------------------------------------------------------------------------
# Checks that need built networks
# --------------------------------------------------------------------------------------------------
def validate_with_model(
    config: ExperimentConfig, model: Any, *, teacher: Any | None = None
) -> None:
    """Check the config against built networks (objects exposing
    ``feature_channels: dict[str, int]``).

    Raises ``ValueError`` when a term that reads ``distill.pair_feature`` is on and the student (or
    the teacher, when given) has no such feature, when ``model.num_classes`` disagrees with a
    model's ``num_classes`` attribute, or the teacher's with the student's (checked only where
    the models have one).
    """
    networks = [("model.student", model)] + (
        [("model.teacher", teacher)] if teacher is not None else []
    )
    for role, network in networks:
        channels = getattr(network, "feature_channels", None)
        if not isinstance(channels, Mapping):
            raise ValueError(
                f"{role}: the model has no feature_channels mapping ({type(network).__name__})"
            )
        if config.distill.uses_pair_feature and config.distill.pair_feature not in channels:
            raise ValueError(
                f"distill.pair_feature: {config.distill.pair_feature!r} is not a feature of {role} "
                f"(available: {', '.join(sorted(channels))})"
            )
        built_classes = getattr(network, "num_classes", None)
        wanted = config.model.num_classes
        if wanted is not None and isinstance(built_classes, int) and built_classes != wanted:
            raise ValueError(
                f"model.num_classes: config says {wanted}, {role} was built with {built_classes}"
            )
    classes = [getattr(network, "num_classes", None) for _, network in networks]
    if len(classes) == 2 and all(isinstance(k, int) for k in classes) and classes[0] != classes[1]:
        raise ValueError(
            f"model.teacher: the teacher predicts {classes[1]} classes, the student {classes[0]}; "
            "the terms compare the two class by class"
        )


def describe_fields(section: type | None = None) -> list[tuple[str, str, Any, str]]:
    """Rows ``(dotted key, type, default, description)`` for every field, for docs and the book."""
    cls = section if section is not None else ExperimentConfig
    rows: list[tuple[str, str, Any, str]] = []
    hints = get_type_hints(cls)
    default_instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default_instance, f.name)
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows.extend(describe_fields(tp))
            continue
        key = f"{cls._path}.{f.name}" if cls._path else f.name
        rows.append((key, _type_name(tp), _thaw(value), f.metadata.get("doc", "")))
    return rows
