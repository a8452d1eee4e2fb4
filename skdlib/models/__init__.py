"""Teacher and student networks with named outputs, weight loading, complexity, ONNX export.

Every network's ``forward(image)`` returns :class:`SegmentationOutput`; build them by name with
:func:`build_model` (see :func:`available_models`).
"""

from skdlib.models.build import available_models, build_model, model_options
from skdlib.models.complexity import (
    Complexity,
    Latency,
    complexity,
    count_parameters,
    measure_latency,
)
from skdlib.models.espnet import ESPNet, ESPNetC
from skdlib.models.export import check_onnx, export_onnx
from skdlib.models.mobilenetv2 import MobileNetV2Backbone, MobileNetV2Plus
from skdlib.models.outputs import SegmentationOutput
from skdlib.models.pretrained import LoadReport, load_pretrained, read_state_dict
from skdlib.models.psp import PSPNet
from skdlib.models.resnet import ResNetBackbone, resnet_backbone

__all__ = [
    "Complexity",
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
    "measure_latency",
    "model_options",
    "read_state_dict",
    "resnet_backbone",
]
