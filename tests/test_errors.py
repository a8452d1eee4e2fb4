"""Errors for people: torn or foreign checkpoints are named, the command lines print one line and
exit 2 on bad input (1 on a failure), with the traceback only under --debug."""

from __future__ import annotations

import io
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import skdlib.experiments as ex
from skdlib.errors import CheckpointError, one_line, run_cli
from skdlib.models.pretrained import load_torch_file, read_state_dict
from skdlib.train.__main__ import main as train_main
from skdlib.train.runfolder import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _saved() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.arange(4000.0), "bias": torch.ones(3)}, buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_torn_checkpoints_are_named_whatever_torch_says(tmp_path: Path) -> None:
    data = _saved()
    seen = set()
    # torch.load fails on a cut file with a RuntimeError (no central directory), an
    # OSError "[Errno 22] Invalid argument" or an EOFError, none naming the file.
    for cut in [0, 10, 100, *range(200, len(data), max(1, len(data) // 97))]:
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint") as err:
            load_torch_file(path)
        assert str(path) in str(err.value) and f"({cut} bytes" in str(err.value)
        seen.add(type(err.value.__cause__).__name__)
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match=str(path)):
            read_state_dict(path)
    assert {"RuntimeError", "OSError"} <= seen, seen
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=f"{text} is truncated or not a PyTorch"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps([1, 2]))  # a pickle, not a torch file
    with pytest.raises(CheckpointError, match=f"{foreign} is truncated or not a PyTorch"):
        load_torch_file(foreign)
    objects = tmp_path / "objects.pt"
    torch.save({"weight": torch.ones(1), "path": Path("x")}, objects)  # needs a class: refused
    with pytest.raises(CheckpointError, match=f"refusing to load {objects}: .*arbitrary objects"):
        load_torch_file(objects)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_torch_file(tmp_path / "missing.pt")
    (tmp_path / "whole.pt").write_bytes(data)
    assert torch.equal(load_checkpoint(tmp_path / "whole.pt")["bias"], torch.ones(3))


def test_one_line_and_exit_codes(caplog) -> None:
    logger = logging.getLogger("test-cli")
    message = ValueError("train.lr: must be > 0\n  got -1")
    assert one_line(message) == "train.lr: must be > 0; got -1"
    assert one_line(KeyError("model.x")) == "KeyError: model.x"
    assert one_line(RuntimeError("boom")) == "RuntimeError: boom"

    def bad() -> int:
        raise FileNotFoundError("config file not found: x.yaml")

    def broken() -> int:
        raise RuntimeError("iteration 3: 5 consecutive non-finite losses")

    with caplog.at_level(logging.ERROR, logger="test-cli"):
        assert run_cli(bad, debug=False, logger=logger) == 2
        assert run_cli(broken, debug=False, logger=logger) == 1
        assert run_cli(lambda: 0, debug=False, logger=logger) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "config file not found: x.yaml",
        "RuntimeError: iteration 3: 5 consecutive non-finite losses (--debug shows the traceback)",
    ]
    with pytest.raises(FileNotFoundError):
        run_cli(bad, debug=True, logger=logger)


def test_train_cli_names_the_bad_key_and_the_torn_teacher(tmp_path: Path, caplog) -> None:
    torn = tmp_path / "teacher.pt"
    torn.write_bytes(_saved()[:3000])
    base = ["--config", str(REPO / "configs" / "smoke.yaml"), "--run-dir", str(tmp_path / "run")]
    with caplog.at_level(logging.ERROR):
        assert train_main([*base, "--set", "train.max_iter=3"]) == 2
        assert train_main([*base, "--set", "train.lr=-1"]) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "unknown key 'train.max_iter'" in messages[0] and "train.lr" in messages[1]
    assert all("\n" not in m for m in messages)
    with pytest.raises(ValueError, match=r"train\.max_iter"):
        train_main([*base, "--set", "train.max_iter=3", "--debug"])
    assert not (tmp_path / "run").exists()


def test_experiments_cli_bad_values_exit_2(tmp_path: Path) -> None:
    args = ["run", "--profile", "smoke", "--root", str(REPO), "--runs-root", str(tmp_path)]
    args += ["--executor", "inprocess"]
    assert ex.main([*args, "--nproc-per-run", "0"]) == 2
    assert ex.main([*args, "--gpus", "0,1", "--jobs", "2"]) == 2
    assert ex.main([*args, "--executor", "slurm", "--gpus", "0"]) == 2
    assert ex.main([*args, "--executor", "slurm", "--time-min", "0"]) == 2
    with pytest.raises(ex.PlanError, match=r"--nproc-per-run: must be >= 1"):
        ex.main([*args, "--nproc-per-run", "0", "--debug"])
    assert not (tmp_path / "smoke").exists()


@pytest.mark.slow
def test_train_cli_torn_teacher_is_one_line_without_traceback(tmp_path: Path) -> None:
    """The issue's case: a truncated teacher checkpoint, through the real command line."""
    from skdlib.data.generate import ensure_embedded

    data = ensure_embedded(tmp_path / "data", height=64, width=64, num_train=2, num_val=1)
    torn = tmp_path / "final.pt"
    torn.write_bytes(_saved()[:3000])
    command = [sys.executable, "-m", "skdlib.train", "--config", "configs/smoke.yaml"]
    command += ["--run-dir", str(tmp_path / "run"), "--set", f"data.root={data}"]
    command += ["--set", "data.crop_size=[64,64]", "--set", f"model.teacher_checkpoint={torn}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{torn} is truncated or not a PyTorch checkpoint" in errors[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
