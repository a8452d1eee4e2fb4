"""The unlabeled stream: images without labels feed the distillation terms, never the task loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from ddp import become_worker, build_without_dropout, free_port
from interrupt import train_until_interrupted
from PIL import Image

import skdlib.models
import skdlib.train.step as step_module
from skdlib.data import DataError, build_dataset
from skdlib.data.generate import ensure_embedded
from skdlib.experiments import load_plan
from skdlib.losses import segmentation_task_loss
from skdlib.models import build_model
from skdlib.train.build import build_unlabeled_dataset
from skdlib.train.config import load_config, save_config
from skdlib.train.loop import train
from skdlib.train.step import with_unlabeled

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 8  # the embedded data set's classes


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Tiny labelled and unlabeled embedded sets (128x128) and a random half-width teacher."""
    root = tmp_path_factory.mktemp("unlabeled")
    data = ensure_embedded(root / "data", height=128, width=128, num_train=4, num_val=2)
    extra = ensure_embedded(root / "extra", seed=7, height=128, width=128, num_train=6, num_val=1)
    torch.manual_seed(0)
    teacher_path = root / "teacher_final.pt"
    torch.save(build_model("pspnet_resnet18", NUM_CLASSES, width=0.5).state_dict(), teacher_path)
    return {"data": data, "extra": extra, "teacher": teacher_path}


def _config(assets: dict[str, Path], *extra: str, unlabeled: int = 2):
    stream = (
        [
            "data.unlabeled.name=images",
            f"data.unlabeled.root={assets['extra']}",
            f"data.unlabeled.batch_size={unlabeled}",
        ]
        if unlabeled is not None
        else []
    )
    return load_config(
        REPO / "configs" / "smoke.yaml",
        [
            f"data.root={assets['data']}",
            "data.crop_size=[128,128]",
            "data.scale_range=[1.0,1.0]",
            "data.batch_size=2",
            "data.num_workers=0",
            "train.device=cpu",
            "train.log_every=1",
            "train.eval_every=0",
            "model.teacher_options.width=0.5",
            f"model.teacher_checkpoint={assets['teacher']}",
            *stream,
            *extra,
        ],
    )


