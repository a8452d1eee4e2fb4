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

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from skdlib.models.espnet import ESPNet, ESPNetC
from skdlib.models.mobilenetv2 import MOBILENETV2PLUS_BOTTLENECK, MobileNetV2Plus
from skdlib.models.psp import PSPNet
from skdlib.models.resnet import RESNET_DEPTHS, resnet_backbone

__all__ = ["available_models", "build_model", "model_options"]

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


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_REGISTRY)


def model_options(name: str) -> tuple[str, ...]:
    """The keyword options :func:`build_model` accepts for ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(available_models())}")
    return _REGISTRY[name][1]


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a segmentation network by name.

    Args:
        name: one of :func:`available_models`: ``pspnet_resnet101`` (the teacher),
            ``pspnet_resnet18`` (student; ``width=0.5`` for ResNet18(0.5)), ``pspnet_resnet34``,
            ``pspnet_resnet50``, ``mobilenetv2plus``, ``espnet_c``, ``espnet``.
        num_classes: number of output classes ``K`` (positive).
        **options: keyword options of that model (see :func:`model_options`):
            PSP-ResNets ``width`` (float in (0, 1], default 1.0), ``aux`` (auxiliary head on
            layer3, default True), ``bottleneck`` (3x3 head width, default 512 x width);
            ``mobilenetv2plus`` ``bottleneck`` (default 192); ESPNets ``p``, ``q`` (ESP modules at
            1/4 and 1/8, default 2 and 8, the published Cityscapes configuration).

    Returns:
        the module; its ``forward(image)`` returns ``SegmentationOutput``, and it exposes
        ``output_stride``, ``feature_channels`` and ``num_classes``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), bad ``num_classes``, an
            unknown option (the message lists the valid ones) or an invalid option value.
    """
    valid = model_options(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}; valid options: {list(valid)}"
        )
    factory, _ = _REGISTRY[name]
    model = factory(num_classes, **options)
    logger.debug("built %s (num_classes=%d, options=%s)", name, num_classes, options)
    return model
