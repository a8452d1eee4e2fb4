"""The training loop: run folder contents, refusals, exact resume (also after SIGKILL), non-finite
stops."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from interrupt import train_until_interrupted

import skdlib.train.step as step_module
from skdlib.data import DataError, SegmentationDataset
from skdlib.data.generate import ensure_embedded
from skdlib.models import build_model
from skdlib.train.build import build_dataset_for, build_student_optimizer
from skdlib.train.config import config_hash, load_config
from skdlib.train.loop import NonFiniteLossError, RunFolderError, poly_lr, train
from skdlib.train.sampling import batch_indices, derive_seed

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
NUM_CLASSES = 8  # the embedded data set's classes


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Tiny embedded data (6 train / 2 val at 128x128) and a random half-width teacher's
    final.pt."""
    root = tmp_path_factory.mktemp("loop")
    data = ensure_embedded(root / "data", height=128, width=128, num_train=6, num_val=2)
    torch.manual_seed(0)
    teacher = build_model("pspnet_resnet18", NUM_CLASSES, width=0.5)
    teacher_path = root / "teacher_final.pt"
    torch.save(teacher.state_dict(), teacher_path)
    return {"data": data, "teacher": teacher_path}


def _tiny(assets: dict[str, Path], *extra: str) -> list[str]:
    """Overrides turning a preset into a seconds-long CPU run on the tiny data (128x128 crops: the
    discriminator needs 16x16 logit maps)."""
    return [
        "data.name=embedded",
        f"data.root={assets['data']}",
        "data.crop_size=[128,128]",
        "data.scale_range=[1.0,1.0]",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.device=cpu",
        "train.log_every=1",
        "train.eval_every=0",
        *extra,
    ]


def _smoke(assets: dict[str, Path], *extra: str):
    return load_config(
        CONFIGS / "smoke.yaml",
        _tiny(
            assets,
            "model.teacher_options.width=0.5",
            f"model.teacher_checkpoint={assets['teacher']}",
            *extra,
        ),
    )


def _final(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------
def test_poly_lr_by_hand():
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0
    with pytest.raises(ValueError, match="iteration"):
        poly_lr(0.01, 101, 100, 0.9)


def test_student_optimizer_follows_train_optimizer():
    student = build_model("pspnet_resnet18", NUM_CLASSES, width=0.125)
    sgd = build_student_optimizer(load_config(CONFIGS / "smoke.yaml"), student)
    assert type(sgd) is torch.optim.SGD
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 5e-4
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        ["train.optimizer=adamw", "train.lr=0.003", "train.weight_decay=1e-4"],
    )
    adamw = build_student_optimizer(cfg, student)
    assert type(adamw) is torch.optim.AdamW
    assert adamw.defaults["lr"] == 0.003 and adamw.defaults["weight_decay"] == 1e-4
    assert adamw.defaults["betas"] == (0.9, 0.999)  # PyTorch's defaults
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(student.parameters()))


def test_batch_order_is_a_permutation_per_epoch_and_split_across_ranks():
    n, batch = 6, 2
    first_epoch = [
        i for it in range(3) for i in batch_indices(it, num_items=n, batch_size=batch, seed=3)
    ]
    assert sorted(first_epoch) == list(range(n))
    second_epoch = [
        i for it in range(3, 6) for i in batch_indices(it, num_items=n, batch_size=batch, seed=3)
    ]
    assert sorted(second_epoch) == list(range(n)) and second_epoch != first_epoch
    # Two processes with batch 1 each see exactly the single process's batch of 2.
    for it in range(6):
        whole = batch_indices(it, num_items=n, batch_size=2, seed=3)
        split = [
            batch_indices(it, num_items=n, batch_size=1, seed=3, world_size=2, rank=r)[0]
            for r in (0, 1)
        ]
        assert split == whole
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)


