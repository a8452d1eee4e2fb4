"""Networks of one's own in training: terms on two grids, gradients, the loop (checkpoints,
resume, evaluation, a run's network read back, ONNX) and the pipeline with an import-path student.

The networks are tests/user_networks.py (shaped like torchvision's and timm's, written here: their
CPU wheels are not installable); an import path ``user_networks:...`` finds them on ``sys.path``
(pytest puts this folder there; subprocesses and kernels get ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from interrupt import train_until_interrupted
from user_networks import TinyUNet

from skdlib import losses
from skdlib.data.generate import ensure_embedded
from skdlib.models import SegmentationOutput, TappedModel, build_model
from skdlib.models.discriminator import Discriminator
from skdlib.train import terms
from skdlib.train.build import build_models, load_run_network
from skdlib.train.config import DistillConfig, apply_overrides, load_config, validate_with_model
from skdlib.train.loop import train
from skdlib.train.step import StepContext, distill_step

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NUM_CLASSES = 8
UNET = "user_networks:build_unet"
UNET_TAPS = "model.student_taps={features: {head: decoder.block2}}"


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# One grid for two maps
# ---------------------------------------------------------------------------------------------
def test_resize_map_by_hand() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert terms.resize_map(x, (4, 4)) is x
    down = terms.resize_map(x, (2, 2))  # area: the mean of each 2 x 2 block
    torch.testing.assert_close(down, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    up = terms.resize_map(down, (4, 4))  # bilinear, align_corners=False, as evaluation
    want = F.interpolate(down, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, want)
    torch.testing.assert_close(
        terms.resize_map(torch.ones(2, 3, 2, 5), (7, 3)), torch.ones(2, 3, 7, 3)
    )


def test_on_one_grid_follows_align_and_passes_gradients() -> None:
    s = _rand(2, 3, 8, 8, seed=0).requires_grad_(True)
    t = _rand(2, 5, 4, 4, seed=1)
    a, b = terms.on_one_grid(s, t, "student")
    assert a is s and b.shape == (2, 5, 8, 8)
    a, b = terms.on_one_grid(s, t, "teacher")
    assert a.shape == (2, 3, 4, 4) and b is t
    a.sum().backward()
    torch.testing.assert_close(s.grad, torch.full_like(s, 0.25))  # each cell a quarter of a mean
    same = _rand(2, 5, 8, 8, seed=2)
    assert terms.on_one_grid(s, same, "teacher") == (s, same)
    with pytest.raises(ValueError, match=r"distill\.align must be one of"):
        terms.on_one_grid(s, t, "both")


def _inputs(distill: DistillConfig, *, student_side: int = 16, teacher_side: int = 8):
    student = SegmentationOutput(
        logits=_rand(2, 4, student_side, student_side, seed=3),
        features={"head": _rand(2, 6, student_side, student_side, seed=4)},
    )
    teacher = SegmentationOutput(
        logits=_rand(2, 4, teacher_side, teacher_side, seed=5),
        features={"head": _rand(2, 9, teacher_side, teacher_side, seed=6)},
    )
    image = _rand(2, 3, 64, 64, seed=7)
    return student, teacher, terms.TermInputs(student, teacher, image, distill)


@pytest.mark.parametrize("align", ["student", "teacher"])
def test_every_term_compares_on_the_aligned_grid(align: str) -> None:
    d = DistillConfig(align=align, node_size=2, mimic=True, attention=True, cwd=True, dist=True)
    student, teacher, x = _inputs(d)
    size = (16, 16) if align == "student" else (8, 8)

    def grid(m: torch.Tensor) -> torch.Tensor:
        return terms.resize_map(m, size)

    s, t = grid(student.logits), grid(teacher.logits)
    fs, ft = grid(student.features["head"]), grid(teacher.features["head"])
    by_name = {term.name: term for term in terms.TERMS}
    want = {
        "pixel": losses.pixelwise_kd_loss(s, t),
        "pair": losses.pairwise_similarity_loss(fs, ft, node_size=2),
        "attention": losses.attention_transfer_loss(fs, ft),
        "cwd": losses.cwd_loss(s, t, temperature=d.cwd_temperature),
        "dist": losses.dist_loss(s, t),
    }
    for name, value in want.items():
        torch.testing.assert_close(by_name[name].loss(x), value, msg=name)
    adapter = losses.make_mimic_adapter(6, 9)
    with_adapter = terms.TermInputs(student, teacher, x.image, d, adapter=adapter)
    torch.testing.assert_close(
        by_name["mimic"].loss(with_adapter), losses.mimic_loss(fs, ft, adapter=adapter)
    )


def test_the_pair_term_keeps_maps_whose_node_grids_agree() -> None:
    d = DistillConfig(node_size=1, node_fraction=0.5)  # 2 x 2 nodes on either map
    student, teacher, x = _inputs(d)
    raw = losses.pairwise_similarity_loss(
        student.features["head"], teacher.features["head"], node_fraction=0.5
    )
    pair = next(t for t in terms.TERMS if t.name == "pair")
    torch.testing.assert_close(pair.loss(x), raw)
    resized = losses.pairwise_similarity_loss(
        student.features["head"],
        terms.resize_map(teacher.features["head"], (16, 16)),
        node_fraction=0.5,
    )
    assert not torch.allclose(raw, resized)  # so the test tells the two apart


# ---------------------------------------------------------------------------------------------
# Gradients reach the student only
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("align", ["student", "teacher"])
def test_gradients_reach_the_student_only(align: str) -> None:
    torch.manual_seed(0)
    student = build_model(UNET, 4, taps={"features": {"head": "decoder.block2"}}).train()
    teacher = build_model(
        "user_networks:build_fcn",
        4,
        taps={"logits": "out", "aux_logits": "aux", "features": {"head": "classifier.2"}},
    ).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    assert (student.output_stride, teacher.output_stride) == (2, 1)
    d = DistillConfig(align=align, node_size=2, mimic=True, dist=True, disc_downsample=3)
    adapter = losses.make_mimic_adapter(
        student.feature_channels["head"], teacher.feature_channels["head"]
    )
    critic = Discriminator(4, widths=(8, 8, 8, 8), downsample=3)
    optimizer = torch.optim.SGD([*student.parameters(), *adapter.parameters()], lr=0.1)
    before = {n: p.detach().clone() for n, p in student.module.named_parameters()}
    adapter_before = adapter.weight.detach().clone()
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    image = _rand(2, 3, 64, 64, seed=8)
    label = torch.randint(0, 4, (2, 64, 64), generator=torch.Generator().manual_seed(9))
    out = distill_step(
        student=student,
        teacher=teacher,
        optimizer=optimizer,
        image=image,
        label=label,
        ctx=StepContext(distill=d),
        critic=critic,
        critic_optimizer=torch.optim.SGD(critic.parameters(), lr=0.1),
        adapter=adapter,
    )
    for name in ("task", "pixel", "pair", "mimic", "dist", "gen", "critic", "gp"):
        assert torch.isfinite(torch.tensor(out[name])), name
    assert out["skipped_student"] == 0.0 and out["skipped_critic"] == 0.0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters(), strict=True))
    moved = {n for n, p in student.module.named_parameters() if not torch.equal(before[n], p)}
    # Every student weight moved but the deep-supervision head's, whose output is never read.
    assert moved == {n for n in before if not n.startswith("deep_supervision.")}
    assert not torch.equal(adapter_before, adapter.weight)


# ---------------------------------------------------------------------------------------------
# From a config
# ---------------------------------------------------------------------------------------------
def _own(*extra: str):
    return apply_overrides(
        load_config(REPO / "configs" / "smoke.yaml"),
        [
            f"model.student={UNET}",
            "model.student_options={width: 4}",
            UNET_TAPS,
            "model.teacher=user_networks:build_segformer",
            "model.teacher_taps={logits: 0, features: {head: 1}}",
            "model.teacher_options={}",
            "distill.mimic=true",
            "distill.disc_downsample=3",
            "data.crop_size=[64,64]",
            *extra,
        ],
    )


@pytest.mark.parametrize(("align", "stride"), [("student", 2), ("teacher", 4)])
def test_build_models_from_import_paths(align: str, stride: int) -> None:
    cfg = _own(f"distill.align={align}")
    student, teacher, critic, adapter = build_models(cfg, NUM_CLASSES)
    assert isinstance(student, TappedModel) and isinstance(teacher.module, torch.nn.Module)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert (adapter.in_channels, adapter.out_channels) == (4, 16)  # MIMIC: 4 -> 16 channels
    assert critic is not None
    # The critic's size check follows the grid of the terms: 64 / 4 = 16 cells (at least 8).
    too_small = _own(f"distill.align={align}", f"data.crop_size=[{8 * stride - 1},64]")
    with pytest.raises(ValueError, match=f"output stride {stride}"):
        build_models(too_small, NUM_CLASSES)


def test_one_builder_honours_variants_and_taps_together() -> None:
    """build_network builds a book network of a released variant beside a network of one's own
    with its taps (the teacher here), and refuses a variant for the latter."""
    cfg = apply_overrides(
        _own("distill.mimic=false"),
        [
            "model.student=pspnet_resnet18",
            "model.student_variant=authors",
            "model.student_options={width: 0.25}",
            "model.student_taps={}",
        ],
    )
    student, teacher, _, _ = build_models(cfg, NUM_CLASSES)
    assert student.align_corners is True  # the authors' PSPNet: their heads and deep stem
    assert "backbone.conv3.weight" in student.state_dict()
    assert isinstance(teacher, TappedModel) and teacher.feature_channels
    with pytest.raises(ValueError, match=r"model.teacher_variant: variants are for the book's"):
        apply_overrides(cfg, ["model.teacher_variant=authors"])


def test_a_missing_feature_or_other_classes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"distill.pair_feature: 'head' is not a feature of "):
        build_models(_own("model.student_taps={}"), NUM_CLASSES)
    with pytest.raises(ValueError, match=r"model.teacher_options: num_classes is no option"):
        build_models(_own("model.teacher_options={num_classes: 5}"), NUM_CLASSES)
    student, teacher = build_model(UNET, 8), build_model(UNET, 5)
    cfg = _own("distill.pairwise=false", "distill.mimic=false")
    with pytest.raises(ValueError, match="the teacher predicts 5 classes, the student 8"):
        validate_with_model(cfg, student, teacher=teacher)
    with pytest.raises(
        ValueError, match=r"model.student: model 'user_networks:build_unet': .*'depth'"
    ):
        build_models(_own("model.student_options={depth: 2}"), NUM_CLASSES)


# ---------------------------------------------------------------------------------------------
# The loop: checkpoints, resume, evaluation, read back, export
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own")
    data = ensure_embedded(root / "data", height=64, width=64, num_train=4, num_val=2)
    torch.manual_seed(0)
    teacher = build_model("pspnet_resnet18", NUM_CLASSES, width=0.25)
    path = root / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    return {"root": root, "data": data, "teacher": path}


def _run_config(tiny: dict[str, Path], *extra: str):
    """TinyUNet (stride 2) from a PSPNet-ResNet18 teacher (stride 8): every paper term, DIST."""
    return load_config(
        REPO / "configs" / "smoke.yaml",
        [
            f"data.root={tiny['data']}",
            "data.crop_size=[64,64]",
            "data.num_workers=0",
            f"model.student={UNET}",
            "model.student_options={width: 4}",
            UNET_TAPS,
            "model.teacher=pspnet_resnet18",
            "model.teacher_options={width: 0.25}",
            f"model.teacher_checkpoint={tiny['teacher']}",
            "distill.dist=true",
            "distill.node_size=2",
            "distill.disc_downsample=3",
            "train.max_iters=4",
            "train.checkpoint_every=2",
            *extra,
        ],
    )


@pytest.mark.slow
def test_an_import_path_student_trains_resumes_evaluates_and_exports(tiny, tmp_path, monkeypatch):
    from skdlib.evaluate import main as evaluate_main
    from skdlib.models import check_onnx, export_onnx

    cfg = _run_config(tiny)
    summary = train(cfg, tmp_path / "straight", progress=False)
    assert summary["finished"] and summary["params"] > 0 and summary["flops"] > 0
    final = torch.load(tmp_path / "straight" / "checkpoints" / "final.pt", weights_only=True)
    assert list(final) == list(TinyUNet().state_dict())  # the plain module's own keys
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").open()]
    for term in ("pixel", "pair", "gen", "dist"):
        assert all(term in r for r in records if "split" not in r), term
    # Resume after an interruption: the same weights as the straight run.
    train_until_interrupted(cfg, tmp_path / "halves", monkeypatch, steps=2)
    train(cfg, tmp_path / "halves", resume=True, progress=False)
    again = torch.load(tmp_path / "halves" / "checkpoints" / "final.pt", weights_only=True)
    assert all(torch.equal(final[k], again[k]) for k in final)
    # The evaluation CLI from the run's config, the network read back, the ONNX export.
    run = tmp_path / "straight"
    scores = tmp_path / "scores.json"
    argv = [
        "--config",
        str(run / "config.yaml"),
        "--checkpoint",
        str(run / "checkpoints" / "final.pt"),
    ]
    assert evaluate_main([*argv, "--output", str(scores)]) == 0
    assert json.loads(scores.read_text())["miou"] == pytest.approx(summary["miou"])
    net = load_run_network(run, NUM_CLASSES)
    assert isinstance(net.module, TinyUNet)
    pytest.importorskip("onnxruntime")
    path = export_onnx(net, tmp_path / "unet.onnx", (64, 64))
    assert check_onnx(net, path, _rand(2, 3, 64, 64, seed=1)) < 1e-3


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
def _own_plan(root: Path) -> Path:
    """A plan whose profile trains the smoke teacher, then TinyUNet students named by import
    path in their preset (no pretraining run: its weights are a PSPNet backbone's)."""
    import shutil

    shutil.copytree(REPO / "configs", root / "configs")
    student = {
        "base": "smoke.yaml",
        "model": {
            "student": UNET,
            "student_options": {"width": 4},
            "student_taps": {"features": {"head": "decoder.block2"}},
        },
    }
    (root / "configs" / "own_student.yaml").write_text(yaml.safe_dump(student))
    plan = yaml.safe_load((REPO / "configs" / "experiments.yaml").read_text())
    own = plan["profiles"]["smoke"]
    own.pop("pretrain", None)
    own["config"] = "configs/own_student.yaml"
    # Beside the data sets the configs place under root/data (the teacher's own pretraining's
    # source task), not above them.
    own["overrides"] = [*own["overrides"], f"data.root={root / 'data' / 'embedded_labelled'}"]
    plan["profiles"] = {"own": own}
    path = root / "configs" / "experiments.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@pytest.mark.slow
def test_the_pipeline_trains_an_import_path_student(tmp_path, monkeypatch) -> None:
    from skdlib.experiments import run_pipeline

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    plan = _own_plan(tmp_path)
    result = run_pipeline(
        "own",
        plan_path=plan,
        project_root=tmp_path,
        notebook=REPO / "book" / "training.md",
        runs_root=tmp_path / "runs",
        only=["baseline", "pi_pa_ho", "dist"],
        jobs=1,
    )
    assert result["failed"] == [], result
    index = json.loads((tmp_path / "runs" / "own" / "index.json").read_text())
    for exp in index["experiments"]:
        (run,) = exp["runs"]
        folder = tmp_path / "runs" / "own" / run["run_dir"]
        assert json.loads((folder / "summary.json").read_text())["finished"], exp["name"]
        cfg = load_config(folder / "config.yaml")
        assert cfg.model.student == UNET and cfg.model.student_pretrained is None
        final = torch.load(folder / "checkpoints" / "final.pt", weights_only=True)
        assert list(final) == list(TinyUNet(width=4).state_dict())
