"""Validation inference: whole-image or sliding-window prediction, scores, prediction export.

* ``mode="whole"`` (the authors' code): the network sees the whole image; its logits (1/8 of the
  input for the PSP networks) are upsampled bilinearly to the label's size (with the network's
  ``align_corners`` attribute where it has one: the released variants' ``True``, else ``False``)
  and turned into class probabilities.
* ``mode="sliding"``: windows of ``crop_size`` at a stride of ``ceil(crop * stride_rate)``, the
  last window of each row/column flush with the border; an image smaller than a window is padded
  (after normalisation, with 0 = the mean colour) and the padding cropped off again. Each pixel's
  probabilities are the average over the windows covering it.
* ``flip=True``: the probabilities are averaged with those of the horizontally flipped image
  (flipped back).

Scores come from :class:`skdlib.metrics.ConfusionMeter`; in a distributed run each process
evaluates its share of the images and the confusion matrices are summed across processes.

CLI::

    python -m skdlib.evaluate --checkpoint runs/x/checkpoints/final.pt --config runs/x/config.yaml \
        [--sliding] [--flip] [--split val] [--save-predictions DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skdlib.constants import IGNORE_INDEX
from skdlib.metrics import ConfusionMeter, scores_to_json

__all__ = ["evaluate", "main", "predict_probabilities", "sliding_windows"]

logger = logging.getLogger(__name__)

_MODES = ("whole", "sliding")


def _logits_at(model: nn.Module, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The model's logits for ``image`` ``(N, 3, h, w)`` upsampled to ``size``: ``(N, K, *size)``
    float32 (``align_corners`` as the model says, ``False`` when it says nothing)."""
    logits = model(image).logits.float()  # (N, K, h/s, w/s)
    if tuple(logits.shape[-2:]) != tuple(size):
        align = bool(getattr(model, "align_corners", False))
        logits = F.interpolate(
            logits, size=size, mode="bilinear", align_corners=align
        )  # (N, K, *size)
    return logits


def _probabilities(model: nn.Module, image: torch.Tensor, *, flip: bool) -> torch.Tensor:
    """Softmax probabilities ``(N, K, H, W)`` at the input's size, averaged with the flipped
    input."""
    size = (image.shape[-2], image.shape[-1])
    probs = torch.softmax(_logits_at(model, image, size), dim=1)  # (N, K, H, W)
    if flip:
        flipped = torch.softmax(_logits_at(model, image.flip(-1), size), dim=1).flip(
            -1
        )  # (N, K, H, W)
        probs = 0.5 * (probs + flipped)
    return probs


