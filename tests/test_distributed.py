"""DDP on CPU (gloo): a 2-process run with batch 2 per process matches a 1-process run with batch 4.

Same global batch: the sample order and each image's augmentation depend on the global sample
position only, the student's BatchNorm is synchronised (CpuSyncBatchNorm), gradients are
averaged by DDP. Dropout is switched off in both runs (its masks come from per-process random
streams) and so is the holistic term (the gradient penalty's interpolation weights are drawn per
process). One iteration (with the final sharded evaluation): observed max |difference| of the
weights 1.6e-6 (float32 reductions in another order); the test allows 1e-5. Over more iterations
this toy run (random teacher, batch 4) amplifies float32 rounding: after 3 iterations the
2-process and 1-process runs differ by ~1e-3, as much as two 1-process runs with 1 and 2 threads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from ddp import become_worker, build_without_dropout, free_port
from torch import nn

import skdlib.models
from skdlib.data.generate import ensure_embedded
from skdlib.models import build_model
from skdlib.train.config import load_config
from skdlib.train.distributed import CpuSyncBatchNorm, convert_sync_batchnorm
from skdlib.train.loop import train

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


def _config(data: Path, batch_size: int):
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
        ],
    )


def _worker(rank: int, world_size: int, port: int, data: str, run: str) -> None:
    become_worker(rank, world_size, port)
    train(_config(Path(data), batch_size=2), run, progress=False)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, monkeypatch):
    data = ensure_embedded(tmp_path / "data", height=64, width=64, num_train=6, num_val=2)
    mp.spawn(_worker, args=(2, free_port(), str(data), str(tmp_path / "ddp")), nprocs=2, join=True)

    monkeypatch.setattr(skdlib.models, "build_model", build_without_dropout)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(_config(data, batch_size=4), tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(threads)

    ddp_summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp_summary["world_size"] == 2 and single["world_size"] == 1
    assert (
        ddp_summary["num_val_images"] == single["num_val_images"] == 2
    )  # confusion matrices summed
    a = torch.load(tmp_path / "ddp" / "checkpoints" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "single" / "checkpoints" / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    worst = max(
        float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()
    )
    start = _initial()
    moved = max(
        float((b[k].double() - start[k].double()).abs().max())
        for k in b
        if b[k].is_floating_point()
    )
    assert worst < TOLERANCE < moved, (worst, moved)
    assert ddp_summary["pixel_acc"] == pytest.approx(single["pixel_acc"], abs=1e-3)
    # Only rank 0 wrote: one metrics record per iteration.
    records = [
        json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["iter"] for r in records if "split" not in r] == [1]


def _initial() -> dict[str, torch.Tensor]:
    """The student's initial weights (the loop seeds them from train.seed alone)."""
    from skdlib.train.sampling import derive_seed

    torch.manual_seed(derive_seed(0, "init"))
    build_model("pspnet_resnet18", 8, width=0.5)  # the teacher is built first
    return build_model("pspnet_resnet18", 8, width=0.5).state_dict()


def test_cpu_sync_batchnorm_is_plain_batchnorm_without_a_process_group():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    converted = convert_sync_batchnorm(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), torch.device("cpu")
    )
    converted.load_state_dict(plain.state_dict())
    assert isinstance(converted[1], CpuSyncBatchNorm)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(converted(x), plain(x))
    torch.testing.assert_close(converted[1].running_var, plain[1].running_var)


@pytest.mark.slow
def test_a_two_process_run_of_the_pipeline_equals_torchrun_by_hand(tmp_path):
    """--nproc-per-run 2: the pipeline runs the training notebook, whose cell starts the run's 2
    processes with torch's elastic launcher (gloo here); the same config trained by hand with
    `torchrun --nproc-per-node 2 -m skdlib.train` gives the same weights, bit for bit."""
    import os
    import subprocess
    import sys

    import skdlib.experiments as ex

    result = ex.run_pipeline(
        "smoke",
        plan_path=REPO / "configs" / "experiments.yaml",
        project_root=REPO,
        runs_root=tmp_path / "runs",
        notebook=REPO / "book" / "training.md",
        only=["pi_pa_ho"],
        sets=[f"data.root={tmp_path / 'data'}"],
        jobs=1,
        threads=1,
        teacher_threads=1,
        nproc_per_run=2,
    )
    assert result["failed"] == []
    run = tmp_path / "runs" / "smoke" / "pi_pa_ho" / "seed0"
    assert "NPROC = 2" in (run / "notebook.ipynb").read_text()  # the notebook launched it
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "skdlib.train", "--config", str(run / "config.yaml")]
    command += ["--run-dir", str(tmp_path / "by_hand"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads((run / "summary.json").read_text())
    theirs = json.loads((tmp_path / "by_hand" / "summary.json").read_text())
    assert ours["world_size"] == theirs["world_size"] == 2
    assert ours["config_hash"] == theirs["config_hash"]
    assert ours["miou"] == theirs["miou"] and ours["class_iou"] == theirs["class_iou"]
    for name in ("final.pt", "last.pt"):
        a = torch.load(run / "checkpoints" / name, weights_only=True)
        b = torch.load(tmp_path / "by_hand" / "checkpoints" / name, weights_only=True)
        if name == "last.pt":  # the student, the critic and both optimisers' states
            a = {k: a[k] for k in ("student", "critic", "optimizer", "critic_optimizer")}
            b = {k: b[k] for k in a}
        flat_a, flat_b = _tensors(a), _tensors(b)
        assert flat_a.keys() == flat_b.keys() and flat_a
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), name


def _tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list, by its path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    found: dict[str, torch.Tensor] = {}
    if isinstance(tree, (dict, list, tuple)):
        for key, value in tree.items() if isinstance(tree, dict) else enumerate(tree):
            found |= _tensors(value, f"{prefix}/{key}")
    return found
