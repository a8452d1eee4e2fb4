"""The run folder: file names, atomic writes, ``env.json``, checkpoints and the state checks.

Layout of a run folder::

    config.yaml          the resolved configuration (skdlib.train.config.save_config)
    env.json             versions, device, threads, git commit
    metrics.jsonl        one JSON object per logged iteration / evaluation
    summary.json         final scores and costs; ``finished: true`` marks a complete run
    checkpoints/last.pt  everything needed to resume (written atomically)
    checkpoints/final.pt the trained network's state dict only (a teacher for the next run)
    notebook.ipynb       the executed training notebook, when a notebook ran the run

Every file that a crash could leave half-written is written to a temporary file in the same
folder, flushed, ``fsync``-ed and moved into place with ``os.replace`` (atomic on POSIX).
Checkpoints hold tensors, numbers, strings, lists and dicts only, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from skdlib.train.config import ExperimentConfig

__all__ = [
    "NOTEBOOK_NAME",
    "RunFolder",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cpu_name",
    "environment_info",
    "git_commit",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

_GIT_TIMEOUT_S = 5.0
#: The executed training notebook inside a run folder (the experiments' executors write it).
NOTEBOOK_NAME = "notebook.ipynb"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync,
    ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows opening a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON (NaN refused: use ``None``) atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` into ``path`` atomically (serialised in memory first)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file (named).
        skdlib.errors.CheckpointError: a torn file, or not a PyTorch checkpoint (named).
        ValueError: the file holds no dict.
    """
    from skdlib.models.pretrained import load_torch_file

    source = Path(path)
    state = load_torch_file(source, map_location=map_location)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {source} holds a {type(state).__name__}, expected a dict")
    return state


def git_commit(folder: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out in the git repository holding ``folder`` (default: this package), or
    ``None``."""
    where = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(device: torch.device, *, world_size: int = 1) -> dict[str, Any]:
    """What ``env.json`` records: versions, device, CPU/GPU name, visible GPUs, threads, git
    commit."""
    import numpy

    gpu = None
    if device.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "cuda": torch.version.cuda,
        # The GPUs this run was given (the pipeline's --gpus, SLURM); None: every GPU.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "git_commit": git_commit(),
        "argv": list(sys.argv),
    }


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder and the checks on what it already holds."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def final(self) -> Path:
        return self.checkpoints / "final.pt"

    @property
    def notebook(self) -> Path:
        return self.root / NOTEBOOK_NAME

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def _owned(self) -> list[Path]:
        return [
            self.config,
            self.env,
            self.metrics,
            self.summary,
            self.checkpoints,
            self.tensorboard,
        ]

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json`` as a dict; ``None`` when it is absent or unreadable (not JSON, not an
        object), which a warning names."""
        if not self.summary.is_file():
            return None
        try:
            summary = json.loads(self.summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("unreadable summary %s: counted as unfinished", self.summary)
            return None
        if not isinstance(summary, dict):
            logger.warning("summary %s is not a JSON object: counted as unfinished", self.summary)
            return None
        return summary

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` in file order (``[]`` without the file).

        A line that is not a JSON object (e.g. the torn last line of an interrupted run) is skipped
        with a warning; blank lines are skipped silently.
        """
        if not self.metrics.is_file():
            return []
        records = []
        lines = self.metrics.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                logger.warning("%s line %d is not a JSON object: skipped", self.metrics, number)
        return records

    def read_config(self) -> ExperimentConfig:
        """``config.yaml`` as an :class:`~skdlib.train.config.ExperimentConfig`.

        Raises:
            FileNotFoundError: the folder has no ``config.yaml`` (the message names the folder).
        """
        from skdlib.train.config import load_config

        if not self.config.is_file():
            raise FileNotFoundError(f"run folder {self.root}: no config.yaml")
        return load_config(self.config)

    def is_finished(self) -> bool:
        """True when ``summary.json`` exists and says ``finished: true``."""
        summary = self.read_summary()
        return bool(summary is not None and summary.get("finished", False))

    def has_partial_run(self) -> bool:
        """True when any file a run writes is present (finished or not)."""
        return any(path.exists() for path in self._owned())

    def clear(self) -> None:
        """Remove the files a run writes (other files in the folder, e.g. notebooks, stay)."""
        for path in self._owned():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed; a crash loses at most that line)."""
        with self.metrics.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, allow_nan=False) + "\n")
            stream.flush()

    def truncate_metrics(self, iteration: int) -> int:
        """Keep only records with ``iter <= iteration`` (and well-formed lines); returns the number
        dropped.

        A run killed after its last checkpoint logged iterations that the resumed run repeats.
        """
        if not self.metrics.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                dropped += 1
                continue
            if isinstance(record, dict) and int(record.get("iter", 0)) <= iteration:
                kept.append(line)
            else:
                dropped += 1
        atomic_write_text(self.metrics, "".join(f"{line}\n" for line in kept))
        return dropped
