"""Checks and precision rules the losses share: input shapes, the temperature, the dtype a loss
computes in, and autocast switched off where cancellation needs full precision."""

from __future__ import annotations

import contextlib
import math

import torch

__all__ = [
    "at_least_float32",
    "check_feature_pair",
    "check_logits_pair",
    "check_nonempty",
    "check_temperature",
    "compute_dtype",
    "full_precision",
]


def check_logits_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Raise ``ValueError`` unless both logits are ``(N, K, H, W)`` of one shape."""
    if student_logits.dim() != 4:
        raise ValueError(
            f"student_logits must be (N, K, H, W), got rank {student_logits.dim()} "
            f"shape {tuple(student_logits.shape)}"
        )
    if teacher_logits.dim() != 4:
        raise ValueError(
            f"teacher_logits must be (N, K, H, W), got rank {teacher_logits.dim()} "
            f"shape {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape (no broadcasting), got "
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}"
        )


def check_feature_pair(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> None:
    """Both ``(N, C, H, W)``; batch and spatial sizes equal; channels may differ."""
    for name, f in (("student_feat", student_feat), ("teacher_feat", teacher_feat)):
        if f.dim() != 4:
            raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(f.shape)}")
    s, t = student_feat.shape, teacher_feat.shape
    if s[0] != t[0] or s[2:] != t[2:]:
        raise ValueError(
            "student_feat and teacher_feat must have the same batch and spatial sizes "
            f"(channels may differ), got student {tuple(s)} and teacher {tuple(t)}"
        )


def check_nonempty(student_logits: torch.Tensor) -> None:
    """Raise ``ValueError`` for a zero-sized dimension (the reduction would divide by 0)."""
    if student_logits.numel() == 0:
        raise ValueError(
            "student_logits and teacher_logits must have no zero-sized dimension, got shape "
            f"{tuple(student_logits.shape)}"
        )


def check_temperature(temperature: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Promote half / bfloat16 to float32; float32 and float64 are kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def compute_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """float32 at least; float64 when asked for or when the input already is float64."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32, torch.float64 or None, got {dtype}")
        return dtype
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device``: the Gram identity cancels large terms; bf16/fp16 ruin it."""
    is_available = getattr(torch.amp, "is_autocast_available", None)
    if is_available is not None and not is_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)
