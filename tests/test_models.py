"""Tests of skdlib.models networks: shapes, strides, features, gradients, layouts, sizes, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skdlib.models import (
    SegmentationOutput,
    available_models,
    build_model,
    count_parameters,
    load_pretrained,
)
from skdlib.models.espnet import ESP_DILATIONS, ESPModule
from skdlib.models.psp import PyramidPooling

STUDENTS = ["pspnet_resnet18", "mobilenetv2plus", "espnet_c", "espnet"]
FULL_RESOLUTION = {"espnet"}


def _on_meta(name: str, num_classes: int, **options: object) -> nn.Module:
    """Build on the meta device: shapes only, so counting parameters of big models is instant."""
    with torch.device("meta"):
        return build_model(name, num_classes, **options)


def _expected_logits_size(name: str, h: int, w: int) -> tuple[int, int]:
    if name in FULL_RESOLUTION:
        return h, w
    return math.ceil(h / 8), math.ceil(w / 8)


def test_available_models_lists_the_paper_networks() -> None:
    names = available_models()
    for name in ["pspnet_resnet101", "pspnet_resnet18", "mobilenetv2plus", "espnet_c", "espnet"]:
        assert name in names
    assert names == sorted(names)


@pytest.mark.parametrize("num_classes", [2, 11, 19])
@pytest.mark.parametrize("name", STUDENTS)
def test_student_shapes_finite_and_eval_has_no_aux(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes).eval()
    image = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        out = model(image)
    assert isinstance(out, SegmentationOutput)
    assert out.logits.shape == (1, num_classes, *_expected_logits_size(name, 65, 65))
    assert torch.isfinite(out.logits).all()
    assert out.aux_logits is None
    assert model.output_stride == (1 if name in FULL_RESOLUTION else 8)
    for key in ("head", "backbone"):
        feature = out.features[key]
        assert feature.shape[1] == model.feature_channels[key]
        assert feature.shape[-2:] == (9, 9)  # every "head" sits at 1/8


@pytest.mark.parametrize("name", STUDENTS)
def test_training_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 5).train()
    out = model(torch.randn(2, 3, 40, 48))
    loss = out.logits.square().mean()
    if out.aux_logits is not None:
        assert out.aux_logits.shape == out.logits.shape
        loss = loss + out.aux_logits.square().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_pspnet_training_returns_aux_logits_and_aux_option_removes_it() -> None:
    model = build_model("pspnet_resnet18", 3, width=0.5).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.aux_logits is not None and out.aux_logits.shape == (2, 3, 8, 8)
    plain = build_model("pspnet_resnet18", 3, width=0.5, aux=False).train()
    assert plain(torch.randn(2, 3, 64, 64)).aux_logits is None
    assert not any(name.startswith("aux_head") for name, _ in plain.named_parameters())


@pytest.mark.parametrize("size", [(64, 64), (65, 71), (8, 8), (97, 40)])
def test_dilated_backbones_keep_output_stride_8(size: tuple[int, int]) -> None:
    h, w = size
    for name in ("pspnet_resnet18", "mobilenetv2plus", "espnet_c"):
        model = build_model(name, 4, **({"width": 0.5} if name == "pspnet_resnet18" else {})).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w))
        assert out.logits.shape[-2:] == (math.ceil(h / 8), math.ceil(w / 8)), name
    espnet = build_model("espnet", 4).eval()
    with torch.no_grad():
        assert espnet(torch.randn(1, 3, h, w)).logits.shape[-2:] == (h, w)


def test_resnet_dilation_and_v15_stride_placement() -> None:
    bottleneck = _on_meta("pspnet_resnet50", 2).backbone
    assert bottleneck.layer2[0].conv1.stride == (1, 1)
    assert bottleneck.layer2[0].conv2.stride == (2, 2)  # v1.5: stride on the 3x3
    assert bottleneck.layer3[0].conv2.stride == (1, 1)
    assert bottleneck.layer3[1].conv2.dilation == (2, 2)
    assert bottleneck.layer4[1].conv2.dilation == (4, 4)
    basic = _on_meta("pspnet_resnet18", 2).backbone
    assert basic.layer4[1].conv1.dilation == (4, 4) and basic.layer4[1].conv2.dilation == (4, 4)


@pytest.mark.slow
def test_teacher_resnet101_once_small_input() -> None:
    torch.manual_seed(0)
    model = build_model("pspnet_resnet101", 19).train()
    out = model(torch.randn(2, 3, 33, 33))
    assert out.logits.shape == (2, 19, 5, 5)
    assert out.aux_logits is not None and out.aux_logits.shape == (2, 19, 5, 5)
    assert out.features["head"].shape == (2, 512, 5, 5)
    assert out.features["backbone"].shape == (2, 2048, 5, 5)
    assert out.features["layer3"].shape == (2, 1024, 5, 5)
    (out.logits.mean() + out.aux_logits.mean()).backward()
    assert model.backbone.conv1.weight.grad is not None


def test_eval_outputs_are_batch_independent() -> None:
    torch.manual_seed(0)
    model = build_model("pspnet_resnet18", 3, width=0.5).eval()
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        both = model(images).logits
        first = model(images[:1]).logits
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-5)


# --- torchvision parameter layouts (reference tables written here, no download) -------------


def _torchvision_resnet18_table() -> dict[str, tuple[int, ...]]:
    """torchvision resnet18's state-dict names and shapes, written out from its architecture."""
    table: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            table[f"{prefix}.{suffix}"] = (c,)
        table[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_ch = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            table[f"{p}.conv1.weight"] = (planes, in_ch if block == 0 else planes, 3, 3)
            bn(f"{p}.bn1", planes)
            table[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            if block == 0 and stage > 1:
                table[f"{p}.downsample.0.weight"] = (planes, in_ch, 1, 1)
                bn(f"{p}.downsample.1", planes)
        in_ch = planes
    table["fc.weight"] = (1000, 512)
    table["fc.bias"] = (1000,)
    return table


def _random_state(table: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        k: (
            torch.tensor(7)
            if k.endswith("num_batches_tracked")
            else torch.randn(s, generator=generator)
        )
        for k, s in table.items()
    }


def test_resnet18_backbone_has_torchvision_layout_and_loads_it(tmp_path) -> None:
    table = _torchvision_resnet18_table()
    assert (
        sum(
            math.prod(s)
            for k, s in table.items()
            if not k.startswith("fc.") and "running" not in k and "num_batches" not in k
        )
        == 11_176_512
    )
    model = build_model("pspnet_resnet18", 19)
    backbone_shapes = {k: tuple(v.shape) for k, v in model.backbone.state_dict().items()}
    assert backbone_shapes == {k: s for k, s in table.items() if not k.startswith("fc.")}

    state = _random_state(table)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    report = load_pretrained(model, path, prefix="backbone.")
    assert report.missing_keys == []
    assert report.unexpected_keys == ["backbone.fc.bias", "backbone.fc.weight"]
    torch.testing.assert_close(
        model.backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"]
    )
    torch.testing.assert_close(model.backbone.bn1.running_var, state["bn1.running_var"])

    direct = load_pretrained(build_model("pspnet_resnet18", 2).backbone, path)
    assert direct.missing_keys == [] and direct.unexpected_keys == ["fc.bias", "fc.weight"]


def test_resnet50_101_backbones_match_torchvision_sizes_and_keys() -> None:
    # torchvision: resnet50 25,557,032 and resnet101 44,549,160 parameters incl. fc (2048*1000+1000)
    for name, expected in (("pspnet_resnet50", 25_557_032), ("pspnet_resnet101", 44_549_160)):
        backbone = _on_meta(name, 2).backbone
        assert count_parameters(backbone) == expected - (2048 * 1000 + 1000)
    shapes = {
        k: tuple(v.shape) for k, v in _on_meta("pspnet_resnet50", 2).backbone.state_dict().items()
    }
    assert shapes["layer1.0.conv1.weight"] == (64, 64, 1, 1)
    assert shapes["layer1.0.conv3.weight"] == (256, 64, 1, 1)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert shapes["layer4.0.downsample.1.running_mean"] == (2048,)


def test_mobilenetv2_backbone_has_torchvision_layout(tmp_path) -> None:
    reference = {  # torchvision mobilenet_v2 state-dict entries
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.weight": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.running_var": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.bias": (24,),
        "features.14.conv.1.0.weight": (576, 1, 3, 3),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "features.18.1.running_mean": (1280,),
        "classifier.1.weight": (1000, 1280),
        "classifier.1.bias": (1000,),
    }
    model = build_model("mobilenetv2plus", 19)
    # torchvision mobilenet_v2: 3,504,872 parameters, classifier 1280*1000+1000
    assert count_parameters(model.backbone) == 3_504_872 - 1_281_000
    state = _random_state(reference)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save({"state_dict": state}, path)
    report = load_pretrained(model, path, prefix="backbone")
    assert report.unexpected_keys == ["backbone.classifier.1.bias", "backbone.classifier.1.weight"]
    assert len(report.loaded) == len(reference) - 2
    torch.testing.assert_close(
        model.backbone.features[14].conv[1][0].weight, state["features.14.conv.1.0.weight"]
    )
    assert model.backbone.features[14].conv[1][0].dilation == (4, 4)
    assert model.backbone.features[7].conv[1][0].stride == (1, 1)


# --- parameter counts against the published ones --------------------------------------------


def _inference_params(model: nn.Module) -> int:
    aux = getattr(model, "aux_head", None)
    return count_parameters(model) - (count_parameters(aux) if aux is not None else 0)


def test_espnet_parameter_counts_within_10_percent_of_published() -> None:
    published = 65.7e6 / 180  # ESPNet paper: 180x smaller than PSPNet's 65.7M (20 classes)
    espnet = count_parameters(build_model("espnet", 20))
    espnet_c = count_parameters(build_model("espnet_c", 20))
    assert abs(espnet - published) / published < 0.10
    assert abs(espnet_c - published) / published < 0.10
    assert espnet_c < espnet
    assert (espnet, espnet_c) == (365_109, 349_449)  # golden


def test_resnet_students_and_teacher_sizes_match_paper() -> None:
    r18 = _inference_params(_on_meta("pspnet_resnet18", 19))
    r101 = _inference_params(_on_meta("pspnet_resnet101", 19))
    assert abs(r18 - 15.2e6) / 15.2e6 < 0.15
    assert abs(r101 - 70e6) / 70e6 < 0.15
    assert abs(r101 - 65.7e6) / 65.7e6 < 0.01  # PSPNet's published size
    mnv2 = count_parameters(_on_meta("mobilenetv2plus", 19))
    assert abs(mnv2 - 8.3e6) / 8.3e6 < 0.02
    assert (r18, r101, mnv2) == (16_169_043, 65_583_699, 8_292_563)  # golden


def test_width_half_halves_every_channel() -> None:
    full = _on_meta("pspnet_resnet18", 19)
    half = _on_meta("pspnet_resnet18", 19, width=0.5)
    assert half.backbone.conv1.out_channels == 32
    assert half.feature_channels == {k: v // 2 for k, v in full.feature_channels.items()}
    # convolution weights scale with in*out: the backbone shrinks about 4x
    ratio = count_parameters(full.backbone) / count_parameters(half.backbone)
    assert 3.9 < ratio < 4.1


# --- building blocks against plain re-derivations -------------------------------------------


def test_esp_module_matches_plain_hierarchical_fusion() -> None:
    torch.manual_seed(0)
    module = ESPModule(20, 20).eval()
    with torch.no_grad():
        for p in module.post.parameters():
            p.uniform_(0.5, 1.5)
    x = torch.randn(2, 20, 11, 13)
    with torch.no_grad():
        got = module(x)
        reduced = F.conv2d(x, module.reduce.weight)
        outs = [
            F.conv2d(reduced, b.weight, padding=r, dilation=r)
            for b, r in zip(module.branches, ESP_DILATIONS, strict=True)
        ]
        hff = [
            outs[0],
            outs[1],
            outs[1] + outs[2],
            outs[1] + outs[2] + outs[3],
            outs[1] + outs[2] + outs[3] + outs[4],
        ]
        combined = torch.cat(hff, dim=1) + x
        expected = module.post(combined)
    torch.testing.assert_close(got, expected)
    assert [b.out_channels for b in module.branches] == [4, 4, 4, 4, 4]
    assert [b.out_channels for b in ESPModule(8, 13).branches] == [5, 2, 2, 2, 2]
    assert not ESPModule(8, 13).residual and not ESPModule(10, 10, stride=2).residual


def test_pyramid_pooling_matches_plain_bin_averages() -> None:
    torch.manual_seed(0)
    pyramid = PyramidPooling(4, 2).eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        out = pyramid(x)
        stage = pyramid.stages[1]  # bin 2: four 3x3 quadrant means
        quadrants = x.reshape(1, 4, 2, 3, 2, 3).mean(dim=(3, 5))  # (1, 4, 2, 2)
        reduced = stage(quadrants)
    assert out.shape == (1, 4 + 4 * 2, 6, 6)
    torch.testing.assert_close(out[:, :4], x)
    # align_corners=False upsampling by 3 of a 2x2 map: the centre pixel of each 3x3 cell is exact
    torch.testing.assert_close(out[:, 6:8, 1::3, 1::3], reduced)
    bin1 = pyramid.stages[0](x.mean(dim=(2, 3), keepdim=True))  # (1, 2, 1, 1)
    torch.testing.assert_close(out[:, 4:6], bin1.expand(1, 2, 6, 6))


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name_and_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"valid names: .*espnet.*pspnet_resnet18"):
        build_model("pspnet_resnet152", 19)
    with pytest.raises(ValueError, match=r"unknown option.*'widht'.*valid options"):
        build_model("pspnet_resnet18", 19, widht=0.5)
    with pytest.raises(ValueError, match="width"):
        build_model("pspnet_resnet18", 19, width=2.0)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("espnet", 0)
    with pytest.raises(ValueError, match="unknown option"):
        build_model("espnet", 19, width=0.5)


@pytest.mark.parametrize("name", STUDENTS)
def test_bad_inputs_name_the_shape(name: str) -> None:
    model = build_model(name, 3).eval()
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"too small.*\(1, 3, 7, 32\)|\(1, 3, 7, 32\).*too small"):
        model(torch.randn(1, 3, 7, 32))


def test_pspnet_training_with_one_image_is_a_clear_error() -> None:
    model = build_model("pspnet_resnet18", 3, width=0.5).train()
    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32\).*at least 2 images"):
        model(torch.randn(1, 3, 32, 32))
