"""Teacher and student networks with named outputs, weight loading, complexity, ONNX export.

Every network's ``forward(image)`` returns :class:`SegmentationOutput`; build them by name with
:func:`build_model` (see :func:`available_models`).
"""

from skdlib.models.build import (
    VARIANTS,
    available_models,
    build_model,
    model_options,
    model_variants,
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

__all__ = [
    "LAYOUTS",
    "LAYOUT_VARIANTS",
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
    "available_models",
    "build_model",
    "check_onnx",
    "complexity",
    "count_parameters",
    "export_onnx",
    "load_pretrained",
    "load_released",
    "measure_latency",
    "model_options",
    "model_variants",
    "read_state_dict",
    "resnet_backbone",
]