# --------------------------------------------------------------------------------------------------
# A run and its folder
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_folder_contents(assets, tmp_path, caplog):
    cfg = _smoke(assets, "train.max_iters=2", "train.checkpoint_every=1")
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="skdlib.train.loop"):
        summary = train(cfg, run, progress=False)
    assert summary["finished"] is True and summary["iterations"] == 2
    assert summary["config_hash"] == config_hash(cfg)
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in (
        "miou",
        "class_iou",
        "pixel_acc",
        "class_names",
        "wall_time_s",
        "params",
        "flops",
        "macs",
    ):
        assert key in on_disk, key
    assert on_disk["flops"] == 2 * on_disk["macs"] > 0
    assert len(on_disk["class_iou"]) == len(on_disk["class_names"]) == NUM_CLASSES
    assert 0.0 <= on_disk["pixel_acc"] <= 1.0
    # Config round trip, environment.
    assert config_hash(load_config(run / "config.yaml")) == config_hash(cfg)
    env = json.loads((run / "env.json").read_text())
    for key in ("python", "torch", "numpy", "device", "cpu", "threads", "git_commit"):
        assert key in env, key
    assert env["device"] == "cpu"
    # One record per iteration with every term, then the final validation.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "split" not in r]
    assert [r["iter"] for r in train_records] == [1, 2]
    for term in ("task", "pixel", "pair", "gen", "critic", "gp", "total", "lr", "time"):
        assert term in train_records[0], term
    assert train_records[0]["lr"] == cfg.train.lr
    assert train_records[1]["lr"] == pytest.approx(
        poly_lr(cfg.train.lr, 1, 2, cfg.train.poly_power)
    )
    val = [r for r in records if r.get("split") == "val"]
    assert len(val) == 1 and val[0]["miou"] == pytest.approx(summary["miou"])
    # Checkpoints load without pickle; final.pt is the student's state dict.
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["iteration"] == 2 and last["config_hash"] == config_hash(cfg)
    for key in ("student", "critic", "optimizer", "critic_optimizer"):
        assert last[key] is not None, key
    # Only what a resume reads: the schedule and the random streams follow from the iteration.
    assert set(last) == {
        "format",
        "iteration",
        "config_hash",
        "student",
        "critic",
        "adapter",
        "optimizer",
        "critic_optimizer",
        "grad_scaler",
        "elapsed_s",
        "nonfinite_streak",
    }
    student = build_model("pspnet_resnet18", NUM_CLASSES, width=0.5)
    student.load_state_dict(_final(run), strict=True)
    _assert_same_weights(_final(run), last["student"])
    # The log line carries every term.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iter 2/2")]
    assert lines and all(term in lines[0] for term in ("task", "pixel", "pair", "gen", "critic"))

    # A finished run is never overwritten without force, and cannot be resumed.
    with pytest.raises(RunFolderError, match=r"finished run.*--force"):
        train(cfg, run, progress=False)
    with pytest.raises(RunFolderError, match="finished"):
        train(cfg, run, resume=True, progress=False)
    # A partial run (no summary) needs --resume or --force.
    (run / "summary.json").unlink()
    with pytest.raises(RunFolderError, match=r"--resume.*--force"):
        train(cfg, run, progress=False)
    # Resuming with another config is refused.
    other = _smoke(assets, "train.max_iters=1", "train.checkpoint_every=1", "train.lr=0.02")
    with pytest.raises(ValueError, match="config differs"):
        train(other, run, resume=True, progress=False)
    # --force starts over.
    (run / "notes.txt").write_text("kept")
    again = train(other, run, force=True, progress=False)
    assert again["config_hash"] == config_hash(other)
    assert (run / "notes.txt").read_text() == "kept"


