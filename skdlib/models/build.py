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
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from skdlib.models.espnet import ESPNet, ESPNetC
from skdlib.models.mobilenetv2 import MOBILENETV2PLUS_BOTTLENECK, MobileNetV2Plus
from skdlib.models.psp import PSPNet
from skdlib.models.resnet import RESNET_DEPTHS, resnet_backbone
from skdlib.models.tap import TAP_OPTIONS, tap

__all__ = [
    "available_models",
    "build_model",
    "builtin_models",
    "is_import_path",
    "is_model_name",
    "model_options",
    "register_model",
    "unregister_model",
]

logger = logging.getLogger(__name__)

_PSP_BOTTLENECK = 512  # 3x3 bottleneck width at width 1.0 (PSPNet)
_AUX_CHANNELS = 256  # auxiliary head width at width 1.0


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


def _pspnet_resnet(depth: int) -> Callable[..., nn.Module]:
    def build(
        num_classes: int, *, width: float = 1.0, aux: bool = True, bottleneck: int | None = None
    ) -> nn.Module:
        width = _width(width)
        aux = _flag("aux", aux)
        backbone = resnet_backbone(depth, width=width)
        out = backbone.out_channels
        head_width = (
            _positive_int("bottleneck", bottleneck)
            if bottleneck is not None
            else max(1, round(_PSP_BOTTLENECK * width))
        )
        return PSPNet(
            backbone,
            num_classes,
            head_input="layer4",
            reduction=max(1, out // 4),
            bottleneck=head_width,
            aux_input="layer3" if aux else None,
            aux_channels=max(1, round(_AUX_CHANNELS * width)),
        )

    build.__doc__ = f"PSPNet on a dilated ResNet{depth} (options: width, aux, bottleneck)."
    return build


def _mobilenetv2plus(
    num_classes: int, *, bottleneck: int = MOBILENETV2PLUS_BOTTLENECK
) -> nn.Module:
    return MobileNetV2Plus(num_classes, bottleneck=_positive_int("bottleneck", bottleneck))


def _espnet_c(num_classes: int, *, p: int = 2, q: int = 8) -> nn.Module:
    return ESPNetC(num_classes, p=_positive_int("p", p), q=_positive_int("q", q))


def _espnet(num_classes: int, *, p: int = 2, q: int = 8) -> nn.Module:
    return ESPNet(num_classes, p=_positive_int("p", p), q=_positive_int("q", q))


_OPTIONS_RESNET = ("width", "aux", "bottleneck")
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    **{
        f"pspnet_resnet{depth}": (_pspnet_resnet(depth), _OPTIONS_RESNET)
        for depth in sorted(RESNET_DEPTHS)
    },
    "mobilenetv2plus": (_mobilenetv2plus, ("bottleneck",)),
    "espnet_c": (_espnet_c, ("p", "q")),
    "espnet": (_espnet, ("p", "q")),
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
    name: str, num_classes: int, *, taps: Mapping[str, Any] | None = None, **options: Any
) -> nn.Module:
    """Build a segmentation network by name.

    Args:
        name: one of :func:`available_models`: ``pspnet_resnet101`` (the teacher),
            ``pspnet_resnet18`` (student; ``width=0.5`` for ResNet18(0.5)), ``pspnet_resnet34``,
            ``pspnet_resnet50``, ``mobilenetv2plus``, ``espnet_c``, ``espnet``, a name given to
            :func:`register_model`; or an import path ``"package.module:function"``.
        num_classes: number of output classes ``K`` (positive).
        taps: for a network of one's own, the keyword options of
            :func:`skdlib.models.tap` (``logits``, ``aux_logits``, ``features``, ...). Without
            them such a network is used as it is when it returns ``SegmentationOutput`` and has
            ``output_stride`` and ``feature_channels``, else tapped with the return value as the
            logits and no feature maps. The book's networks take none.
        **options: keyword options of that model (see :func:`model_options`):
            PSP-ResNets ``width`` (float in (0, 1], default 1.0), ``aux`` (auxiliary head on
            layer3, default True), ``bottleneck`` (3x3 head width, default 512 x width);
            ``mobilenetv2plus`` ``bottleneck`` (default 192); ESPNets ``p``, ``q`` (ESP modules at
            1/4 and 1/8, default 2 and 8, the published Cityscapes configuration). A network of
            one's own gets them as keyword arguments, plus ``num_classes`` when its factory has
            a parameter of that name (the class count is never an option).

    Returns:
        the module; its ``forward(image)`` returns ``SegmentationOutput``, and it exposes
        ``output_stride``, ``feature_channels`` and ``num_classes``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), bad ``num_classes``, an
            unknown option (the message lists the valid ones) or an invalid option value; an
            import path that does not import; taps for a book network; a network of one's own
            predicting another number of classes.
    """
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
    factory, _ = _REGISTRY[name]
    model = factory(num_classes, **options)
    logger.debug("built %s (num_classes=%d, options=%s)", name, num_classes, options)
    return model
