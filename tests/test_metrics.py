"""Tests of skdlib.metrics: hand-computed cases, a plain re-derivation, the official Cityscapes
tool."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skdlib.metrics import ConfusionMeter, confusion_matrix, scores_to_json, segmentation_scores


def _same(a: float, b: float, tol: float = 1e-12) -> bool:
    """Equal within ``tol``, or both NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def _random_maps(seed: int, shape: tuple[int, ...], k: int, ignore_fraction: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, k, shape, generator=g)
    target = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_fraction] = 255
    return pred, target


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------
def test_two_by_two_by_hand() -> None:
    pred = torch.tensor([[0, 1], [1, 1]])
    target = torch.tensor([[0, 1], [0, 255]])
    m = confusion_matrix(pred, target, 3)
    # Pixels: (t0,p0), (t1,p1), (t0,p1), ignored. Rows = target, columns = prediction.
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert m.dtype == torch.int64 and m.device == pred.device
    s = segmentation_scores(m)
    # IoU0 = 1 / (1 + FP 0 + FN 1); IoU1 = 1 / (1 + FP 1 + FN 0); class 2 absent from both: NaN.
    assert s["class_iou"][:2] == [0.5, 0.5] and math.isnan(s["class_iou"][2])
    assert s["miou"] == 0.5
    assert s["pixel_acc"] == pytest.approx(2 / 3)
    assert s["class_acc"][:2] == [0.5, 1.0] and math.isnan(s["class_acc"][2])
    assert s["mean_acc"] == 0.75
    assert s["freq_weighted_iou"] == pytest.approx(2 / 3 * 0.5 + 1 / 3 * 0.5)
    assert s["num_pixels"] == 3


def test_predicted_but_absent_class_counts_as_zero() -> None:
    pred = torch.tensor([[2, 2], [0, 0]])
    target = torch.zeros(2, 2, dtype=torch.int64)
    s = segmentation_scores(confusion_matrix(pred, target, 3))
    # Class 0: TP 2, FN 2 -> 0.5. Class 2: FP 2, no TP -> 0 (counted). Class 1 absent: NaN.
    assert s["class_iou"][0] == 0.5 and math.isnan(s["class_iou"][1]) and s["class_iou"][2] == 0.0
    assert s["miou"] == 0.25
    # Accuracy is per target class: class 2 has no target pixels, so it is NaN there.
    assert s["class_acc"][0] == 0.5 and math.isnan(s["class_acc"][2]) and s["mean_acc"] == 0.5


def test_without_ignored_pixels_and_few_target_classes() -> None:
    m = confusion_matrix(torch.tensor([[1, 2, 0]]), torch.tensor([[0, 0, 0]]), 3)
    assert m.tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]


def test_batched_and_unbatched_shapes() -> None:
    pred, target = _random_maps(0, (3, 5, 7), 4)
    whole = confusion_matrix(pred, target, 4)
    per_image = sum(confusion_matrix(pred[i], target[i], 4) for i in range(3))
    assert torch.equal(whole, per_image)
    assert int(whole.sum()) == int((target != 255).sum())


def test_empty_and_all_ignored() -> None:
    empty = confusion_matrix(
        torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long), 3
    )
    assert empty.shape == (3, 3) and int(empty.sum()) == 0
    s = segmentation_scores(
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255), 3)
    )
    assert (
        math.isnan(s["miou"])
        and math.isnan(s["pixel_acc"])
        and all(math.isnan(v) for v in s["class_iou"])
    )
    assert scores_to_json(s)["miou"] is None