def test_missing_teacher_is_a_clear_error_before_training(assets, tmp_path):
    missing = tmp_path / "runs" / "teacher_quick" / "checkpoints" / "final.pt"
    cfg = load_config(CONFIGS / "smoke.yaml", _tiny(assets, f"model.teacher_checkpoint={missing}"))
    with pytest.raises(FileNotFoundError, match=r"teacher weights not found.*teacher_quick"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_small_crops_with_the_holistic_term_fail_early(assets, tmp_path):
    cfg = _smoke(assets, "data.crop_size=[64,128]")
    with pytest.raises(
        ValueError, match=r"data.crop_size.*discriminator.*disc_downsample=4.*>= 16"
    ):
        train(cfg, tmp_path / "run", progress=False)
    # One stride-2 convolution fewer is not enough for 56-pixel crops (7x7 logits) either.
    cfg = _smoke(assets, "data.crop_size=[56,128]", "distill.disc_downsample=3")
    with pytest.raises(ValueError, match=r"disc_downsample=3.*>= 8"):
        train(cfg, tmp_path / "run", progress=False)


def test_small_crops_train_with_a_critic_of_fewer_stride2_convolutions(assets, tmp_path):
    # 64x64 crops: 8x8 logits, which a critic with three stride-2 convolutions accepts.
    cfg = _smoke(assets, "data.crop_size=[64,64]", "distill.disc_downsample=3", "train.max_iters=2")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["finished"]
    critic = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["critic"]
    assert critic["conv4.parametrizations.weight.original"].shape[-2:] == (
        3,
        3,
    )  # the size-keeping one


# --------------------------------------------------------------------------------------------------
# Exact resume
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_gives_identical_weights(assets, tmp_path, monkeypatch):
    cfg = _smoke(assets, "train.max_iters=4", "train.checkpoint_every=2")
    train(cfg, tmp_path / "straight", progress=False)
    train_until_interrupted(cfg, tmp_path / "halves", monkeypatch, steps=2)
    assert (
        torch.load(tmp_path / "halves" / "checkpoints" / "last.pt", weights_only=True)["iteration"]
        == 2
    )
    summary = train(cfg, tmp_path / "halves", resume=True, progress=False)
    assert summary["finished"]
    _assert_same_weights(_final(tmp_path / "straight"), _final(tmp_path / "halves"))
    # metrics.jsonl holds each iteration once.
    iters = [
        json.loads(line)["iter"]
        for line in (tmp_path / "halves" / "metrics.jsonl").read_text().splitlines()
        if "split" not in json.loads(line)
    ]
    assert iters == [1, 2, 3, 4]


def _cli(run: Path, assets: dict[str, Path], *flags: str) -> subprocess.Popen:
    overrides = _tiny(
        assets,
        "model.teacher_options.width=0.5",
        f"model.teacher_checkpoint={assets['teacher']}",
        "train.max_iters=8",
        "train.checkpoint_every=1",
        "distill.holistic=false",
    )
    args = [
        sys.executable,
        "-m",
        "skdlib.train",
        "--config",
        str(CONFIGS / "smoke.yaml"),
        "--run-dir",
        str(run),
        "--no-progress",
        "--log-level",
        "WARNING",
    ]
    for item in overrides:
        args += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*args, *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(assets, tmp_path):
    straight = _cli(tmp_path / "straight", assets)
    killed_run = tmp_path / "killed"
    victim = _cli(killed_run, assets)
    last = killed_run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last.exists(), victim.communicate()[1].decode()[-2000:]
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_run / "summary.json").exists()
    done_at_kill = torch.load(last, weights_only=True)["iteration"]
    assert 1 <= done_at_kill < 8
    resumed = _cli(killed_run, assets, "--resume")
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["finished"] is True
    out, err = straight.communicate(timeout=180)
    assert straight.returncode == 0, err.decode()[-2000:]
    _assert_same_weights(_final(tmp_path / "straight"), _final(killed_run))


# --------------------------------------------------------------------------------------------------
# Non-finite losses
# --------------------------------------------------------------------------------------------------
def _nan_task_loss_from(monkeypatch, first_bad_call: int, last_bad_call: int = 10**9) -> None:
    real = step_module.segmentation_task_loss
    calls = {"n": 0}

    def maybe_nan(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        if first_bad_call <= calls["n"] <= last_bad_call:
            return value * float("nan")
        return value

    monkeypatch.setattr(step_module, "segmentation_task_loss", maybe_nan)


def test_consecutive_nonfinite_losses_stop_the_run_with_the_last_good_checkpoint(
    assets, tmp_path, monkeypatch
):
    cfg = _smoke(
        assets,
        "train.max_iters=6",
        "train.checkpoint_every=1",
        "train.max_nonfinite=2",
        "distill.holistic=false",
        "data.crop_size=[64,64]",
    )
    _nan_task_loss_from(monkeypatch, first_bad_call=3)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"iteration 4: 2 consecutive non-finite.*'task'"):
        train(cfg, run, progress=False)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in last["student"].values() if v.is_floating_point())
    assert not (run / "summary.json").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r.get("nonfinite")] == [3, 4]


