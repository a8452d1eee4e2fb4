"""Tests of skdlib.models.load_pretrained: layouts, prefixes, refusals, errors; never online."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from skdlib.models import build_model, load_pretrained, read_state_dict


class _Tiny(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, classes, 1)


class _Payload:
    """An arbitrary object: a safe loader must refuse to unpickle it."""

    def __init__(self) -> None:
        self.value = 42


def _random_like(model: nn.Module, seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        k: v.clone() if not v.is_floating_point() else torch.randn(v.shape, generator=generator)
        for k, v in model.state_dict().items()
    }


def test_round_trip_strict_copies_every_tensor(tmp_path: Path) -> None:
    state = _random_like(_Tiny())
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    model = _Tiny()
    report = load_pretrained(model, path, strict=True)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert report.loaded == sorted(state)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module"])
def test_wrapped_and_data_parallel_checkpoints(tmp_path: Path, wrap: str) -> None:
    state = _random_like(_Tiny())
    payload = (
        {f"module.{k}": v for k, v in state.items()}
        if wrap == "module"
        else {wrap: state, "epoch": 3}
    )
    path = tmp_path / "wrapped.pth"
    torch.save(payload, path)
    model = _Tiny()
    load_pretrained(model, path, strict=True)
    torch.testing.assert_close(model.head.weight, state["head.weight"])


def test_file_url_is_read_as_a_path(tmp_path: Path) -> None:
    state = _random_like(_Tiny())
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    model = _Tiny()
    load_pretrained(model, path.as_uri())
    torch.testing.assert_close(model.body[0].weight, state["body.0.weight"])


def test_shape_mismatch_is_refused_listing_keys_and_both_shapes(tmp_path: Path) -> None:
    path = tmp_path / "three.pth"
    torch.save(_random_like(_Tiny(classes=3)), path)
    model = _Tiny(classes=5)
    before = model.body[0].weight.clone()
    with pytest.raises(ValueError) as info:
        load_pretrained(model, path)
    message = str(info.value)
    assert "head.weight: checkpoint (3, 4, 1, 1) vs model (5, 4, 1, 1)" in message
    assert "head.bias: checkpoint (3,) vs model (5,)" in message
    assert "2 key(s)" in message
    torch.testing.assert_close(model.body[0].weight, before)  # nothing copied


def test_pspnet_class_count_mismatch_names_the_classifier(tmp_path: Path) -> None:
    path = tmp_path / "espnet19.pth"
    torch.save(build_model("espnet_c", 19).state_dict(), path)
    with pytest.raises(
        ValueError,
        match=r"classifier\.weight: checkpoint \(19, 256, 1, 1\) vs model \(11, 256, 1, 1\)",
    ):
        load_pretrained(build_model("espnet_c", 11), path)


def test_missing_and_unexpected_keys_are_reported_and_logged(tmp_path: Path, caplog) -> None:
    state = _random_like(_Tiny())
    del state["head.bias"]
    state["extra.weight"] = torch.ones(2)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="skdlib.models.pretrained"):
        report = load_pretrained(_Tiny(), path)
    assert report.missing_keys == ["head.bias"]
    assert report.unexpected_keys == ["extra.weight"]
    assert "head.bias" in caplog.text and "extra.weight" in caplog.text
    with pytest.raises(
        ValueError,
        match=r"strict.*missing keys \['head.bias'\].*unexpected keys \['extra.weight'\]",
    ):
        load_pretrained(_Tiny(), path, strict=True)


def test_num_batches_tracked_is_never_missing(tmp_path: Path) -> None:
    state = {
        k: v for k, v in _random_like(_Tiny()).items() if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "old_style.pth"
    torch.save(state, path)
    assert load_pretrained(_Tiny(), path, strict=True).missing_keys == []


def test_prefix_selects_the_submodule(tmp_path: Path) -> None:
    body = _Tiny().body
    state = _random_like(body)
    path = tmp_path / "body.pth"
    torch.save(state, path)
    model = _Tiny()
    head_before = model.head.weight.clone()
    report = load_pretrained(model, path, prefix="body", strict=True)
    assert report.loaded == sorted(f"body.{k}" for k in state)
    torch.testing.assert_close(model.body[1].running_mean, state["1.running_mean"])
    torch.testing.assert_close(model.head.weight, head_before)
    with pytest.raises(ValueError, match=r"no key .* matches"):
        load_pretrained(model, path, prefix="head.")
    with pytest.raises(ValueError, match=r"prefix='nothing\.'"):
        load_pretrained(model, path, prefix="nothing.")


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_pretrained(_Tiny(), missing)
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_pretrained(_Tiny(), missing.as_uri())


def test_unreachable_url_fails_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9/x\.pth"):
        load_pretrained(_Tiny(), "http://127.0.0.1:9/x.pth", timeout=2.0)
    assert time.perf_counter() - start < 5.0
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []  # no partial file left


def test_url_uses_the_hub_cache_without_network(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    state = _random_like(_Tiny())
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "cached.pth")
    model = _Tiny()
    load_pretrained(model, "http://127.0.0.1:9/weights/cached.pth", strict=True)
    torch.testing.assert_close(model.head.weight, state["head.weight"])


def test_arbitrary_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"weight": torch.ones(2), "payload": _Payload()}, path)
    with pytest.raises(ValueError, match=r"refusing to load .*unsafe\.pth.*weights_only"):
        load_pretrained(_Tiny(), path)


def test_non_state_dict_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.ones(2)], path)
    with pytest.raises(ValueError, match="holds no state dict"):
        read_state_dict(path)


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        load_pretrained(_Tiny(), "ftp://127.0.0.1/x.pth")


def test_the_backbone_of_a_whole_network_loads_with_source_prefix(tmp_path) -> None:
    from skdlib.models import build_model, load_pretrained

    torch.manual_seed(0)
    source = build_model("pspnet_resnet18", 3, width=0.125)  # another task: 3 classes
    path = tmp_path / "final.pt"
    torch.save(source.state_dict(), path)
    target = build_model("pspnet_resnet18", 8, width=0.125)
    report = load_pretrained(target, path, prefix="backbone.", source_prefix="backbone.")
    assert report.loaded and all(k.startswith("backbone.") for k in report.loaded)
    for key, value in target.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(value, source.state_dict()[key]), key
    with pytest.raises(ValueError, match=r"no key under 'encoder\.'"):
        load_pretrained(target, path, prefix="backbone.", source_prefix="encoder.")
