"""ONNX export of a segmentation network's ``logits`` and a check against PyTorch.

The export uses the ``torch.export``-based exporter (``dynamo=True``), which works offline here.
The TorchScript exporter (``dynamo=False``) cannot translate adaptive average pooling whose bin
count does not divide the map size (the PSP bins 3 and 6 on most maps), so it is not used. The
new exporter implements opset 18 and later: that is the default and the minimum.
The batch axis is dynamic; the spatial size is fixed to the one given at export.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["MIN_OPSET", "LogitsOnly", "check_onnx", "export_onnx"]

logger = logging.getLogger(__name__)

MIN_OPSET = 18  # lowest opset the torch.export-based exporter implements
_MAX_BATCH = 1024  # upper bound of the dynamic batch dimension


class LogitsOnly(nn.Module):
    """Wrap a network returning ``SegmentationOutput`` so that ``forward`` returns ``logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image).logits


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: tuple[int, int],
    *,
    opset: int = MIN_OPSET,
    in_channels: int = 3,
) -> Path:
    """Export ``model``'s ``logits`` to an ONNX file (input ``image``, output ``logits``).

    The model is exported in eval mode (its mode is restored afterwards) on the CPU with a
    dynamic batch axis and the spatial size ``input_size`` fixed.

    Args:
        model: a network whose forward returns ``SegmentationOutput``.
        path: the ``.onnx`` file to write (parent folders are created).
        input_size: ``(H, W)`` of the exported input.
        opset: ONNX opset, at least :data:`MIN_OPSET`.
        in_channels: channels of the input image.

    Returns:
        the path written.

    Raises:
        ValueError: bad ``input_size`` or ``opset``, or the model's own input checks.
    """
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_size)
    ):
        raise ValueError(f"input_size must be (H, W) with positive ints, got {input_size!r}")
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset must be >= {MIN_OPSET} for the torch.export-based exporter, got {opset}"
        )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    example = torch.zeros(2, in_channels, input_size[0], input_size[1], device=device)
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            LogitsOnly(model).eval(),
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes={"image": {0: batch}},
            verbose=False,
        )
        program.save(os.fspath(out))
    finally:
        model.train(was_training)
    logger.info("exported %s (opset %d, input %s)", out, opset, tuple(example.shape[1:]))
    return out


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    image: torch.Tensor,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> float:
    """Run the ONNX file with onnxruntime and PyTorch (eval mode) on ``image``; compare logits.

    Tolerance: the largest absolute difference must not exceed ``atol + rtol * max|logits|``.
    Float32 rounding grows with the scale of the activations, not with each logit: with logits
    up to about 30, PyTorch's own float32 result is 1.3e-4 (PSPNet-ResNet18(0.5), 64x64) and
    5e-4 (MobileNetV2Plus, 128x256) away from its float64 result, and onnxruntime's is as close
    to float64 as PyTorch's; a pure 1e-4 bound would fail on rounding alone. Pass ``rtol=0`` for
    a pure absolute bound.

    Returns:
        the largest absolute difference between the two ``logits``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the shapes differ or the difference exceeds the tolerance.
    """
    import onnxruntime  # optional dependency (extra "onnx"): imported only when checking

    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    (onnx_logits,) = session.run(
        None, {input_name: image.detach().cpu().numpy().astype(np.float32)}
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch_logits = model(image).logits.cpu().numpy()
    finally:
        model.train(was_training)
    if onnx_logits.shape != torch_logits.shape:
        raise ValueError(
            f"ONNX logits shape {onnx_logits.shape} != PyTorch logits shape {torch_logits.shape} "
            f"for image of shape {tuple(image.shape)}"
        )
    diff = float(np.abs(onnx_logits - torch_logits).max())
    scale = float(np.abs(torch_logits).max())
    if diff > atol + rtol * scale:
        raise ValueError(
            f"ONNX and PyTorch logits differ by up to {diff:.3g}, beyond atol={atol:g} + "
            f"rtol={rtol:g} * max|logits| ({scale:.3g})"
        )
    return diff
