"""Parameters and FLOPs of one forward pass, counted by PyTorch's ``FlopCounterMode``.

Convention: ``FlopCounterMode`` counts **2 FLOPs per multiply-add** (convolutions, transposed
convolutions, matrix products); :class:`Complexity` reports both ``macs`` (multiply-adds) and
``flops = 2 * macs``. The paper's "GFLOPs" and fvcore count one multiply-add as one FLOP, so they
compare with ``macs``. Element-wise work (BatchNorm, activations, pooling, interpolation, the
residual additions) is not counted, as in the paper and fvcore.

The count runs on a copy of the model moved to the ``meta`` device (shapes only, no memory, no
arithmetic) in eval mode without gradients, so the teacher at 1024x2048 costs nothing; the
model passed in is left untouched. ``params`` counts the parameters of the modules that run in
that eval-mode forward pass (a training-only auxiliary head is excluded: it is not part of the
deployed network); ``params_total`` counts every parameter.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "Complexity",
    "Latency",
    "complexity",
    "count_parameters",
    "layer_table",
    "measure_latency",
]

_FLOPS_PER_MAC = 2  # FlopCounterMode's convention


@dataclass(frozen=True)
class Complexity:
    """Size and cost of one forward pass at ``input_size`` (``batch_size`` images).

    Attributes:
        params: parameters used at inference (eval-mode forward).
        params_total: all parameters of the module (auxiliary heads included).
        macs: multiply-adds (the paper's and fvcore's "FLOPs").
        flops: ``2 * macs`` (``FlopCounterMode``'s convention).
        input_size: ``(H, W)``.
        batch_size: images per forward pass.
    """

    params: int
    params_total: int
    macs: int
    flops: int
    input_size: tuple[int, int]
    batch_size: int = 1

    def __str__(self) -> str:
        h, w = self.input_size
        return (
            f"{self.params / 1e6:.2f}M params (inference; {self.params_total / 1e6:.2f}M total), "
            f"{self.macs / 1e9:.1f} GMACs = {self.flops / 1e9:.1f} GFLOPs at "
            f"{self.batch_size}x3x{h}x{w} (1 MAC = 2 FLOPs; the paper's GFLOPs are GMACs)"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def complexity(
    model: nn.Module, input_size: tuple[int, int], *, batch_size: int = 1, in_channels: int = 3
) -> Complexity:
    """Count parameters and FLOPs of ``model`` for one ``(batch_size, in_channels, H, W)`` input.

    Args:
        model: any module whose forward takes one image tensor.
        input_size: ``(H, W)``, positive ints.
        batch_size: images per forward pass (FLOPs scale linearly with it).
        in_channels: channels of the input image.

    Returns:
        :class:`Complexity` (``macs`` = multiply-adds, ``flops = 2 * macs``).

    Raises:
        ValueError: ``input_size`` is not two positive ints, or ``batch_size`` < 1; any
            ``ValueError`` of the model's own input checks (e.g. a too small input).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_size)
    ):
        raise ValueError(f"input_size must be (H, W) with positive ints, got {input_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    height, width = int(input_size[0]), int(input_size[1])

    shadow = copy.deepcopy(model).to("meta").eval()
    used: dict[int, nn.Parameter] = {}

    def record(module: nn.Module, args: object, output: object) -> None:
        for p in module.parameters(recurse=False):
            used[id(p)] = p

    handles = [m.register_forward_hook(record) for m in shadow.modules()]
    image = torch.empty(batch_size, in_channels, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            shadow(image)
    finally:
        for handle in handles:
            handle.remove()
    flops = int(counter.get_total_flops())
    return Complexity(
        params=sum(p.numel() for p in used.values()),
        params_total=count_parameters(model),
        macs=flops // _FLOPS_PER_MAC,
        flops=flops,
        input_size=(height, width),
        batch_size=batch_size,
    )


@dataclass(frozen=True)
class Latency:
    """Wall-clock seconds of ``repeats`` timed eval-mode forward passes (after warm-up)."""

    times_s: tuple[float, ...]
    input_size: tuple[int, int]
    batch_size: int
    threads: int

    @property
    def median_s(self) -> float:
        """Median seconds per forward pass."""
        return statistics.median(self.times_s)

    @property
    def per_image_s(self) -> float:
        """Median seconds per image."""
        return self.median_s / self.batch_size


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    batch_size: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    in_channels: int = 3,
    seed: int = 0,
) -> Latency:
    """Time eval-mode, no-grad forward passes of ``model`` on a random image (model's device).

    The model's training flag is restored afterwards. On a GPU the device is synchronised
    around each pass. The numbers depend on the machine and on ``torch.get_num_threads()``,
    which is recorded.

    Raises:
        ValueError: bad ``input_size``, ``batch_size``, ``repeats`` or ``warmup``.
    """
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_size)
    ):
        raise ValueError(f"input_size must be (H, W) with positive ints, got {input_size!r}")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, "
            f"{warmup}"
        )
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch_size, in_channels, *input_size, generator=generator).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.no_grad():
            for index in range(warmup + repeats):
                sync()
                start = time.perf_counter()
                model(image)
                sync()
                if index >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return Latency(
        times_s=tuple(times),
        input_size=(int(input_size[0]), int(input_size[1])),
        batch_size=batch_size,
        threads=torch.get_num_threads(),
    )


def layer_table(model: nn.Module) -> list[dict[str, object]]:
    """The model's top-level modules in order, each as ``{"layer", "type", "shape",
    "parameters"}`` (``shape``: a convolution's ``in -> out, kernel/stride``, a linear layer's
    ``in -> out``, else ``""``), and a last ``"total"`` row: a short account of a network in place
    of its module repr. Modules without parameters are left out."""
    rows: list[dict[str, object]] = []
    for name, module in model.named_children():
        count = sum(p.numel() for p in module.parameters())
        if not count:
            continue
        kind = type(module).__name__.removeprefix("Parametrized")
        shape = ""
        if isinstance(module, nn.Conv2d):
            shape = (
                f"{module.in_channels} -> {module.out_channels}, "
                f"{module.kernel_size[0]}x{module.kernel_size[1]} / {module.stride[0]}"
            )
        elif isinstance(module, nn.Linear):
            shape = f"{module.in_features} -> {module.out_features}"
        if hasattr(module, "parametrizations"):
            kind += " (spectral norm)"
        rows.append({"layer": name, "type": kind, "shape": shape, "parameters": count})
    total = sum(p.numel() for p in model.parameters())
    rows.append({"layer": "total", "type": "", "shape": "", "parameters": total})
    return rows
