"""Stopping a training run after a number of iterations, as a crash would (shared by the resume
tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import skdlib.train.step as step_module
from skdlib.train.loop import train


class Interrupt(Exception):
    """Raised in place of a training step to stop a run."""


def train_until_interrupted(
    cfg: Any, run_dir: Path, monkeypatch: pytest.MonkeyPatch, *, steps: int
) -> None:
    """Train ``cfg`` into ``run_dir``, stopping it with :class:`Interrupt` when step ``steps + 1``
    starts (after ``steps`` steps); the real step function is put back afterwards."""
    real_step = step_module.distill_step
    calls = {"n": 0}

    def stop_after(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == steps + 1:
            raise Interrupt
        return real_step(**kwargs)

    monkeypatch.setattr(step_module, "distill_step", stop_after)
    with pytest.raises(Interrupt):
        train(cfg, run_dir, progress=False)
    monkeypatch.setattr(step_module, "distill_step", real_step)
