"""``build_model``: every network of the book by name, with validated keyword-only options.

Head widths of the PSP models (the choice behind the parameter counts):

* pyramid pooling reduces the backbone's ``C`` channels to ``C/4`` per bin (PSPNet);
* the 3x3 bottleneck has 512 channels for every ResNet at width 1.0 (PSPNet's reference width):
  PSPNet-R101 then has 65.6M parameters at inference (PSPNet's published 65.7M; 68.0M with the
  auxiliary head), and PSPNet-R18 has 16.2M (the paper reports 15.2M for its ResNet18 student,
  whose head is not published: a 384-channel bottleneck would give 15.0M);
* ``width=0.5`` (the paper's ResNet18(0.5)) halves every channel count: the stem (32), the
  stages (32, 64, 128, 256), the pyramid reduction (C/4 = 64), the bottleneck (256) and the
  auxiliary head (128);
* the auxiliary head reads ``layer3`` with 256 channels (times ``width``).

Variants (``variant=``): the networks whose weights others released, built from the library's
modules (the library's parameter names, which :func:`skdlib.models.load_released` fills from the
released files' names) and computing what those networks compute:

* ``"default"``: the library's own networks, as above (torchvision's backbone layout; for
  ``deeplabv3_resnet101``, CIRKD's 512-channel ASPP head on that backbone);
* ``"authors"`` (``pspnet_resnet101``, ``pspnet_resnet18``): the SKD authors' ``Res_pspnet``: deep
  stem, ceil-mode max-pool, the first block of ``layer3`` / ``layer4`` dilated 2 / 4, their heads
  (:data:`skdlib.models.psp.AUTHORS_STYLE`), a bottleneck of ``C/4`` channels (512 for ResNet101,
  128 for ResNet18) and an auxiliary head of half ``layer3``'s channels (512 / 128);
* ``"cirkd"`` (``pspnet_resnet101``, ``deeplabv3_resnet101``): CIRKD's networks: deep stem,
  ``align_corners=True``, a 256-channel PSP bottleneck, a 256-channel auxiliary head; their
  DeepLabV3 has a 512-channel ASPP head.

``width`` scales every channel count of every variant; the released files fit ``width=1.0`` only.

Networks of one's own (a name given to :func:`register_model`, or an import path
``"package.module:function"``) are built by their factory with their options and read through
:func:`skdlib.models.tap` (``taps=``); they have the variant ``"default"`` only.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from skdlib.models.deeplab import DeepLabV3
from skdlib.models.espnet import ESPNet, ESPNetC
from skdlib.models.mobilenetv2 import MOBILENETV2PLUS_BOTTLENECK, MobileNetV2Plus
from skdlib.models.psp import AUTHORS_STYLE, CIRKD_STYLE, SKDLIB_STYLE, HeadStyle, PSPNet
from skdlib.models.resnet import RESNET_DEPTHS, resnet_backbone
from skdlib.models.tap import TAP_OPTIONS, tap

__all__ = [
    "VARIANTS",
    "available_models",
    "build_model",
    "builtin_models",
    "is_import_path",
    "is_model_name",
    "model_options",
    "model_variants",
    "register_model",
    "unregister_model",
]

logger = logging.getLogger(__name__)

_PSP_BOTTLENECK = 512  # 3x3 bottleneck width at width 1.0 (PSPNet)
_AUX_CHANNELS = 256  # auxiliary head width at width 1.0
_DEEPLAB_CHANNELS = 512  # ASPP and head width at width 1.0 (DeepLabV3, CIRKD)
#: Every variant name :func:`build_model` knows (each model accepts some: :func:`model_variants`).
VARIANTS: tuple[str, ...] = ("default", "authors", "cirkd")


@dataclass(frozen=True)
class _Variant:
    """What a variant changes: the backbone's options, the heads' style and, at width 1.0, the
    bottleneck (PSP) or head (DeepLabV3) width and the auxiliary head's width."""

    backbone: dict[str, bool]
    style: HeadStyle
    head: int
    aux: int


