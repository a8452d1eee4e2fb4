"""Released checkpoints: the layouts (key -> shape facts read off the authors', CIRKD's and the
MIT CSAIL definitions, ``tests/released/*.json``) load strictly into skdlib's variants, their
forwards equal plain re-derivations of the released networks (``tests/released_forward.py``),
files convert, a converted teacher evaluates on a Cityscapes tree with the authors' input, and
bad files get one clear error. No download: every file here is written from random weights."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from released_forward import authors_forward, cirkd_deeplabv3_forward, cirkd_pspnet_forward

from skdlib.data import build_dataset
from skdlib.errors import CheckpointError
from skdlib.evaluate import evaluate
from skdlib.evaluate import main as evaluate_main
from skdlib.models import (
    LAYOUTS,
    build_model,
    count_parameters,
    load_pretrained,
    load_released,
    model_variants,
)
from skdlib.models.convert import main as convert_main
from skdlib.models.discriminator import Discriminator
from skdlib.models.released import INPLACE_ABN_EPS, infer_released
from skdlib.train.config import DistillConfig, load_config
from skdlib.train.step import StepContext, distill_step

FACTS = Path(__file__).parent / "released"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COUNTER = "num_batches_tracked"
TOLERANCE = 1e-4  # on logits, auxiliary logits and the head feature
R101_FACTS = [
    "skd_authors_teacher_r101",
    "skd_authors_r101_own_names",
    "cirkd_pspnet_r101",
    "cirkd_deeplabv3_r101",
    "csail_imagenet_r101",
]


def facts(name: str) -> dict:
    return json.loads((FACTS / f"{name}.json").read_text())


def random_state(keys: list, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for a layout: He-scaled convolutions, batch norms with positive variances,
    scales with a fifth of them negative (InPlace-ABN takes their magnitude), small last scales
    of the residual branches (so that 33 blocks stay in range)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys:
        if not shape:  # a batch-norm counter
            state[key] = torch.tensor(7)
        elif key.endswith("running_mean") or (len(shape) == 1 and key.endswith("bias")):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1:
            magnitude = (0.1 if ".bn3." in key else 0.5) + 0.5 * torch.rand(shape, generator=g)
            sign = torch.where(torch.rand(shape, generator=g) < 0.2, -1.0, 1.0)
            state[key] = magnitude * sign
        else:
            std = math.sqrt(2.0 / math.prod(shape[1:]))
            state[key] = std * torch.randn(shape, generator=g)
    return state


def released_file(tmp_path: Path, name: str, seed: int = 0) -> tuple[dict, Path, dict]:
    """``(facts, path of a random-weight file in that layout, its state)``."""
    fact = facts(name)
    state = random_state(fact["keys"], seed)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return fact, path, state


def variant_model(fact: dict) -> torch.nn.Module:
    return build_model(fact["model"], fact["num_classes"], variant=fact["variant"])


def _maybe_slow(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in R101_FACTS else n for n in names]


# ---------------------------------------------------------------------------------------------
# The layouts load strictly
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _maybe_slow(sorted(p.stem for p in FACTS.glob("*.json"))))
def test_random_weights_of_each_layout_load_with_nothing_missing_or_unexpected(tmp_path, name):
    fact, path, state = released_file(tmp_path, name)
    assert fact["layout"] in LAYOUTS
    model = variant_model(fact)
    report = load_released(model, path, layout=fact["layout"])
    scope = "backbone." if fact["layout"] == "csail_imagenet" else ""
    wanted = sorted(
        k for k in model.state_dict() if k.startswith(scope) and not k.endswith(COUNTER)
    )
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert [k for k in report.loaded if not k.endswith(COUNTER)] == wanted
    assert report.ignored == (["fc.bias", "fc.weight"] if scope else [])
    # every tensor of the file is used: loaded + ignored = the file
    assert len(report.loaded) + len(report.ignored) == len(state)
    first_conv = "pretrained.conv1.weight" if "pretrained.conv1.weight" in state else "conv1.weight"
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], state[first_conv])
    assert infer_released(state, layout=fact["layout"])[:2] == (fact["model"], fact["variant"])


def test_the_teachers_naming_and_the_models_own_naming_load_the_same_network(tmp_path):
    """The released teacher names the PSP module ``head.0.*`` and the classifier ``head.1.*``
    (the authors' loader renames them); the student file uses ``pspmodule.*`` / ``head.*``."""
    fact, path, state = released_file(tmp_path, "skd_authors_student_r18")
    renamed = {}
    for key, value in state.items():
        if key.startswith("pspmodule."):
            key = "head.0." + key.removeprefix("pspmodule.")
        elif key.startswith("head."):
            key = "head.1." + key.removeprefix("head.")
        renamed[key] = value
    assert "head.1.weight" in renamed and "head.0.bottleneck.0.weight" in renamed
    other = tmp_path / "teacher_naming.pth"
    torch.save(renamed, other)
    a, b = variant_model(fact), variant_model(fact)
    load_released(a, path, layout="skd_authors")
    load_released(b, other, layout="skd_authors")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_inplace_abn_scales_are_stored_as_the_scale_they_apply(tmp_path):
    """InPlace-ABN normalises and then scales by ``|weight| + eps``: the authors' layout stores
    that scale; the plain batch norms of CIRKD and the ImageNet files are copied as they are."""
    fact = facts("skd_authors_student_r18")
    state = random_state(fact["keys"])
    state["bn1.weight"][:3] = torch.tensor([-0.5, 0.25, 0.0])
    state["pspmodule.bottleneck.1.weight"][0] = -2.0
    torch.save(state, tmp_path / "a.pth")
    model = variant_model(fact)
    load_released(model, tmp_path / "a.pth", layout="skd_authors")
    loaded = model.state_dict()
    expected = torch.tensor([0.5 + INPLACE_ABN_EPS, 0.25 + INPLACE_ABN_EPS, INPLACE_ABN_EPS])
    torch.testing.assert_close(loaded["backbone.bn1.weight"][:3], expected, rtol=0, atol=0)
    assert loaded["head.bottleneck.1.weight"][0].item() == pytest.approx(2.0 + INPLACE_ABN_EPS)
    assert torch.equal(loaded["backbone.bn1.running_var"], state["bn1.running_var"])
    assert torch.equal(loaded["head.classifier.weight"], state["head.weight"])  # a convolution
    imagenet = facts("csail_imagenet_r18")
    plain = random_state(imagenet["keys"])
    plain["bn1.weight"][0] = -0.5
    torch.save(plain, tmp_path / "b.pth")
    load_released(model, tmp_path / "b.pth", layout="csail_imagenet")
    assert model.state_dict()["backbone.bn1.weight"][0].item() == -0.5


# ---------------------------------------------------------------------------------------------
# Parity with plain re-derivations of the released forwards
# ---------------------------------------------------------------------------------------------
def _own_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' loader: ``head.0.*`` -> ``pspmodule.*``, ``head.1.*`` -> ``head.*``."""
    out = {}
    for key, value in state.items():
        if key.startswith("head.0."):
            key = "pspmodule." + key.removeprefix("head.0.")
        elif key.startswith("head.1."):
            key = "head." + key.removeprefix("head.1.")
        out[key] = value
    return out


PARITY = {  # facts -> (re-derivation, input side)
    "skd_authors_student_r18": (lambda x, s: authors_forward(x, _own_names(s), 18), 129),
    "skd_authors_teacher_r101": (lambda x, s: authors_forward(x, _own_names(s), 101), 65),
    "cirkd_pspnet_r101": (cirkd_pspnet_forward, 65),
    "cirkd_deeplabv3_r101": (cirkd_deeplabv3_forward, 65),
}


def _parity(tmp_path: Path, name: str) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    fact, path, state = released_file(tmp_path, name)
    reference, side = PARITY[name]
    model = variant_model(fact).eval()
    load_released(model, path, layout=fact["layout"])
    image = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(image)
        aux = model.aux_head(out.features["layer3"])  # the auxiliary head runs in training only
        logits, aux_ref, head_ref = reference(image, state)
    differences = {
        "logits": (out.logits - logits).abs().max().item(),
        "aux": (aux - aux_ref).abs().max().item(),
        "head": (out.features["head"] - head_ref).abs().max().item(),
    }
    print(f"{name} at {side}x{side}: max |difference| {differences}")
    assert out.logits.shape == logits.shape
    assert max(differences.values()) <= TOLERANCE, differences
    assert logits.abs().max() > 0.1  # the comparison is between real numbers
    return model, image, differences


@pytest.mark.parametrize("name", _maybe_slow(list(PARITY)))
def test_the_variants_compute_what_the_released_networks_compute(tmp_path, name):
    _parity(tmp_path, name)


def test_the_parity_test_sees_a_wrong_detail(tmp_path):
    """The comparison can fail: the authors' student with the bins concatenated after the map
    (skdlib's order) differs from their forward by far more than the tolerance."""
    model, image, _ = _parity(tmp_path, "skd_authors_student_r18")
    reference, _ = PARITY["skd_authors_student_r18"]
    wrong = copy.deepcopy(model)
    wrong.head.pyramid.style = dataclasses.replace(wrong.head.pyramid.style, pooled_first=False)
    state = random_state(facts("skd_authors_student_r18")["keys"])
    with torch.no_grad():
        logits = reference(image, state)[0]
        assert (wrong(image).logits - logits).abs().max() > 100 * TOLERANCE


# ---------------------------------------------------------------------------------------------
# The variants as networks
# ---------------------------------------------------------------------------------------------
def test_variants_output_sizes_counts_and_named_outputs():
    sizes = {}
    for name, variant in [
        ("pspnet_resnet18", "default"),
        ("pspnet_resnet18", "authors"),
        ("pspnet_resnet101", "cirkd"),
        ("deeplabv3_resnet101", "cirkd"),
    ]:
        with torch.device("meta"):
            model = build_model(name, 19, variant=variant, width=0.25).train()
        out = model(torch.empty(2, 3, 256, 256, device="meta"))
        sizes[(name, variant)] = tuple(out.logits.shape[-2:])
        assert out.aux_logits is not None and out.aux_logits.shape == out.logits.shape
        for feature in ("head", "backbone"):
            assert out.features[feature].shape[1] == model.feature_channels[feature]
    assert sizes[("pspnet_resnet18", "authors")] == (33, 33)  # ceil-mode max-pool
    assert sizes[("pspnet_resnet18", "default")] == sizes[("deeplabv3_resnet101", "cirkd")]
    counts = {}  # golden: full width, 19 classes, with the auxiliary heads
    for name, variant in [
        ("pspnet_resnet101", "authors"),
        ("pspnet_resnet18", "authors"),
        ("pspnet_resnet101", "cirkd"),
        ("deeplabv3_resnet101", "cirkd"),
    ]:
        with torch.device("meta"):
            counts[(name, variant)] = count_parameters(build_model(name, 19, variant=variant))
    assert list(counts.values()) == [70_437_350, 13_068_262, 58_629_606, 79_084_262]
    assert model_variants("pspnet_resnet18") == ("default", "authors")
    with pytest.raises(ValueError, match=r"has no variant 'cirkd'; its variants: \['default'"):
        build_model("pspnet_resnet18", 19, variant="cirkd")
    with pytest.raises(ValueError, match=r"has no variant 'authors'"):
        build_model("espnet", 19, variant="authors")


def test_every_distillation_term_works_with_the_released_variants():
    """An authors'-variant student under an authors'-variant teacher (their logit grid), and a
    library student under CIRKD's DeepLabV3 (the same grid as the library's): every term."""
    pairs = [
        (("pspnet_resnet18", "authors", 0.25), ("pspnet_resnet18", "authors", 0.5)),
        (("pspnet_resnet18", "default", 0.25), ("deeplabv3_resnet101", "cirkd", 0.125)),
    ]
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 128, 128, generator=gen)
    label = torch.randint(0, 4, (2, 128, 128), generator=gen)
    for (s_name, s_variant, s_width), (t_name, t_variant, t_width) in pairs:
        torch.manual_seed(0)
        student = build_model(s_name, 4, variant=s_variant, width=s_width)
        teacher = build_model(t_name, 4, variant=t_variant, width=t_width).eval()
        critic = Discriminator(4, widths=(8, 8, 8, 8))
        ctx = StepContext(
            distill=DistillConfig(node_size=1, disc_widths=(8, 8, 8, 8), cwd=True, dist=True),
            critic_generator=torch.Generator().manual_seed(0),
        )
        before = [p.detach().clone() for p in student.parameters()]
        terms = distill_step(
            student=student,
            teacher=teacher,
            optimizer=torch.optim.SGD(student.parameters(), lr=0.01),
            image=image,
            label=label,
            ctx=ctx,
            critic=critic,
            critic_optimizer=torch.optim.SGD(critic.parameters(), lr=0.01),
        )
        assert {"task", "pixel", "pair", "gen", "cwd", "dist"} <= set(terms)
        assert all(math.isfinite(float(v)) for v in terms.values()), terms
        moved = [not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True)]
        assert any(moved)


