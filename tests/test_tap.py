"""skdlib.models.tap and networks of one's own in build_model: outputs by name from modules that
return a tensor, a torchvision-style dict or a tuple; nothing of the module changed; errors."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from user_networks import FCNStyle, SegFormerStyle, TinyUNet

from skdlib.models import (
    SegmentationOutput,
    TappedModel,
    build_model,
    complexity,
    load_pretrained,
    model_options,
    model_variants,
    register_model,
    tap,
    unregister_model,
)

IMAGE = (2, 3, 32, 64)


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randn(*IMAGE, generator=torch.Generator().manual_seed(seed))


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _unet() -> TappedModel:
    torch.manual_seed(0)
    return tap(TinyUNet(), features={"head": "decoder.block2", "backbone": "down2"})


def _fcn(aux: bool = True) -> TappedModel:
    torch.manual_seed(0)
    return tap(
        FCNStyle(aux=aux),
        logits="out",
        aux_logits="aux",
        features={"head": "classifier.2", "backbone": "backbone.layer3"},
    )


def _segformer() -> TappedModel:
    torch.manual_seed(0)
    return tap(SegFormerStyle(), logits=0, features={"head": 1, "backbone": "encoder.stages.3"})


# ---------------------------------------------------------------------------------------------
# Three shapes of forward
# ---------------------------------------------------------------------------------------------
def test_a_module_returning_a_tensor() -> None:
    net = _unet()
    assert (net.num_classes, net.output_stride) == (8, 2)
    assert net.feature_channels == {"head": 8, "backbone": 32}
    out = net.train()(_image())
    assert isinstance(out, SegmentationOutput) and out.aux_logits is None
    assert out.logits.shape == (2, 8, 16, 32)
    assert out.features["head"].shape == (2, 8, 16, 32)
    assert out.features["backbone"].shape == (2, 32, 4, 8)


def test_a_module_returning_a_torchvision_style_dict() -> None:
    net = _fcn()
    assert (net.num_classes, net.output_stride) == (8, 1)  # logits upsampled to the input
    assert net.feature_channels == {"head": 16, "backbone": 64}
    for mode in (True, False):  # torchvision's aux head runs in both modes
        out = net.train(mode)(_image())
        assert out.logits.shape == out.aux_logits.shape == (2, 8, 32, 64)
        assert out.features["head"].shape == (2, 16, 4, 8)


def test_an_aux_key_absent_in_eval_mode_is_none_there_and_an_error_in_training() -> None:
    net = _fcn(aux=False)
    assert net.eval()(_image()).aux_logits is None
    with pytest.raises(ValueError, match=r"aux_logits = key 'aux' .*keys \['out'\]"):
        net.train()(_image())


def test_a_module_returning_a_tuple() -> None:
    net = _segformer()
    assert (net.num_classes, net.output_stride) == (8, 4)
    assert net.feature_channels == {"head": 16, "backbone": 16}
    out = net.eval()(_image())
    assert out.logits.shape == (2, 8, 8, 16)
    assert out.features["backbone"].shape == (2, 16, 1, 2)
    assert "position 1" in net.sources["head"] and "encoder.stages.3" in net.sources["backbone"]


# ---------------------------------------------------------------------------------------------
# Taps read what a hand-written forward computes
# ---------------------------------------------------------------------------------------------
def test_taps_by_name_equal_a_hand_written_forward() -> None:
    net = _unet().eval()
    unet: TinyUNet = net.module
    x = _image(1)
    with torch.no_grad():
        out = net(x)
        s1 = unet.stem(x)
        s2 = unet.down1(s1)
        s3 = unet.down2(s2)
        up = F.interpolate(s3, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        d1 = unet.decoder["block1"](torch.cat([up, s2], dim=1))
        up = F.interpolate(d1, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        d2 = unet.decoder["block2"](torch.cat([up, s1], dim=1))
        logits = unet.classifier(d2)
    torch.testing.assert_close(out.features["backbone"], s3, rtol=0, atol=0)
    torch.testing.assert_close(out.features["head"], d2, rtol=0, atol=0)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)


def test_dict_and_tuple_taps_equal_a_hand_written_forward() -> None:
    fcn, seg = _fcn().eval(), _segformer().eval()
    x = _image(2)
    with torch.no_grad():
        stages = fcn.module.backbone(x)
        head = fcn.module.classifier[:3](stages["out"])
        torch.testing.assert_close(fcn(x).features["head"], head, rtol=0, atol=0)
        torch.testing.assert_close(fcn(x).logits, fcn.module(x)["out"], rtol=0, atol=0)
        logits, fused = seg.module(x)
        out = seg(x)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(out.features["head"], fused, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Nothing of the module changes
# ---------------------------------------------------------------------------------------------
def test_no_copy_and_the_state_dict_keys_are_the_modules(tmp_path) -> None:
    module = TinyUNet()
    net = tap(module, features={"head": "decoder.block2"})
    assert net.module is module
    assert all(p is q for p, q in zip(net.parameters(), module.parameters(), strict=True))
    assert list(net.state_dict()) == list(module.state_dict())
    # A plain module's checkpoint loads into the wrapper and the other way round.
    other = TinyUNet()
    net.load_state_dict(other.state_dict(), strict=True)
    assert torch.equal(module.stem[0].weight, other.stem[0].weight)
    fresh = TinyUNet()
    fresh.load_state_dict(net.state_dict(), strict=True)
    assert torch.equal(fresh.classifier.weight, module.classifier.weight)
    # Inside a container (a training state, DDP's "module."), the keys get only its prefix.
    holder = nn.ModuleDict({"student": net})
    keys = list(holder.state_dict())
    assert keys == [f"student.{k}" for k in module.state_dict()]
    holder.load_state_dict(holder.state_dict(), strict=True)
    # A file of the plain module through skdlib's loader, strictly.
    torch.save(other.state_dict(), tmp_path / "plain.pt")
    report = load_pretrained(net, tmp_path / "plain.pt", strict=True)
    assert not report.missing_keys and not report.unexpected_keys


def test_no_hook_is_left_on_the_module() -> None:
    module = TinyUNet()
    net = tap(module, features={"head": "decoder.block2"})
    assert _hooks(module) == 0  # none after the probe
    net(_image())
    assert _hooks(module) == 0  # none after a forward
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 4, 32, 32))  # the module's own error, mid-forward
    assert _hooks(module) == 0  # none after a failed forward
    assert isinstance(module(_image()), torch.Tensor)  # the module itself is untouched
    del net
    gc.collect()
    assert _hooks(module) == 0


def test_the_probe_changes_no_state() -> None:
    module = TinyUNet().train()
    module.stem.eval()  # a frozen stem inside a training network
    stats = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.random.get_rng_state()
    tap(module, features={"head": "decoder.block2"})
    assert module.training and not module.stem.training and module.down1.training
    assert all(torch.equal(stats[k], v) for k, v in module.state_dict().items())
    assert torch.equal(rng, torch.random.get_rng_state())


def test_output_stride_given_is_checked_and_a_fractional_one_needs_it() -> None:
    assert tap(TinyUNet(), output_stride=2).output_stride == 2
    with pytest.raises(ValueError, match=r"output_stride=4, but the probe image 64x64 gave 32x32"):
        tap(TinyUNet(), output_stride=4)
    with pytest.raises(ValueError, match=r"no single whole stride; pass output_stride="):
        tap(TinyUNet(), probe_size=(63, 63))
    assert tap(TinyUNet(), probe_size=(63, 63), output_stride=2).output_stride == 2


# ---------------------------------------------------------------------------------------------
# Errors name the culprit
# ---------------------------------------------------------------------------------------------
class _Flat(nn.Module):
    """Returns logits flattened to (N, K, H*W): not a map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2)