_TORCHVISION: dict[str, bool] = {}
_AUTHORS_BACKBONE = {"deep_stem": True, "ceil_mode": True, "first_block_dilated": True}
_CIRKD_BACKBONE = {"deep_stem": True}
#: (model name, variant) -> its layout; the default variants of the PSP-ResNets are built apart.
_LAYOUTS: dict[tuple[str, str], _Variant] = {
    ("pspnet_resnet101", "authors"): _Variant(_AUTHORS_BACKBONE, AUTHORS_STYLE, 512, 512),
    ("pspnet_resnet18", "authors"): _Variant(_AUTHORS_BACKBONE, AUTHORS_STYLE, 128, 128),
    ("pspnet_resnet101", "cirkd"): _Variant(_CIRKD_BACKBONE, CIRKD_STYLE, 256, 256),
    ("deeplabv3_resnet101", "default"): _Variant(
        _TORCHVISION, SKDLIB_STYLE, _DEEPLAB_CHANNELS, _AUX_CHANNELS
    ),
    ("deeplabv3_resnet101", "cirkd"): _Variant(
        _CIRKD_BACKBONE, CIRKD_STYLE, _DEEPLAB_CHANNELS, _AUX_CHANNELS
    ),
}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"option {name} must be a positive int, got {value!r}")
    return value


def _width(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"option width must be a number in (0, 1] (1.0 or 0.5 in the paper), got {value!r}"
        )
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"option {name} must be a bool, got {value!r}")
    return value


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _pspnet_resnet(depth: int) -> Callable[..., nn.Module]:
    name = f"pspnet_resnet{depth}"

    def build(
        num_classes: int,
        *,
        variant: str = "default",
        width: float = 1.0,
        aux: bool = True,
        bottleneck: int | None = None,
    ) -> nn.Module:
        width = _width(width)
        aux = _flag("aux", aux)
        layout = _LAYOUTS.get(
            (name, variant), _Variant(_TORCHVISION, SKDLIB_STYLE, _PSP_BOTTLENECK, _AUX_CHANNELS)
        )
        backbone = resnet_backbone(depth, width=width, **layout.backbone)
        out = backbone.out_channels
        head_width = (
            _positive_int("bottleneck", bottleneck)
            if bottleneck is not None
            else _scaled(layout.head, width)
        )
        return PSPNet(
            backbone,
            num_classes,
            head_input="layer4",
            reduction=max(1, out // 4),
            bottleneck=head_width,
            aux_input="layer3" if aux else None,
            aux_channels=_scaled(layout.aux, width),
            style=layout.style,
        )

    build.__doc__ = f"PSPNet on a dilated ResNet{depth} (options: width, aux, bottleneck)."
    return build


def _deeplabv3_resnet101(
    num_classes: int, *, variant: str = "default", width: float = 1.0, aux: bool = True
) -> nn.Module:
    """DeepLabV3 on a dilated ResNet101 (options: width, aux)."""
    width = _width(width)
    aux = _flag("aux", aux)
    layout = _LAYOUTS[("deeplabv3_resnet101", variant)]
    return DeepLabV3(
        resnet_backbone(101, width=width, **layout.backbone),
        num_classes,
        head_input="layer4",
        channels=_scaled(layout.head, width),
        aux_input="layer3" if aux else None,
        aux_channels=_scaled(layout.aux, width),
        style=layout.style,
    )


def _mobilenetv2plus(
    num_classes: int, *, bottleneck: int = MOBILENETV2PLUS_BOTTLENECK
) -> nn.Module:
    return MobileNetV2Plus(num_classes, bottleneck=_positive_int("bottleneck", bottleneck))


def _espnet_c(num_classes: int, *, p: int = 2, q: int = 8) -> nn.Module:
    return ESPNetC(num_classes, p=_positive_int("p", p), q=_positive_int("q", q))


def _espnet(num_classes: int, *, p: int = 2, q: int = 8) -> nn.Module:
    return ESPNet(num_classes, p=_positive_int("p", p), q=_positive_int("q", q))


_OPTIONS_RESNET = ("width", "aux", "bottleneck")
_DEFAULT_ONLY = ("default",)
#: name -> (factory, options, variants).
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...], tuple[str, ...]]] = {
    **{
        f"pspnet_resnet{depth}": (
            _pspnet_resnet(depth),
            _OPTIONS_RESNET,
            ("default", *(v for (n, v) in _LAYOUTS if n == f"pspnet_resnet{depth}")),
        )
        for depth in sorted(RESNET_DEPTHS)
    },
    "deeplabv3_resnet101": (_deeplabv3_resnet101, ("width", "aux"), ("default", "cirkd")),
    "mobilenetv2plus": (_mobilenetv2plus, ("bottleneck",), _DEFAULT_ONLY),
    "espnet_c": (_espnet_c, ("p", "q"), _DEFAULT_ONLY),
    "espnet": (_espnet, ("p", "q"), _DEFAULT_ONLY),
}


#: Networks of one's own, by the name given to :func:`register_model` (this process only).
_OWN: dict[str, Callable[..., nn.Module]] = {}
#: ``package.module:function`` (dotted names on both sides of one colon).
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_OWN_NAME = re.compile(r"[A-Za-z_][\w\-]*")