# ---------------------------------------------------------------------------------------------
# Parity with a plain re-derivation (per-class loops, explicit TP/FP/FN)
# ---------------------------------------------------------------------------------------------
def _plain_scores(pred: torch.Tensor, target: torch.Tensor, k: int, ignore: int) -> dict:
    valid = target != ignore
    ious, accs, matrix = [], [], [[0] * k for _ in range(k)]
    # one pixel at a time
    for t, p in zip(target.reshape(-1).tolist(), pred.reshape(-1).tolist(), strict=True):
        if t != ignore:
            matrix[t][p] += 1
    for c in range(k):
        tp = int(((pred == c) & (target == c) & valid).sum())
        fp = int(((pred == c) & (target != c) & valid).sum())
        fn = int(((pred != c) & (target == c) & valid).sum())
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else float("nan"))
        accs.append(tp / (tp + fn) if tp + fn else float("nan"))
    present = [v for v in ious if not math.isnan(v)]
    correct = int(((pred == target) & valid).sum())
    return {
        "matrix": matrix,
        "class_iou": ious,
        "miou": sum(present) / len(present),
        "pixel_acc": correct / int(valid.sum()),
        "mean_acc": float(np.nanmean(accs)),
    }


@pytest.mark.parametrize(
    ("k", "ignore", "dtype"),
    [(5, 255, torch.uint8), (19, 255, torch.int64), (6, -1, torch.int32), (200, 255, torch.int16)],
)
def test_parity_with_plain_rederivation(k: int, ignore: int, dtype: torch.dtype) -> None:
    pred, target = _random_maps(k, (2, 9, 11), k)
    target[target == 255] = ignore
    target[0, 0, :] = k - 1 if k > 2 else 0  # make sure some class is present
    # Leave one class out of both maps so that a NaN appears.
    absent = 1
    pred[pred == absent] = 0
    target[target == absent] = 0
    pred, target = pred.to(dtype), target.to(dtype)
    m = confusion_matrix(pred, target, k, ignore_index=ignore)
    plain = _plain_scores(pred, target, k, ignore)
    assert m.tolist() == plain["matrix"]
    s = segmentation_scores(m)
    assert math.isnan(s["class_iou"][absent])
    assert all(_same(a, b) for a, b in zip(s["class_iou"], plain["class_iou"], strict=True))
    assert _same(s["miou"], plain["miou"]) and _same(s["pixel_acc"], plain["pixel_acc"])
    assert _same(s["mean_acc"], plain["mean_acc"])


# ---------------------------------------------------------------------------------------------
# Ignore handling, invariances, streaming
# ---------------------------------------------------------------------------------------------
def test_predictions_on_ignored_pixels_do_not_count() -> None:
    pred, target = _random_maps(1, (2, 16, 16), 6, ignore_fraction=0.3)
    ignored = target == 255
    other = pred.clone()
    other[ignored] = (other[ignored] + 1) % 6
    assert torch.equal(confusion_matrix(pred, target, 6), confusion_matrix(other, target, 6))


def test_negative_ignore_index_equals_255() -> None:
    pred, target = _random_maps(2, (2, 8, 8), 4)
    shifted = target.masked_fill(target == 255, -100)
    assert torch.equal(
        confusion_matrix(pred, target, 4), confusion_matrix(pred, shifted, 4, ignore_index=-100)
    )


def test_class_permutation_permutes_scores() -> None:
    k = 5
    pred, target = _random_maps(3, (2, 12, 12), k)
    perm = torch.tensor([3, 0, 4, 1, 2])
    lut = torch.cat([perm, torch.zeros(256 - k, dtype=torch.long)])
    lut[255] = 255
    s = segmentation_scores(confusion_matrix(pred, target, k))
    sp = segmentation_scores(confusion_matrix(lut[pred], lut[target], k))
    for c in range(k):
        assert _same(s["class_iou"][c], sp["class_iou"][int(perm[c])])
    assert _same(s["miou"], sp["miou"], 1e-15)