# ---------------------------------------------------------------------------------------------
# Conversion, evaluation with the authors' input
# ---------------------------------------------------------------------------------------------
def _cityscapes(root: Path, split: str = "val", size: tuple[int, int] = (40, 80)) -> None:
    """A Cityscapes-layout tree of two frames (label ids, mapped to train ids on reading)."""
    rng = np.random.default_rng(0)
    ids = np.array([7, 8, 11, 21, 23, 24, 26, 0])  # road, sidewalk, ..., unlabeled
    for city, frame in (("aachen", "000000_000019"), ("bonn", "000001_000019")):
        stem = f"{city}_{frame}"
        image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        label = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(image)
        Image.fromarray(ids[rng.integers(0, len(ids), size=size)].astype(np.uint8), "L").save(label)


def _convert_and_evaluate(tmp_path: Path, name: str, capsys) -> None:
    fact, path, _ = released_file(tmp_path, name)
    out = tmp_path / "converted.pt"
    assert convert_main(["--layout", fact["layout"], str(path), str(out)]) == 0
    assert f"wrote {out}: {fact['model']} (variant '{fact['variant']}'" in capsys.readouterr().out
    converted = build_model(fact["model"], 19, variant=fact["variant"])
    load_pretrained(converted, out, strict=True)
    root = tmp_path / "cityscapes"
    _cityscapes(root)
    sets = [
        f"model.student={fact['model']}",
        f"model.student_variant={fact['variant']}",
        "data.normalize=caffe_bgr",
        "data.name=cityscapes",
        f"data.root={root}",
    ]
    args = ["--checkpoint", str(out), "--config", str(CONFIGS / "paper.yaml"), "--device", "cpu"]
    assert evaluate_main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    scores = json.loads(capsys.readouterr().out)
    # the same network straight from the released file, the same input convention
    direct = variant_model(fact)
    load_released(direct, path, layout=fact["layout"])
    dataset = build_dataset("cityscapes", root, "val")
    expected = evaluate(direct, dataset, num_classes=19, device="cpu", normalization="caffe_bgr")
    assert scores["num_images"] == expected["num_images"] == 2
    assert scores["miou"] == pytest.approx(expected["miou"], nan_ok=True)
    assert scores["pixel_acc"] == pytest.approx(expected["pixel_acc"])
    other = evaluate(direct, dataset, num_classes=19, device="cpu")  # ImageNet input instead
    assert other["pixel_acc"] != pytest.approx(expected["pixel_acc"])