def builtin_models() -> list[str]:
    """The book's own networks, sorted (those :func:`register_model` cannot replace)."""
    return sorted(_REGISTRY)


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted: the book's networks and the names given to
    :func:`register_model` in this process (import paths are accepted too, not listed)."""
    return sorted({*_REGISTRY, *_OWN})


def is_import_path(name: str) -> bool:
    """Whether ``name`` reads as an import path ``"package.module:function"``."""
    return isinstance(name, str) and _IMPORT_PATH.fullmatch(name) is not None


def is_model_name(name: str) -> bool:
    """Whether :func:`build_model` accepts ``name``: a book network, a registered name or an
    import path (only its form is checked here: nothing is imported)."""
    return name in _REGISTRY or name in _OWN or is_import_path(name)


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``build_model(name, ...)`` (and ``model.student: name`` in a config) build
    ``factory``'s network, in this process.

    ``factory`` is called as an import path's function is (:func:`build_model`): with the
    options as keyword arguments, plus ``num_classes`` when it has a parameter of that name.
    Registering a name again replaces its factory (a notebook cell run twice); the book's own
    names cannot be replaced. The registry lives in the process: a run in another process (the
    pipeline's kernels, a cluster job) needs an import path instead.

    Raises:
        ValueError: a name that is empty, holds characters other than letters, digits, ``_``
            and ``-``, or is one of the book's networks; a factory that is not callable.
    """
    if not isinstance(name, str) or not _OWN_NAME.fullmatch(name):
        raise ValueError(
            f"register_model: name must be letters, digits, '_' or '-' (an import path needs no "
            f"registering), got {name!r}"
        )
    if name in _REGISTRY:
        raise ValueError(f"register_model: {name!r} is one of the book's networks; choose another")
    if not callable(factory):
        raise ValueError(f"register_model: factory must be callable, got {type(factory).__name__}")
    if name in _OWN and _OWN[name] is not factory:
        logger.info("register_model: %r now builds %r", name, factory)
    _OWN[name] = factory


def unregister_model(name: str) -> None:
    """Forget a name given to :func:`register_model` (``KeyError`` naming it when unknown)."""
    if name not in _OWN:
        raise KeyError(f"unregister_model: {name!r} is not registered (registered: {sorted(_OWN)})")
    del _OWN[name]


def model_options(name: str) -> tuple[str, ...]:
    """The keyword options :func:`build_model` accepts for ``name`` (for a network of one's own:
    its factory's keyword parameters, ``num_classes`` aside)."""
    if name in _REGISTRY:
        return _REGISTRY[name][1]
    factory = _own_factory(name)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable without a signature (a C function)
        return ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(n for n, p in parameters.items() if p.kind in kinds and n != "num_classes")


def model_variants(name: str) -> tuple[str, ...]:
    """The variants :func:`build_model` builds for ``name`` (``"default"`` first); a network of
    one's own (a registered name or an import path, nothing imported) has ``"default"`` only."""
    if name in _REGISTRY:
        return _REGISTRY[name][2]
    if name in _OWN or is_import_path(name):
        return _DEFAULT_ONLY
    raise _unknown(name)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown model {name!r}; valid names: {', '.join(available_models())}, or an import "
        "path 'package.module:function' (or a name given to skdlib.models.register_model)"
    )


