"""Tests of skdlib.models.export: ONNX logits match PyTorch, dynamic batch, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from skdlib.models import build_model, check_onnx, export_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SIZE = (64, 64)


def _calibrated(name: str, **options: object) -> nn.Module:
    """A model whose BatchNorm statistics come from data, as after training.

    Freshly initialised BN (mean 0, variance 1) does not normalise in eval mode, so activations
    grow layer after layer (logits of order 1e7), where float32 rounding alone exceeds 1e-4.
    """
    torch.manual_seed(0)
    model = build_model(name, 3, **options)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, *SIZE))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[nn.Module, Path]]:
    folder = tmp_path_factory.mktemp("onnx")
    result = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, options in (("pspnet_resnet18", {"width": 0.5}), ("espnet", {})):
            model = _calibrated(name, **options).train()
            path = export_onnx(model, folder / "sub" / f"{name}.onnx", SIZE)
            assert model.training  # export runs in eval mode and restores the flag
            result[name] = (model.eval(), path)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pspnet_resnet18", "espnet"])
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_logits_match_pytorch_with_dynamic_batch(exported, name: str, batch: int) -> None:
    model, path = exported[name]
    assert path.is_file() and path.suffix == ".onnx"
    torch.manual_seed(batch)
    image = torch.randn(batch, 3, *SIZE)
    with torch.no_grad():
        scale = model(image).logits.abs().max().item()
    diff = check_onnx(model, path, image)
    assert diff <= 1e-4 + 1e-4 * scale
    if name == "espnet":  # logits of order 1: a pure 1e-4 bound holds
        assert diff < 1e-4
        assert check_onnx(model, path, image, rtol=0.0) == diff


def test_check_detects_a_changed_model(exported) -> None:
    model, path = exported["espnet"]
    altered = build_model("espnet", 3).eval()
    altered.load_state_dict(model.state_dict())
    with torch.no_grad():
        altered.classifier.weight.add_(0.1)
    with pytest.raises(ValueError, match="differ by up to"):
        check_onnx(altered, path, torch.randn(1, 3, *SIZE))


def test_check_rejects_wrong_spatial_size_and_missing_file(exported, tmp_path: Path) -> None:
    model, path = exported["espnet"]
    # fixed spatial size: onnxruntime refuses 32x32
    with pytest.raises(Exception, match="invalid dimensions"):
        check_onnx(model, path, torch.randn(1, 3, 32, 32))
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        check_onnx(model, tmp_path / "missing.onnx", torch.randn(1, 3, *SIZE))


def test_the_export_is_float32_close_even_where_rounding_matters(exported) -> None:
    model, path = exported["pspnet_resnet18"]
    image = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        reference = model.double()(image.double()).logits  # float64 truth
        model.float()
        own_rounding = (model(image).logits.double() - reference).abs().max().item()
    onnx_diff = check_onnx(model, path, image)
    assert onnx_diff < 4 * max(own_rounding, 1e-5)


def test_bad_arguments(tmp_path: Path) -> None:
    model = build_model("espnet_c", 2)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, opset=11)
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(model, tmp_path / "m.onnx", (64,))  # type: ignore[arg-type]
