"""Teacher and student networks with named outputs, weight loading, complexity, ONNX export.

Every network's ``forward(image)`` returns :class:`SegmentationOutput`; build them by name with
:func:`build_model` (see :func:`available_models`). A network of one's own joins through
:func:`tap` (any ``nn.Module``, its outputs read by module name), :func:`register_model` (a name
of one's own) or an import path ``"package.module:function"`` given to :func:`build_model`.
"""

from skdlib.models.build import (
    VARIANTS,
    available_models,
    build_model,
    builtin_models,
    is_import_path,
    is_model_name,
    model_options,
    model_variants,
    register_model,
    unregister_model,
)
from skdlib.models.complexity import (
    Complexity,
    Latency,
    complexity,
    count_parameters,
    measure_latency,
)
from skdlib.models.deeplab import DeepLabV3
from skdlib.models.espnet import ESPNet, ESPNetC
from skdlib.models.export import check_onnx, export_onnx
from skdlib.models.mobilenetv2 import MobileNetV2Backbone, MobileNetV2Plus
from skdlib.models.outputs import SegmentationOutput
from skdlib.models.pretrained import LoadReport, load_pretrained, read_state_dict
from skdlib.models.psp import PSPNet
from skdlib.models.released import LAYOUT_VARIANTS, LAYOUTS, load_released
from skdlib.models.resnet import ResNetBackbone, resnet_backbone
from skdlib.models.tap import TAP_OPTIONS, TappedModel, tap

__all__ = [
    "LAYOUTS",
    "LAYOUT_VARIANTS",
    "TAP_OPTIONS",
    "VARIANTS",
    "Complexity",
    "DeepLabV3",
    "ESPNet",
    "ESPNetC",
    "Latency",
    "LoadReport",
    "MobileNetV2Backbone",
    "MobileNetV2Plus",
    "PSPNet",
    "ResNetBackbone",
    "SegmentationOutput",
    "TappedModel",
    "available_models",
    "build_model",
    "builtin_models",
    "check_onnx",
    "complexity",
    "count_parameters",
    "export_onnx",
    "is_import_path",
    "is_model_name",
    "load_pretrained",
    "load_released",
    "measure_latency",
    "model_options",
    "model_variants",
    "read_state_dict",
    "register_model",
    "resnet_backbone",
    "tap",
    "unregister_model",
]
