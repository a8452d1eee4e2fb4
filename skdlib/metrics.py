"""Segmentation metrics: confusion matrix, IoU scores and a streaming accumulator.

Conventions
-----------
* The confusion matrix ``M`` has shape ``(K, K)`` and dtype ``int64``; **rows are the ground
  truth (target), columns are the prediction**: ``M[t, p]`` counts pixels of true class ``t``
  predicted as ``p``. Pixels whose target equals ``ignore_index`` are not counted.
* For class ``k``: ``TP = M[k, k]``, ``FN = sum_p M[k, p] - TP`` (row), ``FP = sum_t M[t, k] - TP``
  (column), ``IoU_k = TP / (TP + FP + FN)``.
* A class absent from both prediction and target (``TP + FP + FN == 0``) has IoU ``NaN`` and is left
  out of the mean, exactly as the official Cityscapes evaluation
  (``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``) does: it returns ``NaN`` for
  such a class and averages the remaining ones. A class that is predicted but absent from the target
  has IoU 0 (it has false positives) and does count.
* :func:`segmentation_scores` returns plain Python floats (``NaN`` kept, convenient for arithmetic).
  Use :func:`scores_to_json` before writing JSON: it turns every ``NaN`` into ``None`` (``null``),
  so the file is strict JSON (``json.dump(..., allow_nan=False)`` succeeds).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from skdlib.constants import IGNORE_INDEX

__all__ = [
    "ConfusionMeter",
    "confusion_matrix",
    "scores_to_json",
    "segmentation_scores",
]

# Largest number of offending values quoted in an error message.
_MAX_QUOTED_VALUES = 8
# Interleaved copies of the histogram in confusion_matrix (see there).
_HISTOGRAM_BANKS = 4


def _quote_values(values: Tensor) -> str:
    """Format the first few distinct values of ``values`` for an error message."""
    distinct = torch.unique(values).tolist()
    shown = ", ".join(str(v) for v in distinct[:_MAX_QUOTED_VALUES])
    more = "" if len(distinct) <= _MAX_QUOTED_VALUES else f", ... ({len(distinct)} distinct)"
    return f"[{shown}{more}]"


def _check_label_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of class indices, got {type(value).__name__}"
        )
    if value.is_floating_point() or value.is_complex():
        raise ValueError(
            f"{name} must be an integer tensor of class indices, got dtype {value.dtype}; "
            "take the argmax over the class dimension of the logits first"
        )
    if value.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (N, H, W) or (H, W), got {tuple(value.shape)}")
    return value


def confusion_matrix(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Count (target, prediction) pairs into a ``(K, K)`` int64 matrix, rows = target, cols =
    prediction.

    Args:
        pred: predicted class indices, integer tensor of shape ``(N, H, W)`` or ``(H, W)``, values
            in ``[0, K)``.
        target: ground-truth class indices, same shape as ``pred``, values in ``[0, K)`` or
            ``ignore_index``.
        num_classes: ``K``.
        ignore_index: target value of pixels that are not counted (their prediction is not looked at
            for counting, but must still be a valid class).

    Returns:
        ``(K, K)`` int64 tensor on the inputs' device; ``M.sum()`` equals the number of non-ignored
        pixels.

    Raises:
        ValueError: non-tensor or floating inputs, mismatched shapes or devices,
            ``num_classes < 1``, ``ignore_index`` inside ``[0, K)``, prediction values outside
            ``[0, K)``, target values outside ``[0, K)`` other than ``ignore_index``.

    One bincount of ``target * K + pred`` over all pixels, no Python loop over pixels and no boolean
    gather: ignored pixels land in bins beyond ``K * K`` that are dropped, and any other bin beyond
    ``K * K`` reveals an invalid target value. ``ignore_index`` must lie outside ``[0, K)``.
    """
    pred, target = _check_pair(pred, target, num_classes, ignore_index)
    k = num_classes
    if pred.numel() == 0:
        return torch.zeros((k, k), dtype=torch.int64, device=pred.device)
    pred_min, pred_max = torch.aminmax(pred)
    if int(pred_min) < 0 or int(pred_max) >= k:
        bad = pred[(pred < 0) | (pred >= k)]
        raise ValueError(
            f"pred values must lie in [0, num_classes={k}), found {_quote_values(bad)}"
        )
    # The ignore value as seen by the counting below: any value >= K works, because the bins of
    # ignored pixels, [u*K, u*K + K), then lie beyond the K*K class bins and are dropped. A negative
    # ignore_index is first mapped to K.
    if ignore_index < 0:
        target = target.masked_fill(target == ignore_index, k)
        ignore_value = k
    else:
        ignore_value = ignore_index
    t_min, t_max = torch.aminmax(target)
    t_min, t_max = int(t_min), int(t_max)
    if t_min < 0 or t_max > max(k - 1, ignore_value):
        bad = target[((target < 0) | (target >= k)) & (target != ignore_value)]
        raise ValueError(_target_error(k, ignore_index, bad))
    counts = _pair_histogram(pred, target, k, num_bins=max(t_max + 1, k) * k)
    # Bins other than the class bins [0, K*K) and the ignore bins [u*K, u*K + K) come from target
    # values outside [0, K) that are not the ignore value: report them without another pixel pass.
    stray = counts.clone()
    stray[: k * k] = 0
    stray[ignore_value * k : ignore_value * k + k] = 0
    if bool(stray.any()):
        bad = torch.nonzero(stray).reshape(-1) // k  # (M,) offending target values
        raise ValueError(_target_error(k, ignore_index, bad))
    return counts[: k * k].reshape(k, k).to(torch.int64)  # (K*K,) -> (K, K): rows target, cols pred


