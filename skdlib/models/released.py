"""``load_released``: weights released with other code, renamed into skdlib's networks.

A *layout* names how a released file spells its tensors; each one fits a variant of
:func:`skdlib.models.build_model` (the same parameter shapes, the same computation):

* ``"skd_authors"``: the SKD authors' PSPNets (``networks/pspnet_combine.py``, ``Res_pspnet``),
  for ``variant="authors"``: their released teacher (``CS_scenes_38413_0.7832174615268139.pth``,
  PSPNet-ResNet101) and student (``CS_scenes_39326_0.75.pth``, PSPNet-ResNet18). Both namings are
  read: the teacher file's ``head.0.*`` (the PSP module) and ``head.1.*`` (the classifier), which
  the authors' loader renames, and the model's own ``pspmodule.*``, ``head.*``, ``dsn.*``. Their
  batch norms are InPlace-ABN: no ``num_batches_tracked``, and the scale they apply is
  ``|weight| + eps`` (eps 1e-5; InPlace-ABN's kernels, every version), so ``weight`` is stored
  here as that effective scale. ``fc.*`` (dropped by the authors' loader) is ignored.
* ``"cirkd"``: CIRKD's PSPNet-ResNet101 and DeepLabV3-ResNet101 (``models/pspnet.py``,
  ``models/deeplabv3.py``; backbone ``base_models/resnetv1b.py`` with a deep stem under
  ``pretrained.*``, auxiliary head ``auxlayer.*``), for ``variant="cirkd"``: their released
  teacher ``deeplabv3_resnet101_citys_best_model.pth``.
* ``"csail_imagenet"``: the MIT CSAIL ImageNet ResNets with a deep stem (``resnet18-imagenet.pth``,
  ``resnet101-imagenet.pth``), which the authors' and CIRKD's students start from, into
  ``model.backbone`` of a deep-stem variant; the ImageNet classifier ``fc.*`` is ignored.

Like :func:`skdlib.models.load_pretrained`, the load is strict by default (every tensor of the
file used, every parameter and buffer of the model filled; ``num_batches_tracked`` counters may be
absent), shapes are checked before anything is copied, and errors name the file and the first
offending keys. A torn file or one that is not a PyTorch checkpoint raises
:class:`skdlib.errors.CheckpointError`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from skdlib.models.pretrained import LoadReport, read_state_dict

__all__ = [
    "INPLACE_ABN_EPS",
    "LAYOUTS",
    "LAYOUT_VARIANTS",
    "infer_released",
    "load_released",
    "released_state",
]

logger = logging.getLogger(__name__)

#: InPlace-ABN's epsilon: it normalises with ``var + eps`` and scales by ``|weight| + eps``.
INPLACE_ABN_EPS = 1e-5
_COUNTER_SUFFIX = "num_batches_tracked"
_SHOWN = 8  # offending keys named in an error message

_Rule = tuple[str, str | Callable[[re.Match[str]], str]]


def _shift(template: str) -> Callable[[re.Match[str]], str]:
    """A replacement that writes the first group minus one (1-based names -> 0-based indices)."""
    return lambda match: template.format(int(match.group(1)) - 1)


@dataclass(frozen=True)
class _Layout:
    """How a layout's keys become the model's.

    ``rules`` are ``re.sub`` passes applied in order to every key; ``prefix`` is put in front of
    the result and is also the part of the model the file fills; keys starting with one of
    ``ignored`` are left out on purpose; ``inplace_abn``: batch-norm scales are InPlace-ABN's.
    """

    rules: tuple[_Rule, ...]
    prefix: str
    ignored: tuple[str, ...]
    inplace_abn: bool
    variants: tuple[str, ...]
    marker: str  # a key every file of the layout has (the deep stem's last convolution)


_LAYOUTS: dict[str, _Layout] = {
    "skd_authors": _Layout(
        rules=(
            (r"^head\.0\.", "pspmodule."),  # the released teacher's naming
            (r"^head\.1\.", "head."),
            (r"^(conv[123]|bn[123]|layer[1-4])\.", r"backbone.\1."),
            (r"^pspmodule\.stages\.(\d+)\.1\.", r"head.pyramid.stages.\1.0."),
            (r"^pspmodule\.stages\.(\d+)\.2\.", r"head.pyramid.stages.\1.1."),
            (r"^pspmodule\.bottleneck\.([01])\.", r"head.bottleneck.\1."),
            (r"^head\.(weight|bias)$", r"head.classifier.\1"),
            (r"^dsn\.([01])\.", r"aux_head.block.\1."),
            (r"^dsn\.3\.", "aux_head.classifier."),
        ),
        prefix="",
        ignored=("fc.",),
        inplace_abn=True,
        variants=("authors",),
        marker="conv3.weight",
    ),
    "cirkd": _Layout(
        rules=(
            (r"^pretrained\.", "backbone."),
            (r"^head\.psp\.conv([1-4])\.", _shift("head.pyramid.stages.{}.")),
            (r"^head\.block\.4\.", "head.classifier."),  # DeepLabV3's classifier
            (r"^head\.block\.([01])\.", r"head.bottleneck.\1."),
            (r"^head\.aspp\.b0\.", "head.aspp.branches.0."),
            (r"^head\.aspp\.b([1-3])\.block\.", r"head.aspp.branches.\1."),
            (r"^head\.aspp\.b4\.gap\.([12])\.", _shift("head.aspp.pooling.{}.")),
            (r"^auxlayer\.block\.4\.", "aux_head.classifier."),
            (r"^auxlayer\.block\.([01])\.", r"aux_head.block.\1."),
        ),
        prefix="",
        ignored=(),
        inplace_abn=False,
        variants=("cirkd",),
        marker="pretrained.conv3.weight",
    ),
    "csail_imagenet": _Layout(
        rules=(),
        prefix="backbone.",
        ignored=("fc.",),
        inplace_abn=False,
        variants=(),
        marker="conv3.weight",
    ),
}

#: The layouts :func:`load_released` reads.
LAYOUTS: tuple[str, ...] = tuple(_LAYOUTS)
#: layout -> the ``build_model`` variants it fits (``csail_imagenet``: the backbone of any
#: deep-stem variant, ``"authors"`` or ``"cirkd"``).
LAYOUT_VARIANTS: dict[str, tuple[str, ...]] = {
    name: layout.variants or ("authors", "cirkd") for name, layout in _LAYOUTS.items()
}


#: Blocks in ``layer3`` -> ResNet depth, for the depths the released networks have.
_DEPTH_OF_LAYER3 = {2: 18, 23: 101}
#: The classifier's weight in each layout's namings (its first dimension: the classes).
_CLASSIFIERS = ("head.weight", "head.1.weight", "head.classifier.weight", "head.block.4.weight")


def infer_released(
    state: dict[str, torch.Tensor], *, layout: str, source: str = "the file"
) -> tuple[str, str, int | None]:
    """``(build_model name, variant, num_classes)`` of the network a released state dict holds
    (``num_classes`` ``None`` for an ImageNet backbone, ``csail_imagenet``).

    Raises:
        ValueError: an unknown layout, a file of another layout, or one whose depth or head the
            layout does not have.
    """
    spec = _layout(layout)
    if spec.marker not in state:
        raise ValueError(
            f"{source}: not a {layout!r} file (no {spec.marker!r}; its keys start with "
            f"{sorted(state)[:3]})"
        )
    blocks = {
        int(m.group(1))
        for key in state
        if (m := re.match(r"^(?:pretrained\.)?layer3\.(\d+)\.", key)) is not None
    }
    depth = _DEPTH_OF_LAYER3.get(max(blocks) + 1 if blocks else 0)
    if depth is None:
        raise ValueError(
            f"{source} (layout {layout!r}): layer3 has {len(blocks)} block(s); the released "
            f"networks have 2 (ResNet18) or 23 (ResNet101)"
        )
    name = f"pspnet_resnet{depth}"
    if any(key.startswith("head.aspp.") for key in state):
        name = f"deeplabv3_resnet{depth}"
    classes = next((int(state[k].shape[0]) for k in _CLASSIFIERS if k in state), None)
    if layout != "csail_imagenet" and classes is None:
        raise ValueError(
            f"layout {layout!r}: the file has no classifier ({' / '.join(_CLASSIFIERS)})"
        )
    variant = (spec.variants or ("authors",))[0]
    return name, variant, None if layout == "csail_imagenet" else classes


def _layout(name: str) -> _Layout:
    if name not in _LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; valid layouts: {', '.join(LAYOUTS)}")
    return _LAYOUTS[name]


def _rename(key: str, layout: _Layout) -> str:
    for pattern, replacement in layout.rules:
        key = re.sub(pattern, replacement, key)
    return layout.prefix + key


def _listed(keys: list[str]) -> str:
    more = f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def released_state(
    model: nn.Module, state: dict[str, torch.Tensor], *, layout: str, source: str = "the file"
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The released ``state`` renamed to ``model``'s keys (InPlace-ABN scales made effective),
    shapes checked, and what a load would do; nothing is copied into ``model``.

    Raises:
        ValueError: unknown layout, shapes that differ (each named with both shapes), two file
            keys for one model key, or no key of the file that fits the layout.
    """
    spec = _layout(layout)
    target = {k: v for k, v in model.state_dict().items() if k.startswith(spec.prefix)}
    ignored = sorted(k for k in state if k.startswith(spec.ignored)) if spec.ignored else []
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        if key in ignored:
            continue
        new = _rename(key, spec)
        if new in renamed:
            raise ValueError(f"{source}: keys {origin[new]!r} and {key!r} both map to {new!r}")
        renamed[new], origin[new] = value, key
    mismatched = [
        f"{origin[k]} -> {k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in renamed.items()
        if k in target and v.shape != target[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"{source} (layout {layout!r}): {len(mismatched)} shape mismatch(es): "
            f"{_listed(mismatched)}; layout {layout!r} fits build_model(..., variant="
            f"{' or '.join(repr(v) for v in LAYOUT_VARIANTS[layout])}) at width 1.0"
        )
    matched = {k: v for k, v in renamed.items() if k in target}
    if not matched:
        raise ValueError(
            f"{source}: no key fits layout {layout!r} (the file's keys start with "
            f"{sorted(state)[:3]}; the model's with {sorted(target)[:3]}): a file of another "
            "layout?"
        )
    if spec.inplace_abn:
        matched = _effective_scales(model, matched)
    report = LoadReport(
        loaded=sorted(matched),
        missing_keys=sorted(
            k for k in target if k not in renamed and not k.endswith(_COUNTER_SUFFIX)
        ),
        unexpected_keys=sorted(origin[k] for k in renamed if k not in target),
        source=source,
        ignored=ignored,
    )
    return matched, report


def _effective_scales(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """InPlace-ABN scales by ``|weight| + eps``: store that scale in every batch norm's
    ``weight``, so that ``nn.BatchNorm2d`` computes what the released network computed."""
    modules = dict(model.named_modules())
    out = dict(state)
    for key, value in state.items():
        owner, _, name = key.rpartition(".")
        if name == "weight" and isinstance(modules.get(owner), nn.modules.batchnorm._BatchNorm):
            out[key] = value.abs() + INPLACE_ABN_EPS
    return out


def load_released(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    layout: str,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> LoadReport:
    """Load a file released with other code (``layout``: one of :data:`LAYOUTS`) into ``model``.

    Args:
        model: a network of a variant the layout fits (:data:`LAYOUT_VARIANTS`), e.g.
            ``build_model("pspnet_resnet101", 19, variant="authors")`` for the authors' teacher.
        path: the released file (read with ``weights_only=True``).
        layout: ``"skd_authors"``, ``"cirkd"`` or ``"csail_imagenet"`` (see the module's
            docstring).
        strict: raise when a tensor of the file has no place in the model or a model key is not
            filled (shape mismatches always raise).
        map_location: where the tensors are read before copying.

    Returns:
        :class:`skdlib.models.LoadReport` (model keys; ``unexpected_keys`` and ``ignored`` are
        the file's).

    Raises:
        FileNotFoundError: no such file.
        skdlib.errors.CheckpointError: a torn file or not a PyTorch checkpoint.
        ValueError: an unknown layout, shapes that differ, nothing that fits, or (``strict``)
            missing or unexpected keys; the message names the file and the first keys.
    """
    source = os.fspath(path)
    state = read_state_dict(source, map_location=map_location)
    matched, report = released_state(model, state, layout=layout, source=source)
    if strict and (report.missing_keys or report.unexpected_keys):
        raise ValueError(
            f"{source} (layout {layout!r}): {len(report.missing_keys)} model key(s) not in the "
            f"file: {_listed(report.missing_keys) or 'none'}; {len(report.unexpected_keys)} "
            f"file key(s) without a place: {_listed(report.unexpected_keys) or 'none'}"
        )
    model.load_state_dict(matched, strict=False)
    for what, keys in (("missing", report.missing_keys), ("unexpected", report.unexpected_keys)):
        if keys:
            logger.warning("%d %s key(s) loading %s: %s", len(keys), what, source, _listed(keys))
    logger.info(
        "loaded %d tensor(s) from %s (layout %s; %d ignored: %s)",
        len(report.loaded),
        source,
        layout,
        len(report.ignored),
        _listed(report.ignored) or "none",
    )
    return report