def _final(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    if atol == 0.0:
        different = [k for k in a if not torch.equal(a[k], b[k])]
    else:
        different = [
            k
            for k in a
            if a[k].is_floating_point() and not torch.allclose(a[k], b[k], atol=atol, rtol=0)
        ]
    assert not different, f"tensors differ: {different[:5]}"


# ------------------------------------------------------------------------------------------------
# The image folder
# ------------------------------------------------------------------------------------------------
def _write_png(path: Path, height: int = 8, width: int = 12, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_reads_images_only_and_ignores_label_folders(tmp_path):
    _write_png(tmp_path / "train" / "images" / "a.png")
    _write_png(tmp_path / "train" / "images" / "b.jpg")
    (tmp_path / "train" / "labels").mkdir()
    (tmp_path / "train" / "labels" / "a.png").write_bytes(b"not a png: must never be opened")
    ds = build_dataset("images", tmp_path, "train")
    assert len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (3, 8, 12) and item["image"].dtype == torch.float32
    assert item["label"].shape == (8, 12) and bool((item["label"] == 255).all())
    assert item["name"] == "a"


@pytest.mark.parametrize("layout", ["images/train", "train", "."])
def test_image_folder_layouts(tmp_path, layout):
    _write_png(tmp_path / layout / "x.png")
    assert len(build_dataset("images", tmp_path, "train")) == 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no images"):
        build_dataset("images", tmp_path, "train")
    _write_png(tmp_path / "train" / "good.png")
    (tmp_path / "train" / "bad.png").write_bytes(b"broken")
    ds = build_dataset("images", tmp_path, "train")
    with pytest.raises(DataError, match=r"bad\.png"):
        ds[0]
    skipping = build_dataset("images", tmp_path, "train", skip_bad=True)
    assert skipping[0]["name"] == "good"


def test_a_labelled_data_set_as_unlabeled_stream_has_its_labels_replaced(assets):
    cfg = _config(assets, "data.unlabeled.name=embedded", unlabeled=2)
    ds = build_unlabeled_dataset(cfg)
    item = ds[0]
    assert bool((item["label"] == 255).all())


# ------------------------------------------------------------------------------------------------
# The task loss never sees the unlabeled images
# ------------------------------------------------------------------------------------------------
def test_with_unlabeled_appends_ignore_labels_so_the_task_loss_is_unchanged():
    gen = torch.Generator().manual_seed(0)
    image, label = (
        torch.randn(2, 3, 16, 16, generator=gen),
        torch.randint(0, 4, (2, 16, 16), generator=gen),
    )
    unlabeled = torch.randn(3, 3, 16, 16, generator=gen)
    all_image, all_label = with_unlabeled(image, label, unlabeled)
    assert all_image.shape == (5, 3, 16, 16) and all_label.shape == (5, 16, 16)
    assert torch.equal(all_image[:2], image) and torch.equal(all_label[:2], label)
    assert bool((all_label[2:] == 255).all())
    # Whatever the network predicts for the unlabeled rows, the task loss is that of the labelled
    # rows.
    logits = torch.randn(5, 4, 4, 4, generator=gen)
    aux = torch.randn(5, 4, 4, 4, generator=gen)
    expected = segmentation_task_loss(logits[:2], label, aux_logits=aux[:2])
    got = segmentation_task_loss(logits, all_label, aux_logits=aux)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    wild = logits.clone()
    wild[2:] = 1e3 * torch.randn(3, 4, 4, 4, generator=gen)
    torch.testing.assert_close(
        segmentation_task_loss(wild, all_label, aux_logits=aux), expected, rtol=1e-6, atol=0
    )
    assert with_unlabeled(image, label, None) == (image, label)
    with pytest.raises(ValueError, match="unlabeled_image"):
        with_unlabeled(image, label, torch.randn(1, 3, 8, 8))


@pytest.mark.slow
def test_the_step_receives_unlabeled_images_with_ignore_labels(assets, tmp_path, monkeypatch):
    seen = []
    real_step = step_module.distill_step

    def spy(**kwargs):
        seen.append(
            (kwargs["image"].shape[0], int((kwargs["label"] != 255).flatten(1).any(1).sum()))
        )
        return real_step(**kwargs)

    monkeypatch.setattr(step_module, "distill_step", spy)
    train(_config(assets, "train.max_iters=2", unlabeled=3), tmp_path / "run", progress=False)
    # 2 labelled + 3 unlabeled images per step; only the 2 labelled ones carry any label.
    assert seen == [(5, 2), (5, 2)]
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.data.unlabeled.name == "images" and saved.data.unlabeled.batch_size == 3


# ------------------------------------------------------------------------------------------------
# Equivalences: zero unlabeled images, resume, DDP
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_zero_unlabeled_images_equal_a_run_without_the_option(assets, tmp_path):
    train(
        _config(assets, "train.max_iters=2", unlabeled=None), tmp_path / "without", progress=False
    )
    train(_config(assets, "train.max_iters=2", unlabeled=0), tmp_path / "zero", progress=False)
    _assert_same(_final(tmp_path / "without"), _final(tmp_path / "zero"))


@pytest.mark.slow
def test_resume_with_the_stream_is_exact(assets, tmp_path, monkeypatch):
    cfg = _config(assets, "train.max_iters=4", "train.checkpoint_every=2", unlabeled=2)
    train(cfg, tmp_path / "straight", progress=False)
    train_until_interrupted(cfg, tmp_path / "halves", monkeypatch, steps=2)
    train(cfg, tmp_path / "halves", resume=True, progress=False)
    _assert_same(_final(tmp_path / "straight"), _final(tmp_path / "halves"))


def _ddp_config(data: str, extra: str, teacher: str, batch_size: int, unlabeled: int):
    # Holistic off: the gradient penalty's interpolation weights are drawn per process.
    return load_config(
        REPO / "configs" / "smoke.yaml",
        [
            f"data.root={data}",
            "data.crop_size=[64,64]",
            "data.scale_range=[1.0,1.0]",
            f"data.batch_size={batch_size}",
            "data.num_workers=0",
            "train.device=cpu",
            "train.max_iters=1",
            "train.checkpoint_every=0",
            "distill.holistic=false",
            "model.teacher_options.width=0.5",
            f"model.teacher_checkpoint={teacher}",
            "data.unlabeled.name=images",
            f"data.unlabeled.root={extra}",
            f"data.unlabeled.batch_size={unlabeled}",
        ],
    )


def _worker(
    rank: int, world_size: int, port: int, data: str, extra: str, teacher: str, run: str
) -> None:
    become_worker(rank, world_size, port)
    train(_ddp_config(data, extra, teacher, batch_size=1, unlabeled=1), run, progress=False)


@pytest.mark.slow
def test_two_gloo_processes_with_the_stream_match_one_process(assets, tmp_path, monkeypatch):
    """2 processes x (1 labelled + 1 unlabeled) against 1 process x (2 + 2): same global batch.

    The per-process batch is [labelled, unlabeled], the single process's [l0, l1, u0, u1]: the same
    images, so with synchronised batch-norm and averaged gradients the weights agree up to float32
    reduction order (tolerance 1e-5, as the labelled-only DDP test).
    """
    args = (str(assets["data"]), str(assets["extra"]), str(assets["teacher"]))
    mp.spawn(_worker, args=(2, free_port(), *args, str(tmp_path / "ddp")), nprocs=2, join=True)
    monkeypatch.setattr(skdlib.models, "build_model", build_without_dropout)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_ddp_config(*args, batch_size=2, unlabeled=2), tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["world_size"] == 2
    _assert_same(_final(tmp_path / "ddp"), _final(tmp_path / "single"), atol=1e-5)


@pytest.mark.parametrize("preset", ["paper", "official_code", "quick", "smoke"])
def test_every_student_preset_takes_the_stream_and_records_it(preset, tmp_path):
    stream = [
        "data.unlabeled.name=images",
        f"data.unlabeled.root={tmp_path / 'frames'}",
        "data.unlabeled.batch_size=3",
    ]
    cfg = load_config(REPO / "configs" / f"{preset}.yaml", stream)
    assert cfg.data.unlabeled.enabled and cfg.data.unlabeled.batch_size == 3
    save_config(cfg, tmp_path / "config.yaml")
    assert (
        load_config(tmp_path / "config.yaml") == cfg
    )  # the run folder's config.yaml records the stream


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["paper", "authors_code"])
def test_a_step_with_the_stream_runs_under_each_presets_distillation_settings(
    assets, tmp_path, setting
):
    # The authors' code feeds raw logits without the image to a batch-normalised critic and pools
    # the pair-wise nodes differently: the stream must work with both, the holistic term included.
    official = [
        o for o in load_plan().settings["official"] if o.startswith("distill.")
    ]  # the pipeline's list
    assert "distill.disc_input=logits" in official and "distill.disc_use_image=false" in official
    cfg = _config(
        assets, "train.max_iters=2", *(official if setting == "authors_code" else []), unlabeled=2
    )
    summary = train(cfg, tmp_path / setting, progress=False)
    assert summary["finished"]
    records = [
        json.loads(line) for line in (tmp_path / setting / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r for r in records if "split" not in r]
    assert len(steps) == 2
    assert all(r["skipped_student"] == 0 and r["skipped_critic"] == 0 for r in steps)
    assert all(math.isfinite(r[k]) for r in steps for k in ("pixel", "pair", "gen", "critic", "gp"))