def _check_pair(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """The checks of :func:`confusion_matrix` that need no pass over the pixels."""
    pred = _check_label_tensor("pred", pred)
    target = _check_label_tensor("target", target)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}"
        )
    if pred.device != target.device:
        raise ValueError(
            f"pred and target must be on the same device, got {pred.device} and {target.device}"
        )
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index={ignore_index} is a class index for num_classes={num_classes}; "
            "use a value outside [0, num_classes), e.g. 255"
        )
    return pred, target


def _pair_histogram(pred: Tensor, target: Tensor, k: int, *, num_bins: int) -> Tensor:
    """Counts ``(num_bins,)`` of ``target * K + pred`` over all pixels.

    ``flat = target * K + pred`` in the narrowest integer type that holds the largest bin index:
    narrow types halve or quarter the memory traffic of the passes. Where int16 still has room,
    the histogram is split into ``_HISTOGRAM_BANKS`` interleaved copies along the last dimension:
    label maps are blocky, so neighbouring pixels hit the same counter, and spreading them over
    banks avoids serialised increments (measured ~20% faster on 1024x2048 maps); the banks are
    summed.
    """
    banks = _HISTOGRAM_BANKS if _HISTOGRAM_BANKS * num_bins <= torch.iinfo(torch.int16).max else 1
    largest = banks * num_bins - 1
    if largest <= torch.iinfo(torch.int16).max:
        index_dtype = torch.int16
    elif largest <= torch.iinfo(torch.int32).max:
        index_dtype = torch.int32
    else:
        index_dtype = torch.int64
    flat = torch.add(pred.to(index_dtype), target.to(index_dtype), alpha=k)  # same shape as pred
    if banks > 1:
        width = flat.shape[-1]
        bank_offset = (torch.arange(width, device=flat.device) % banks) * num_bins  # (W,)
        # (..., W) + (W,): pixel column w counts in bank w % banks
        flat += bank_offset.to(index_dtype)
    # (N*H*W,) -> (banks*bins,)
    counts = torch.bincount(flat.reshape(-1), minlength=banks * num_bins)
    return counts[: banks * num_bins].reshape(banks, num_bins).sum(dim=0)  # -> (bins,)


