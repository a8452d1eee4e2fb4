"""Warm kernels: the training notebook run after run in one kernel gives the numbers of runs in
fresh processes, keeps each run's executed notebook, and records failures without stopping."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import pytest
import torch

from skdlib.data.generate import ensure_embedded
from skdlib.experiments.executors import execute_inprocess_run
from skdlib.experiments.kernels import WarmKernel

REPO = Path(__file__).resolve().parents[1]


def _payload(run_dir: Path, data: Path, *extra: str) -> dict:
    overrides = [
        f"data.root={data}",
        "data.num_workers=0",
        "model.teacher_checkpoint=null",
        "train.max_iters=2",
        "train.log_every=1",
        *extra,
    ]
    return {
        "run_dir": str(run_dir),
        "config": str(REPO / "configs" / "smoke.yaml"),
        "overrides": overrides,
        "resume": False,
        "force": False,
        "threads": 1,
    }


@pytest.mark.slow
def test_runs_in_a_warm_kernel_equal_runs_in_fresh_processes(tmp_path) -> None:
    data = ensure_embedded(tmp_path / "data", height=128, width=128, num_train=4, num_val=2)
    notebook = tmp_path / "training.ipynb"
    jupytext.write(jupytext.read(REPO / "book" / "training.md"), notebook)
    runs = {
        "baseline": ("distill.pixelwise=false", "distill.pairwise=false", "distill.holistic=false"),
        "full": (),  # every paper term, the critic included
        "broken": ("train.max_iters=0",),
    }
    with WarmKernel(notebook, cwd=REPO) as kernel:
        results = {name: kernel.run(_payload(tmp_path / "warm" / name, data, *extra))
                   for name, extra in runs.items()}  # fmt: skip
    assert results["baseline"]["status"] == results["full"]["status"] == "finished"
    assert results["broken"]["status"] == "failed" and "max_iters" in results["broken"]["error"]
    for name in ("baseline", "full"):
        fresh = execute_inprocess_run(_payload(tmp_path / "fresh" / name, data, *runs[name]))
        assert fresh["status"] == "finished"
        warm_dir, fresh_dir = tmp_path / "warm" / name, tmp_path / "fresh" / name
        a, b = (json.loads((d / "summary.json").read_text()) for d in (warm_dir, fresh_dir))
        assert (a["miou"], a["class_iou"], a["pixel_acc"]) == (
            b["miou"],
            b["class_iou"],
            b["pixel_acc"],
        )
        wa, wb = (torch.load(d / "checkpoints" / "final.pt") for d in (warm_dir, fresh_dir))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
        cells = json.loads((warm_dir / "notebook.ipynb").read_text())["cells"]
        injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1 and str(warm_dir) in "".join(injected[0]["source"])
    assert (tmp_path / "warm" / "broken" / "notebook.ipynb").is_file()  # the failure's record


def test_a_missing_notebook_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="training notebook not found"):
        WarmKernel(tmp_path / "missing.ipynb", cwd=tmp_path)