def test_a_converted_student_evaluates_on_a_cityscapes_tree_with_the_authors_input(
    tmp_path, capsys
):
    _convert_and_evaluate(tmp_path, "skd_authors_student_r18", capsys)


@pytest.mark.slow
def test_a_converted_teacher_evaluates_on_a_cityscapes_tree_with_the_authors_input(
    tmp_path, capsys
):
    _convert_and_evaluate(tmp_path, "skd_authors_teacher_r101", capsys)


def test_a_released_teacher_and_an_imagenet_start_from_the_config(tmp_path):
    """``model.teacher_checkpoint_layout`` and ``model.student_pretrained_layout`` read the
    released files themselves (no conversion)."""
    from skdlib.train.build import build_student, build_teacher

    _, teacher_file, _ = released_file(tmp_path, "skd_authors_student_r18", seed=3)
    _, imagenet_file, imagenet = released_file(tmp_path, "csail_imagenet_r18", seed=4)
    cfg = load_config(
        CONFIGS / "paper_released.yaml",
        [
            "model.teacher=pspnet_resnet18",  # the student's file stands in for the teacher's
            f"model.teacher_checkpoint={teacher_file}",
            f"model.student_pretrained={imagenet_file}",
        ],
    )
    teacher = build_teacher(cfg, 19)
    reference = variant_model(facts("skd_authors_student_r18"))
    load_released(reference, teacher_file, layout="skd_authors")
    for key, value in reference.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value), key
    student = build_student(cfg, 19)
    assert torch.equal(student.backbone.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_torn_and_foreign_files_get_the_one_line_checkpoint_error(tmp_path, caplog):
    fact, path, _ = released_file(tmp_path, "skd_authors_student_r18")
    model = variant_model(fact)
    torn = tmp_path / "torn.pth"
    torn.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    for bad in (torn, text):
        with pytest.raises(CheckpointError, match=rf"{bad} is truncated or not a PyTorch"):
            load_released(model, bad, layout="skd_authors")
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert convert_main(["--layout", "skd_authors", str(bad), str(tmp_path / "o")]) == 2
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(lines) == 1 and "\n" not in lines[0] and str(bad) in lines[0]
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        load_released(model, tmp_path / "nowhere.pth", layout="skd_authors")
    not_weights = tmp_path / "config.pth"
    torch.save({"lr": 0.01}, not_weights)
    with pytest.raises(ValueError, match=rf"{not_weights} holds no state dict"):
        load_released(model, not_weights, layout="skd_authors")


def test_a_file_of_another_layout_or_network_is_named_with_its_first_keys(tmp_path):
    fact, path, _ = released_file(tmp_path, "skd_authors_student_r18")
    with pytest.raises(ValueError, match=r"layout 'cirkd'.*no key fits|no key fits layout"):
        load_released(variant_model(fact), path, layout="cirkd")
    default = build_model("pspnet_resnet18", 19)  # torchvision's stem: shapes differ
    with pytest.raises(ValueError, match=r"shape mismatch") as info:
        load_released(default, path, layout="skd_authors")
    message = str(info.value)
    assert str(path) in message
    assert "conv1.weight -> backbone.conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)" in (
        message
    )
    assert "variant='authors'" in message and "(and " in message  # the first keys, then a count
    with pytest.raises(ValueError, match=r"unknown layout 'authors'; valid layouts: skd_authors"):
        load_released(default, path, layout="authors")
    with pytest.raises(ValueError, match=r"not a 'cirkd' file \(no 'pretrained.conv3.weight'"):
        infer_released(torch.load(path), layout="cirkd", source=str(path))


def test_strict_loads_name_missing_and_unexpected_keys(tmp_path):
    fact = facts("skd_authors_student_r18")
    state = random_state(fact["keys"])
    del state["layer4.1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    model = variant_model(fact)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as info:
        load_released(model, path, layout="skd_authors")
    message = str(info.value)
    assert str(path) in message
    assert "1 model key(s) not in the file: backbone.layer4.1.bn2.running_var" in message
    assert "1 file key(s) without a place: extra.weight" in message
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    report = load_released(model, path, layout="skd_authors", strict=False)
    assert report.missing_keys == ["backbone.layer4.1.bn2.running_var"]
    assert report.unexpected_keys == ["extra.weight"]
    assert torch.equal(model.state_dict()["head.classifier.bias"], state["head.bias"])