def _target_error(k: int, ignore_index: int, bad: Tensor) -> str:
    return (
        f"target values must lie in [0, num_classes={k}) or equal ignore_index={ignore_index}, "
        f"found {_quote_values(bad)}"
    )


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def segmentation_scores(confusion: Tensor) -> dict[str, Any]:
    """Scores of a ``(K, K)`` confusion matrix (rows = target, cols = prediction).

    Returns a dict of plain Python values:

    * ``miou``: mean of ``class_iou`` over classes whose IoU is not NaN (NaN if all are NaN).
    * ``class_iou``: list of ``K`` floats, ``TP / (TP + FP + FN)``; NaN when the class is absent
      from both target and prediction (as the official Cityscapes evaluation).
    * ``pixel_acc``: ``trace(M) / sum(M)`` over non-ignored pixels (NaN for an empty matrix).
    * ``class_acc``: list of ``K`` floats, ``TP / (TP + FN)`` (recall); NaN when the class is absent
      from the target.
    * ``mean_acc``: mean of ``class_acc`` over non-NaN entries.
    * ``freq_weighted_iou``: ``sum_k (row_k / sum(M)) * IoU_k`` over classes present in the target.
    * ``num_pixels``: ``int(sum(M))``.

    Counts are converted to float64 before division, so the values are exact to double precision.
    """
    if not isinstance(confusion, Tensor):
        raise ValueError(f"confusion must be a torch.Tensor, got {type(confusion).__name__}")
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] < 1:
        raise ValueError(
            f"confusion must have shape (K, K) with K >= 1, got {tuple(confusion.shape)}"
        )
    if confusion.is_floating_point() or confusion.is_complex():
        raise ValueError(f"confusion must hold integer counts, got dtype {confusion.dtype}")
    if bool((confusion < 0).any()):
        raise ValueError("confusion must hold non-negative counts, found negative entries")

    m = confusion.detach().to(device="cpu", dtype=torch.float64)  # (K, K)
    tp = torch.diagonal(m)  # (K,)
    gt = m.sum(dim=1)  # (K,) row sums: pixels of each true class
    predicted = m.sum(dim=0)  # (K,) column sums: pixels predicted as each class
    union = gt + predicted - tp  # (K,) TP + FP + FN
    total = float(m.sum())

    class_iou = [
        float(t / u) if u > 0 else float("nan")
        for t, u in zip(tp.tolist(), union.tolist(), strict=True)
    ]
    class_acc = [
        float(t / g) if g > 0 else float("nan")
        for t, g in zip(tp.tolist(), gt.tolist(), strict=True)
    ]
    if total > 0:
        pixel_acc = float(tp.sum()) / total
        freq_weighted_iou = sum(
            (g / total) * iou for g, iou in zip(gt.tolist(), class_iou, strict=True) if g > 0
        )
    else:
        pixel_acc = float("nan")
        freq_weighted_iou = float("nan")
    return {
        "miou": _nanmean(class_iou),
        "class_iou": class_iou,
        "pixel_acc": pixel_acc,
        "class_acc": class_acc,
        "mean_acc": _nanmean(class_acc),
        "freq_weighted_iou": float(freq_weighted_iou),
        "num_pixels": int(total),
    }


def scores_to_json(scores: Any) -> Any:
    """Return a copy of ``scores`` (nested dicts/lists/tuples of numbers) with NaN turned into
    ``None``.

    The result is strict JSON: ``json.dumps(scores_to_json(s), allow_nan=False)`` succeeds.
    Tuples become lists; infinite floats are also turned into ``None``.
    """
    if isinstance(scores, dict):
        return {str(key): scores_to_json(value) for key, value in scores.items()}
    if isinstance(scores, (list, tuple)):
        return [scores_to_json(value) for value in scores]
    if isinstance(scores, float) and not math.isfinite(scores):
        return None
    return scores


class ConfusionMeter:
    """Streaming confusion matrix: ``update`` per batch, ``compute`` at the end.

    The running ``(K, K)`` int64 matrix is the public attribute ``matrix``; it lives on the device
    of the last batch given to :meth:`update`. Across processes, sum it in place (for example
    ``torch.distributed.all_reduce(meter.matrix)``) before :meth:`compute`; within one process,
    :meth:`merge` adds another meter's counts.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix: Tensor = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add the counts of one batch (see :func:`confusion_matrix` for shapes and checks)."""
        batch = confusion_matrix(pred, target, self.num_classes, ignore_index=self.ignore_index)
        self.matrix = self.matrix.to(batch.device) + batch

    def merge(self, other: ConfusionMeter) -> None:
        """Add the counts of ``other`` (same ``num_classes`` and ``ignore_index``) into this
        meter."""
        if not isinstance(other, ConfusionMeter):
            raise ValueError(f"other must be a ConfusionMeter, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                "cannot merge meters with different settings: "
                f"(num_classes, ignore_index) = {(self.num_classes, self.ignore_index)} "
                f"vs {(other.num_classes, other.ignore_index)}"
            )
        self.matrix = self.matrix + other.matrix.to(self.matrix.device)

    def compute(self) -> dict[str, Any]:
        """Scores of the accumulated matrix (see :func:`segmentation_scores`)."""
        return segmentation_scores(self.matrix)

    def reset(self) -> None:
        """Zero the counts (keeps the device)."""
        self.matrix = torch.zeros_like(self.matrix)