def test_bad_names_and_outputs_are_clear_errors() -> None:
    with pytest.raises(
        ValueError,
        match=r"tap\(TinyUNet\): features\['head'\] = 'decoder.blok2' is not a module of "
        r"TinyUNet; close module names: \['decoder.block2'",
    ):
        tap(TinyUNet(), features={"head": "decoder.blok2"})
    with pytest.raises(
        ValueError, match=r"logits = 'output' is not a module of FCNStyle nor a key"
    ):
        tap(FCNStyle(), logits="output")
    with pytest.raises(
        ValueError,
        match=r"features\['deep'\] = module 'deep_supervision' did not run in this forward",
    ):
        tap(TinyUNet(), features={"deep": "deep_supervision"})  # it runs in training mode only
    with pytest.raises(
        ValueError,
        match=r"logits must be a floating-point map \(N, K, h, w\) .*shape \(1, 8, 4096\)",
    ):
        tap(_Flat())
    with pytest.raises(ValueError, match=r"got a dict with keys \['aux', 'out'\]; pick one"):
        tap(FCNStyle())
    with pytest.raises(ValueError, match=r"logits = position 2 of the returned sequence"):
        tap(SegFormerStyle(), logits=2)
    with pytest.raises(ValueError, match=r"features\['head'\] must be a floating-point map"):
        tap(FCNStyle(), logits="out", features={"head": "backbone"})  # a module returning a dict
    with pytest.raises(ValueError, match="features must be a mapping"):
        tap(TinyUNet(), features=["decoder.block2"])
    with pytest.raises(ValueError, match="feature names must be non-empty strings other than"):
        tap(TinyUNet(), features={"logits": "classifier"})
    with pytest.raises(ValueError, match=r"logits must be a module name, a dict key or a position"):
        tap(TinyUNet(), logits=1.5)
    with pytest.raises(ValueError, match="probe_size must be"):
        tap(TinyUNet(), probe_size=64)
    with pytest.raises(ValueError, match="tapped already"):
        tap(tap(TinyUNet()))
    with pytest.raises(ValueError, match=r"expected an nn\.Module"):
        tap(lambda x: x)


