"""Tests of skdlib.models.complexity: hand counts, conventions, exact scaling, golden values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skdlib.models import build_model, complexity, count_parameters, measure_latency


def _conv_macs(c_out: int, c_in: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k * h_out * w_out


class _SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)  # 16x16 -> 16x16
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False)  # -> 8x8
        self.depthwise = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6)  # -> 8x8
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)  # -> 16x16
        self.unused = nn.Conv2d(4, 4, 1)  # never called: not an inference parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        return self.up(self.depthwise(self.conv2(x)))


def test_small_conv_net_matches_hand_count() -> None:
    result = complexity(_SmallNet(), (16, 16))
    hand = (
        _conv_macs(8, 3, 3, 16, 16)
        + _conv_macs(6, 8, 3, 8, 8)
        + _conv_macs(6, 6, 3, 8, 8, groups=6)
        + 6 * 4 * 2 * 2 * 8 * 8  # transposed: every input pixel meets every kernel tap once
    )
    assert result.macs == hand
    assert result.flops == 2 * hand
    params_used = (8 * 3 * 9 + 8) + 2 * 8 + 6 * 8 * 9 + (6 * 9 + 6) + (6 * 4 * 4 + 4)
    assert result.params == params_used
    assert result.params_total == params_used + 4 * 4 + 4
    assert result.input_size == (16, 16)


def test_batch_size_scales_linearly_and_model_is_untouched() -> None:
    net = _SmallNet().train()
    one = complexity(net, (16, 16))
    three = complexity(net, (16, 16), batch_size=3)
    assert three.macs == 3 * one.macs and three.params == one.params
    assert net.training and next(net.parameters()).device.type == "cpu"


def test_str_states_the_convention() -> None:
    text = str(complexity(_SmallNet(), (16, 16)))
    assert "1 MAC = 2 FLOPs" in text and "GMACs" in text and "16x16" in text


def test_aux_head_is_excluded_from_inference_params() -> None:
    model = build_model("pspnet_resnet18", 7, width=0.5)
    result = complexity(model, (64, 64))
    aux = (128 * 128 * 9) + 2 * 128 + (128 * 7 + 7)  # 3x3 conv (no bias), BN, 1x1 classifier
    assert result.params_total - result.params == aux
    assert result.params_total == count_parameters(model)


def test_pyramid_bins_are_the_only_part_that_does_not_scale_with_pixels() -> None:
    # A fully convolutional net at sizes divisible by 8: MACs scale with the pixel count,
    # except the PSP bins' 1x1 convs, which always see 1 + 4 + 9 + 36 = 50 cells.
    with torch.device("meta"):
        model = build_model("pspnet_resnet18", 19)
    small = complexity(model, (512, 1024)).macs
    large = complexity(model, (1024, 2048)).macs
    pyramid = 50 * 512 * 128  # cells x (C -> C/4) 1x1 conv
    assert large == 4 * small - 3 * pyramid


def test_golden_values() -> None:
    with torch.device("meta"):
        r18 = build_model("pspnet_resnet18", 19)
        esp = build_model("espnet", 20)
    assert complexity(r18, (64, 128)).macs == 2_112_552_960
    assert complexity(esp, (64, 128)).macs == 74_690_944


@pytest.mark.parametrize("size", [(0, 16), (16,), (16.0, 16), "16x16"])
def test_bad_input_size(size: object) -> None:
    with pytest.raises(ValueError, match="input_size"):
        complexity(_SmallNet(), size)  # type: ignore[arg-type]


def test_model_input_checks_propagate() -> None:
    with torch.device("meta"):
        model = build_model("espnet_c", 3)
    with pytest.raises(ValueError, match=r"too small"):
        complexity(model, (4, 64))


def test_measure_latency_counts_repeats_and_restores_mode() -> None:
    calls = []

    class _Counting(_SmallNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append((x.shape, self.training, torch.is_grad_enabled()))
            return super().forward(x)

    net = _Counting().train()
    latency = measure_latency(net, (16, 16), batch_size=2, repeats=3, warmup=2)
    assert len(calls) == 5 and len(latency.times_s) == 3
    assert all(
        shape == (2, 3, 16, 16) and not training and not grad for shape, training, grad in calls
    )
    assert net.training
    assert latency.per_image_s == pytest.approx(latency.median_s / 2)
    assert min(latency.times_s) > 0
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(net, (16, 16), repeats=0)