def _own_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of a registered name or of an import path (imported here)."""
    if name in _OWN:
        return _OWN[name]
    if not is_import_path(name):
        raise _unknown(name)
    module_name, _, attribute = name.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"model {name!r}: cannot import {module_name!r} ({error}); is its folder on "
            "PYTHONPATH (sys.path), or its package installed?"
        ) from error
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ValueError(f"model {name!r}: {module_name} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise ValueError(f"model {name!r}: {attribute} is a {type(found).__name__}, not callable")
    return found


def _call_own(name: str, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
    """Call a network of one's own: ``factory(**options)``, plus ``num_classes`` when the
    factory has a parameter of that name and the options do not set it."""
    factory = _own_factory(name)
    kwargs = dict(options)
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        if "num_classes" in signature.parameters and "num_classes" not in kwargs:
            kwargs["num_classes"] = num_classes
        try:
            signature.bind(**kwargs)
        except TypeError as error:
            raise ValueError(
                f"model {name!r}: the options {sorted(options)} do not fit {signature} ({error})"
            ) from error
    module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise ValueError(f"model {name!r}: the factory returned a {type(module).__name__}")
    return module


def _is_skdlib_network(module: nn.Module) -> bool:
    """A network that already returns ``SegmentationOutput`` and says its stride and features."""
    return isinstance(getattr(module, "output_stride", None), int) and isinstance(
        getattr(module, "feature_channels", None), Mapping
    )


def _own_network(
    name: str, num_classes: int, taps: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> nn.Module:
    """A network of one's own, tapped by ``taps`` (none: as it is when it is a skdlib network
    already, else its return value as the logits), its class count checked."""
    module = _call_own(name, num_classes, options)
    if taps:
        unknown = sorted(set(taps) - set(TAP_OPTIONS))
        if unknown:
            raise ValueError(
                f"model {name!r}: unknown tap option(s) {unknown}; valid: {list(TAP_OPTIONS)}"
            )
        network: nn.Module = tap(module, **dict(taps))
    elif _is_skdlib_network(module):
        network = module
    else:
        network = tap(module)
    built = getattr(network, "num_classes", None)
    if isinstance(built, int) and built != num_classes:
        raise ValueError(
            f"model {name!r}: the network predicts {built} classes (its logits' channels), "
            f"{num_classes} are asked for (the data set's, or model.num_classes)"
        )
    return network


def build_model(
    name: str,
    num_classes: int,
    *,
    variant: str = "default",
    taps: Mapping[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a segmentation network by name.

    Args:
        name: one of :func:`available_models`: ``pspnet_resnet101`` (the teacher),
            ``pspnet_resnet18`` (student; ``width=0.5`` for ResNet18(0.5)), ``pspnet_resnet34``,
            ``pspnet_resnet50``, ``deeplabv3_resnet101`` (CIRKD's teacher), ``mobilenetv2plus``,
            ``espnet_c``, ``espnet``, a name given to :func:`register_model`; or an import path
            ``"package.module:function"``.
        num_classes: number of output classes ``K`` (positive).
        variant: ``"default"`` (the library's networks), ``"authors"`` or ``"cirkd"`` (the
            networks of released weights, see the module's docstring and
            :func:`model_variants`); for the book's networks only (a network of one's own is
            built as its factory and options say).
        taps: for a network of one's own, the keyword options of
            :func:`skdlib.models.tap` (``logits``, ``aux_logits``, ``features``, ...). Without
            them such a network is used as it is when it returns ``SegmentationOutput`` and has
            ``output_stride`` and ``feature_channels``, else tapped with the return value as the
            logits and no feature maps. The book's networks take none.
        **options: keyword options of that model (see :func:`model_options`):
            PSP-ResNets ``width`` (float in (0, 1], default 1.0), ``aux`` (auxiliary head on
            layer3, default True), ``bottleneck`` (3x3 head width, default 512 x width; the
            variants' own widths otherwise); ``deeplabv3_resnet101`` ``width``, ``aux``;
            ``mobilenetv2plus`` ``bottleneck`` (default 192); ESPNets ``p``, ``q`` (ESP modules at
            1/4 and 1/8, default 2 and 8, the published Cityscapes configuration). A network of
            one's own gets them as keyword arguments, plus ``num_classes`` when its factory has
            a parameter of that name (the class count is never an option).

    Returns:
        the module; its ``forward(image)`` returns ``SegmentationOutput``, and it exposes
        ``output_stride``, ``feature_channels`` and ``num_classes``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), a variant the model does
            not have (likewise; a network of one's own has none), bad ``num_classes``, an
            unknown option (likewise) or an invalid option value; an import path that does not
            import; taps for a book network; a network of one's own predicting another number
            of classes.
    """
    variants = model_variants(name)
    if variant not in variants:
        if name not in _REGISTRY:
            raise ValueError(
                f"variant {variant!r} is for the book's networks; {name!r} is a network of "
                "one's own, built as its factory and options say (variant: 'default')"
            )
        raise ValueError(
            f"model {name!r} has no variant {variant!r}; its variants: {list(variants)} "
            f"(released networks: 'authors' for pspnet_resnet101 and pspnet_resnet18, 'cirkd' "
            f"for pspnet_resnet101 and deeplabv3_resnet101)"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if name not in _REGISTRY:
        model = _own_network(name, num_classes, taps, options)
        logger.debug("built %s (num_classes=%d, options=%s)", name, num_classes, options)
        return model
    if taps:
        raise ValueError(
            f"taps are for networks of one's own; {name!r} returns SegmentationOutput already"
        )
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}; valid options: {list(valid)}"
        )
    factory = _REGISTRY[name][0]
    chosen = {} if variant == "default" else {"variant": variant}
    model = factory(num_classes, **options, **chosen)
    logger.debug(
        "built %s (variant=%s, num_classes=%d, options=%s)", name, variant, num_classes, options
    )
    return model