# ---------------------------------------------------------------------------------------------
# What the rest of skdlib does with a network: complexity, ONNX
# ---------------------------------------------------------------------------------------------
def test_complexity_counts_the_modules_parameters() -> None:
    net = _unet()
    cost = complexity(net, (32, 64))
    assert cost.params_total == sum(p.numel() for p in net.module.parameters())
    assert cost.macs > 0


@pytest.mark.slow
def test_a_tapped_network_exports_to_onnx(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from skdlib.models import check_onnx, export_onnx

    net = _fcn()
    path = export_onnx(net, tmp_path / "fcn.onnx", (32, 64))
    assert check_onnx(net, path, _image(3)) < 1e-3
    assert _hooks(net.module) == 0


# ---------------------------------------------------------------------------------------------
# build_model: import paths and registered names
# ---------------------------------------------------------------------------------------------
def test_build_model_from_an_import_path_with_taps() -> None:
    net = build_model(
        "user_networks:build_fcn",
        5,
        taps={"logits": "out", "features": {"head": "classifier.2"}},
        width=8,
    )
    assert isinstance(net.module, FCNStyle) and net.num_classes == 5  # num_classes passed on
    assert net.feature_channels == {"head": 8}
    plain = build_model("user_networks:build_unet", 8)  # no taps: the tensor is the logits
    assert isinstance(plain, TappedModel) and plain.feature_channels == {}
    own = build_model("user_networks:build_tapped_unet", 8)  # the factory tapped it: as it is
    assert own.feature_channels == {"head": 8}
    assert model_options("user_networks:build_fcn") == ("width", "aux")


def test_a_registered_name_builds_and_can_be_forgotten() -> None:
    register_model("my_unet", lambda num_classes, width=4: TinyUNet(num_classes, width))
    try:
        net = build_model("my_unet", 8, taps={"features": {"head": "decoder.block2"}}, width=4)
        assert net.feature_channels == {"head": 4}
        with pytest.raises(ValueError, match="one of the book's networks"):
            register_model("pspnet_resnet18", TinyUNet)
    finally:
        unregister_model("my_unet")
    with pytest.raises(ValueError, match=r"unknown model 'my_unet'; valid names: .*import path"):
        build_model("my_unet", 8)
    with pytest.raises(ValueError, match="register_model: name must be"):
        register_model("a.b:c", TinyUNet)
    with pytest.raises(KeyError, match="not registered"):
        unregister_model("my_unet")


def test_networks_of_ones_own_fail_with_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"cannot import 'no_such_package.nets' .*PYTHONPATH"):
        build_model("no_such_package.nets:build", 8)
    with pytest.raises(ValueError, match="user_networks has no attribute 'build_nothing'"):
        build_model("user_networks:build_nothing", 8)
    with pytest.raises(ValueError, match=r"the options \['depth'\] do not fit"):
        build_model("user_networks:build_unet", 8, depth=3)
    with pytest.raises(ValueError, match="the factory returned a str"):
        build_model("user_networks:not_a_network", 8)
    with pytest.raises(ValueError, match=r"unknown tap option\(s\) \['feature'\]"):
        build_model("user_networks:build_unet", 8, taps={"feature": {}})
    register_model("eight_classes", lambda: SegFormerStyle(num_classes=8))
    try:
        with pytest.raises(ValueError, match=r"predicts 8 classes .*, 5 are asked for"):
            build_model("eight_classes", 5, taps={"logits": 0})
    finally:
        unregister_model("eight_classes")
    with pytest.raises(ValueError, match="taps are for networks of one's own"):
        build_model("pspnet_resnet18", 8, taps={"logits": 0})


def test_variants_are_the_book_networks_only() -> None:
    """A network of one's own has the variant "default" only (nothing imported to say so); any
    other is a clear error naming it, while the book's networks keep their variants."""
    assert model_variants("user_networks:build_unet") == ("default",)
    assert model_variants("pspnet_resnet18") == ("default", "authors")
    register_model("my_unet", TinyUNet)
    try:
        assert model_variants("my_unet") == ("default",)
        assert build_model("my_unet", 8, variant="default").num_classes == 8
        with pytest.raises(ValueError, match=r"variant 'authors' is for the book's networks; "):
            build_model("my_unet", 8, variant="authors")
    finally:
        unregister_model("my_unet")
    with pytest.raises(ValueError, match=r"'user_networks:build_unet' is a network of one's own"):
        build_model("user_networks:build_unet", 8, variant="cirkd")
    with pytest.raises(ValueError, match=r"unknown model 'nope'; valid names: .*import path"):
        model_variants("nope")
    with pytest.raises(ValueError, match=r"model 'espnet' has no variant 'authors'"):
        build_model("espnet", 8, variant="authors")