def test_streaming_equals_one_shot_and_merge_and_reset() -> None:
    pred, target = _random_maps(4, (6, 10, 14), 7)
    one_shot = confusion_matrix(pred, target, 7)
    meter = ConfusionMeter(7)
    for i in range(0, 6, 2):  # batches of 2
        meter.update(pred[i : i + 2], target[i : i + 2])
    assert torch.equal(meter.matrix, one_shot)
    singles = ConfusionMeter(7)
    for i in range(6):  # single images, (H, W)
        singles.update(pred[i], target[i])
    assert torch.equal(singles.matrix, one_shot)
    streamed, direct = meter.compute(), segmentation_scores(one_shot)
    assert all(
        _same(a, b, 0.0) for a, b in zip(streamed["class_iou"], direct["class_iou"], strict=True)
    )
    assert _same(streamed["miou"], direct["miou"], 0.0)
    first, second = ConfusionMeter(7), ConfusionMeter(7)
    first.update(pred[:3], target[:3])
    second.update(pred[3:], target[3:])
    first.merge(second)
    assert torch.equal(first.matrix, one_shot)
    # all_reduce-friendly: the matrix is a plain summable tensor.
    assert torch.equal(first.matrix, ConfusionMeter(7).matrix + one_shot)
    first.reset()
    assert int(first.matrix.sum()) == 0 and first.matrix.shape == (7, 7)
    with pytest.raises(ValueError, match=r"cannot merge meters with different settings"):
        first.merge(ConfusionMeter(6))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_errors() -> None:
    p = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"same shape, got pred \(2, 3\) and target \(3, 2\)"):
        confusion_matrix(p, torch.zeros(3, 2, dtype=torch.long), 3)
    with pytest.raises(
        ValueError, match=r"pred values must lie in \[0, num_classes=3\), found \[3, 7\]"
    ):
        confusion_matrix(torch.tensor([[0, 3], [7, 1]]), torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"pred values must lie in .*found \[-1\]"):
        confusion_matrix(torch.tensor([[0, -1]]), torch.zeros(1, 2, dtype=torch.long), 3)
    with pytest.raises(
        ValueError,
        match=r"target values must lie in \[0, num_classes=3\) or equal "
        r"ignore_index=255, found \[3\]",
    ):
        confusion_matrix(p, torch.tensor([[0, 3, 255], [1, 1, 1]]), 3)
    with pytest.raises(ValueError, match=r"target values .* found \[300\]"):
        confusion_matrix(p, torch.tensor([[0, 300, 255], [1, 1, 1]]), 3)
    with pytest.raises(ValueError, match=r"target values .* found \[-2\]"):
        confusion_matrix(p, torch.tensor([[0, -2, 255], [1, 1, 1]]), 3)
    with pytest.raises(ValueError, match=r"target values .* found \[255\]"):
        confusion_matrix(p, torch.tensor([[0, 255, 1], [1, 1, 1]]), 3, ignore_index=-1)
    with pytest.raises(
        ValueError, match=r"pred must be an integer tensor .* got dtype torch.float32"
    ):
        confusion_matrix(p.float(), p, 3)
    with pytest.raises(
        ValueError, match=r"pred must have shape \(N, H, W\) or \(H, W\), got \(6,\)"
    ):
        confusion_matrix(p.reshape(6), p.reshape(6), 3)
    with pytest.raises(ValueError, match=r"num_classes must be a positive int, got 0"):
        confusion_matrix(p, p, 0)
    with pytest.raises(ValueError, match=r"ignore_index=1 is a class index for num_classes=3"):
        confusion_matrix(p, p, 3, ignore_index=1)
    with pytest.raises(ValueError, match=r"pred must be a torch.Tensor"):
        confusion_matrix(np.zeros((2, 2), dtype=np.int64), p, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"confusion must have shape \(K, K\)"):
        segmentation_scores(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"confusion must hold integer counts"):
        segmentation_scores(torch.zeros(2, 2))


# ---------------------------------------------------------------------------------------------
# JSON and golden values
# ---------------------------------------------------------------------------------------------
def test_scores_to_json_is_strict_json() -> None:
    s = segmentation_scores(confusion_matrix(torch.tensor([[0, 0]]), torch.tensor([[0, 1]]), 3))
    assert math.isnan(s["class_iou"][2])
    j = scores_to_json(s)
    assert j["class_iou"][2] is None and j["class_iou"][0] == 0.5
    text = json.dumps(j, allow_nan=False)
    assert json.loads(text) == j
    assert all(isinstance(v, float) for k, v in s.items() if k in ("miou", "pixel_acc", "mean_acc"))