def test_an_isolated_nonfinite_loss_is_skipped(assets, tmp_path, monkeypatch):
    cfg = _smoke(
        assets,
        "train.max_iters=3",
        "train.max_nonfinite=2",
        "distill.holistic=false",
        "data.crop_size=[64,64]",
    )
    _nan_task_loss_from(monkeypatch, first_bad_call=2, last_bad_call=2)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["finished"]
    assert all(
        torch.isfinite(v).all() for v in _final(tmp_path / "run").values() if v.is_floating_point()
    )
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    skipped = [r for r in records if r.get("skipped_student") == 1.0]
    assert [r["iter"] for r in skipped] == [2] and skipped[0]["nonfinite"] == ["task", "total"]


# --------------------------------------------------------------------------------------------------
# One run per preset family
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("preset", "extra"),
    [
        (
            "paper.yaml",
            [
                "model.student_options.width=0.5",
                "model.teacher=pspnet_resnet18",
                "model.teacher_options.width=0.5",
                "distill.disc_widths=[8,8,8,8]",
            ],
        ),
        (
            "official_code.yaml",
            [
                "model.student_options.width=0.5",
                "model.teacher=pspnet_resnet18",
                "model.teacher_options.width=0.5",
                "distill.disc_widths=[8,8,8,8]",
            ],
        ),
        # The quick presets name their own data options: the tiny set here has none.
        ("quick.yaml", ["data.options=null", "model.teacher_options.width=0.5"]),
        # The teachers start from their own pretraining (kept or trained first): not here.
        (
            "teacher_quick.yaml",
            [
                "data.options=null",
                "model.student_options.width=0.5",
                "model.student_pretrained=null",
            ],
        ),
        ("teacher_quick_3000.yaml", ["data.options=null", "model.student_pretrained=null"]),
        ("pretrain_teacher_quick.yaml", ["data.options=null"]),
        ("pretrain_quick.yaml", ["data.options=null"]),
        # The gpu presets on the CPU (train.device=cpu): AMP and channels-last then stay off.
        (
            "gpu.yaml",
            [
                "data.options=null",
                "model.teacher_options.width=0.5",
                "distill.disc_widths=[8,8,8,8]",
            ],
        ),
        (
            "teacher_gpu.yaml",
            [
                "data.options=null",
                "model.student_options.width=0.5",
                "model.student_pretrained=null",
            ],
        ),
        (
            "teacher_paper.yaml",
            ["model.student=pspnet_resnet18", "model.student_options.width=0.5"],
        ),
    ],
)
@pytest.mark.slow
def test_each_preset_family_runs(assets, tmp_path, preset, extra):
    teacher = (
        []
        if preset.startswith(("teacher", "pretrain"))
        else [f"model.teacher_checkpoint={assets['teacher']}"]
    )
    cfg = load_config(
        CONFIGS / preset,
        _tiny(assets, "train.max_iters=1", "train.checkpoint_every=0", *teacher, *extra),
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["finished"] and summary["iterations"] == 1
    assert math.isfinite(summary["pixel_acc"])
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    if preset.startswith(("teacher", "pretrain")):
        assert "pixel" not in record and "gen" not in record
    else:
        assert {"pixel", "pair", "gen", "critic"} <= record.keys()


@pytest.mark.slow
def test_train_limit_trains_on_the_first_samples_only(assets, tmp_path, monkeypatch):
    full = build_dataset_for(_smoke(assets), "train")
    assert len(full) == 6
    cfg = _smoke(assets, "data.train_limit=2", "train.max_iters=3")
    subset = build_dataset_for(cfg, "train")
    assert [s.name for s in subset.samples] == [s.name for s in full.samples[:2]]
    assert torch.equal(subset[1]["image"], full[1]["image"])
    assert len(build_dataset_for(cfg, "val")) == 2  # validation keeps its whole split
    # Every item the run reads (3 steps x 2 training images, then the 2 val images) has
    # index 0 or 1.
    seen: list[int] = []
    original = SegmentationDataset.__getitem__

    def spy(self, index):
        seen.append(index)
        return original(self, index)

    monkeypatch.setattr(SegmentationDataset, "__getitem__", spy)
    assert train(cfg, tmp_path / "run", progress=False)["finished"]
    assert len(seen) == 3 * 2 + 2 and set(seen) == {0, 1}
    with pytest.raises(
        DataError, match=r"data.train_limit=7, but the 'train' split .* has only 6 samples"
    ):
        build_dataset_for(_smoke(assets, "data.train_limit=7"), "train")
    with pytest.raises(ValueError, match="train_limit"):
        _smoke(assets, "data.train_limit=0")