def sliding_windows(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis of length ``size``: every ``stride``, the last flush with the
    end.

    ``size <= window`` gives ``[0]`` (the caller pads to the window).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    starts.append(size - window)
    return starts


def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    *,
    mode: str = "whole",
    flip: bool = False,
    crop_size: tuple[int, int] | None = None,
    stride_rate: float = 2 / 3,
) -> torch.Tensor:
    """Class probabilities ``(N, K, H, W)`` for a normalised batch ``image`` ``(N, 3, H, W)``.

    The model must already be in eval mode; no gradient is recorded.

    Raises:
        ValueError: unknown ``mode``, a missing or non-positive ``crop_size`` in sliding mode, a
            ``stride_rate`` outside (0, 1], an image that is not ``(N, 3, H, W)``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (N, 3, H, W), got shape {tuple(image.shape)}")
    with torch.no_grad():
        if mode == "whole":
            return _probabilities(model, image, flip=flip)
        if crop_size is None or len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(
                "crop_size must be (height, width) of positive ints in sliding mode, got "
                f"{crop_size!r}"
            )
        if not 0.0 < stride_rate <= 1.0:
            raise ValueError(f"stride_rate must lie in (0, 1], got {stride_rate}")
        n, _, height, width = image.shape
        ch, cw = int(crop_size[0]), int(crop_size[1])
        pad_h, pad_w = max(ch - height, 0), max(cw - width, 0)
        padded = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)  # (N, 3, H + pad_h, W + pad_w)
        ph, pw = padded.shape[-2:]
        stride_h, stride_w = (
            max(1, math.ceil(ch * stride_rate)),
            max(1, math.ceil(cw * stride_rate)),
        )
        total: torch.Tensor | None = None
        count = torch.zeros(1, 1, ph, pw, device=image.device)  # (1, 1, H', W')
        for top in sliding_windows(ph, ch, stride_h):
            for left in sliding_windows(pw, cw, stride_w):
                window = padded[..., top : top + ch, left : left + cw]  # (N, 3, ch, cw)
                probs = _probabilities(model, window, flip=flip)  # (N, K, ch, cw)
                if total is None:
                    total = torch.zeros(
                        n, probs.shape[1], ph, pw, device=image.device
                    )  # (N, K, H', W')
                total[..., top : top + ch, left : left + cw] += probs
                count[..., top : top + ch, left : left + cw] += 1
        assert total is not None  # at least one window always exists
        return (total / count)[..., :height, :width]  # (N, K, H', W') -> (N, K, H, W)


def _batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    return [list(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)]


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    num_classes: int,
    device: str | torch.device,
    mode: str = "whole",
    flip: bool = False,
    crop_size: tuple[int, int] | None = None,
    stride_rate: float = 2 / 3,
    batch_size: int = 1,
    ignore_index: int = IGNORE_INDEX,
    rank: int = 0,
    world_size: int = 1,
    prediction_callback: Any = None,
    normalization: str = "imagenet",
) -> dict[str, Any]:
    """Scores of ``model`` on ``dataset`` (items
    ``{"image": (3, H, W) in [0, 1], "label": (H, W)}``).

    Images are normalised as in training: ``normalization`` names the convention
    (:data:`skdlib.data.transforms.NORMALIZATIONS`: ``"imagenet"`` statistics by default,
    ``"caffe_bgr"`` for the authors' released networks; ``data.normalize``). ``batch_size``
    images are stacked when they share a size (whole mode); sliding mode handles one image at a
    time. With ``world_size > 1`` process ``rank`` evaluates items ``rank, rank + world_size, ...``
    and the confusion matrices are summed with ``torch.distributed.all_reduce`` (every rank
    returns the same scores). ``prediction_callback(name, prediction (H, W) int64 cpu)`` is called
    for every image (e.g. to save PNGs).

    Returns:
        :func:`skdlib.metrics.segmentation_scores` of the summed matrix (``miou``, ``class_iou``,
        ``pixel_acc``, ...), plus ``num_images``.

    The model is put in eval mode and its previous mode restored afterwards.
    """
    from skdlib.data.transforms import get_normalization

    normalize = get_normalization(normalization)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to evaluate")
    if world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise ValueError(
                f"world_size={world_size} needs an initialised torch.distributed process group"
            )
    device = torch.device(device)
    meter = ConfusionMeter(num_classes, ignore_index=ignore_index)
    meter.matrix = meter.matrix.to(device)
    indices = list(range(rank, len(dataset), world_size))
    step = batch_size if mode == "whole" else 1
    was_training = model.training
    model.eval()
    try:
        for group in _batches(indices, step):
            items = [dataset[i] for i in group]
            sizes = {tuple(item["image"].shape) for item in items}
            chunks = [items] if len(sizes) == 1 else [[item] for item in items]
            for chunk in chunks:
                image = torch.stack([item["image"] for item in chunk]).to(device)  # (B, 3, H, W)
                label = torch.stack([item["label"] for item in chunk]).to(device)  # (B, H, W)
                probs = predict_probabilities(
                    model,
                    normalize(image),
                    mode=mode,
                    flip=flip,
                    crop_size=crop_size,
                    stride_rate=stride_rate,
                )
                pred = probs.argmax(dim=1)  # (B, K, H, W) -> (B, H, W)
                meter.update(pred, label)
                if prediction_callback is not None:
                    for item, one in zip(chunk, pred, strict=True):
                        prediction_callback(str(item.get("name", "")), one.cpu())
    finally:
        model.train(was_training)
    if world_size > 1:
        dist.all_reduce(meter.matrix)
        count = torch.tensor([len(indices)], device=device)
        dist.all_reduce(count)
        num_images = int(count.item())
    else:
        num_images = len(indices)
    scores = meter.compute()
    scores["num_images"] = num_images
    return scores


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _train_id_table(data_name: str) -> np.ndarray | None:
    """The data package's trainId -> labelId table for Cityscapes, if it exports one."""
    if data_name != "cityscapes":
        return None
    import skdlib.data as data

    table = getattr(data, "cityscapes_train_id_to_label_id", None)
    if table is None:
        try:
            from skdlib.data import cityscapes  # type: ignore[attr-defined]
        except ImportError:
            return None
        table = getattr(cityscapes, "cityscapes_train_id_to_label_id", None)
    if table is None:
        return None
    if callable(table):
        table = table()
    if isinstance(table, dict):
        lut = np.zeros(256, dtype=np.uint8)
        for train_id, label_id in table.items():
            lut[int(train_id)] = int(label_id)
        return lut
    lut = np.zeros(256, dtype=np.uint8)
    values = np.asarray(table, dtype=np.int64)
    lut[: len(values)] = values
    return lut


def _read_student_state(path: Path) -> dict[str, torch.Tensor]:
    from skdlib.train.runfolder import load_checkpoint

    state = load_checkpoint(path)
    if "student" in state and isinstance(state["student"], dict):
        return state["student"]
    return state


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skdlib.evaluate",
        description="Score a checkpoint on a split, optionally save predictions.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="final.pt (state dict) or last.pt (full checkpoint)"
    )
    parser.add_argument(
        "--config", required=True, help="experiment config (e.g. the run's config.yaml)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default=None, help="data split (default: data.val_split)")
    parser.add_argument(
        "--sliding", action="store_true", help="sliding-window inference (default: eval.mode)"
    )
    parser.add_argument(
        "--flip", action="store_true", help="average with the flipped image (default: eval.flip)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: train.device)")
    parser.add_argument(
        "--save-predictions", default=None, metavar="DIR", help="write prediction PNGs here"
    )
    parser.add_argument("--output", default=None, help="also write the scores as JSON to this file")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m skdlib.evaluate``: score a checkpoint on a split, optionally save predictions.

    Bad input (a config key or value, a missing or torn checkpoint) prints one line naming it and
    exits 2; ``--debug`` shows the traceback instead (:func:`skdlib.errors.run_cli`).
    """
    from skdlib.errors import run_cli

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_cli(lambda: _score(args), debug=args.debug, logger=logger)


def _prediction_saver(name: str, out: Path) -> Any:
    """A callback writing each prediction as ``trainId`` (and ``labelId``) PNGs under ``out``."""
    table = _train_id_table(name)

    def save(image_name: str, prediction: torch.Tensor) -> None:
        array = prediction.numpy().astype(np.uint8)
        _save_png(out / "trainId" / f"{image_name}.png", array)
        if table is not None:
            _save_png(out / "labelId" / f"{image_name}.png", table[array])

    return save


def _score(args: argparse.Namespace) -> int:
    from skdlib.train.build import build_dataset_for, build_network, resolve_device
    from skdlib.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint: file not found: {checkpoint}")
    device = resolve_device(args.device or cfg.train.device)
    split = args.split or cfg.data.val_split
    dataset = build_dataset_for(cfg, split)
    num_classes = cfg.model.num_classes or dataset.num_classes
    model = build_network(cfg, num_classes, role="student")
    model.load_state_dict(_read_student_state(checkpoint), strict=True)
    model.to(device)
    mode = "sliding" if args.sliding else cfg.eval.mode
    scores = evaluate(
        model,
        dataset,
        num_classes=num_classes,
        device=device,
        mode=mode,
        flip=args.flip or cfg.eval.flip,
        crop_size=tuple(cfg.eval.crop_size or cfg.data.crop_size),
        stride_rate=cfg.eval.stride_rate,
        normalization=cfg.data.normalize,
        prediction_callback=(
            _prediction_saver(cfg.data.name, Path(args.save_predictions))
            if args.save_predictions
            else None
        ),
    )
    result = {
        "split": split,
        "mode": mode,
        "flip": args.flip or cfg.eval.flip,
        "class_names": list(getattr(dataset, "class_names", [])),
        **scores_to_json(scores),
    }
    text = json.dumps(result, indent=2, allow_nan=False)
    if args.output:
        from skdlib.train.runfolder import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