def test_golden_values() -> None:
    # Deterministic arithmetic maps (no RNG): stored numbers guard against silent drift.
    i = torch.arange(24).reshape(24, 1)
    j = torch.arange(32).reshape(1, 32)
    target = (i * 7 + j * 3) % 6  # (24, 32)
    pred = (i * 7 + j * 3 + ((i * j) % 5 == 0).long() * (i % 3)) % 6  # (24, 32): mostly right
    target[(i + j) % 11 == 0] = 255
    m = confusion_matrix(pred, target, 6)
    assert m.sum().item() == 699 and m.trace().item() == 532
    assert m[1].tolist() == [0, 80, 37, 0, 0, 0] and m[:, 1].tolist() == [0, 80, 0, 0, 0, 47]
    s = segmentation_scores(m)
    assert s["miou"] == pytest.approx(0.6478492078379262, abs=1e-15)
    assert s["pixel_acc"] == pytest.approx(532 / 699, abs=1e-15)
    assert s["class_iou"][1] == pytest.approx(0.4878048780487805, abs=1e-15)  # TP 80, FP 47, FN 37
    assert s["mean_acc"] == pytest.approx(0.7610890067786619, abs=1e-15)
    assert s["freq_weighted_iou"] == pytest.approx(0.6478474949753805, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# Equality with the official Cityscapes evaluation
# ---------------------------------------------------------------------------------------------
def _cityscapes_tables() -> tuple[np.ndarray, list[str]]:
    """trainId -> labelId lookup (255 -> 0, 'unlabeled') and the 19 class names in trainId order."""
    from cityscapesscripts.helpers.labels import labels

    lut = np.zeros(
        256, dtype=np.uint8
    )  # every unmapped train id -> labelId 0 ('unlabeled', ignored)
    names = [""] * 19
    for label in labels:
        if 0 <= label.trainId < 19 and not label.ignoreInEval:
            lut[label.trainId] = label.id
            names[label.trainId] = label.name
    assert all(names)
    return lut, names


def test_equal_to_official_cityscapes_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The official module reads CITYSCAPES_DATASET at import to place its default paths; point it at
    # tmp_path so nothing is read or written elsewhere.
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    lut, names = _cityscapes_tables()
    g = torch.Generator().manual_seed(7)
    k, shape = 19, (3, 40, 56)
    target = torch.randint(0, k, shape, generator=g)
    pred = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.15] = 255
    # Class 16 (train) absent from both maps -> NaN in both tools; class 17 predicted only -> IoU 0.
    target[(target == 16) | (target == 17)] = 0
    pred[pred == 16] = 1
    pred_files, gt_files = [], []
    for n in range(shape[0]):
        gt_path = tmp_path / f"img{n}_gtFine_labelIds.png"
        pred_path = tmp_path / f"img{n}_pred_labelIds.png"
        Image.fromarray(lut[target[n].numpy()]).save(gt_path)
        Image.fromarray(lut[pred[n].numpy()]).save(pred_path)
        gt_files.append(str(gt_path))
        pred_files.append(str(pred_path))

    args = copy.copy(official.args)
    args.evalInstLevelScore = False  # needs *_instanceIds.png files; not part of IoU
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.exportFile = str(tmp_path / "result.json")
    result = official.evaluateImgLists(pred_files, gt_files, args)

    ours = segmentation_scores(confusion_matrix(pred, target, k))
    official_iou = [result["classScores"][name] for name in names]
    assert math.isnan(official_iou[16]) and math.isnan(ours["class_iou"][16])
    assert official_iou[17] == 0.0 and ours["class_iou"][17] == 0.0
    for c in range(k):
        assert _same(ours["class_iou"][c], official_iou[c], 1e-9), (c, names[c])
    # The official mean averages the non-NaN class scores (ignored labels and absent classes are
    # NaN).
    assert _same(ours["miou"], result["averageScoreClasses"], 1e-9)
