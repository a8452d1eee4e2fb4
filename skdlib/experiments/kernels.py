"""Warm kernels: the training notebook executed for one run after another in a kernel kept alive.

A papermill execution starts a fresh Jupyter kernel per run and pays its start and the imports of
torch and the library each time (5-8 s on the project's 2-core machine, most of a short run). A
:class:`WarmKernel` starts one kernel and executes the notebook in it run after run: the
parameters are injected exactly as papermill injects them (a cell tagged ``injected-parameters``
after the ``parameters`` cell), the cells run in order, and the executed copy is kept as
``<run_dir>/notebook.ipynb``, as with papermill. Only the interpreter's imports carry over: the
notebook defines every variable it reads, and a run's numbers are a function of its configuration
alone (every random stream is re-seeded by the training loop), which the tests check against runs
in fresh processes.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["WarmKernel", "notebook_parameters"]

logger = logging.getLogger(__name__)

_KERNEL = "python3"


def notebook_parameters(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The training notebook's parameters (primitives only) for one run's payload."""
    return {
        "MODE": "train",
        "CONFIG": str(payload["config"]),
        "RUN_DIR": str(payload["run_dir"]),
        "OVERRIDES": json.dumps(list(payload["overrides"])),
        "RESUME": bool(payload["resume"]),
        "FORCE": bool(payload["force"]),
        "PROGRESS": bool(payload.get("progress", False)),
        "THREADS": int(payload.get("threads", 1)),
        "NPROC": int(payload.get("nproc", 1)),
        "TEACHER_STORE": str(payload.get("teacher_store") or ""),
    }


def _cell_error(exc: BaseException) -> str:
    """``"Name: value"`` of the error raised in a cell (nbclient's CellExecutionError)."""
    name, value = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if name:
        return f"{name}: {value}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class WarmKernel:
    """One Jupyter kernel that executes ``notebook`` (an ``.ipynb`` with a ``parameters`` cell)
    for one run after another, in ``cwd``. Use as a context manager (the kernel is shut down on
    exit); not for concurrent use (one run at a time per kernel)."""

    def __init__(self, notebook: str | Path, *, cwd: str | Path) -> None:
        from jupyter_client import KernelManager

        self.notebook, self.cwd = Path(notebook), str(cwd)
        if not self.notebook.is_file():
            raise FileNotFoundError(f"training notebook not found: {self.notebook}")
        self._km = KernelManager(kernel_name=_KERNEL)
        self._runs = 0

    def __enter__(self) -> WarmKernel:
        self._km.start_kernel(cwd=self.cwd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._km.has_kernel:
            self._km.shutdown_kernel(now=True)

    def _restart_if_dead(self) -> None:
        if not self._km.is_alive():
            logger.warning("the warm kernel died after %d run(s): starting a new one", self._runs)
            self._km.restart_kernel(now=True)

    def run(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Execute the notebook for one run; never raises. Returns ``{"status": "finished" |
        "failed", "error": str | None, "elapsed_s": float}``; the executed copy goes to
        ``<run_dir>/notebook.ipynb`` (also when the run fails)."""
        import nbformat
        from nbclient import NotebookClient
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook

        from skdlib.train.runfolder import NOTEBOOK_NAME, RunFolder

        start = time.perf_counter()
        run_dir = Path(payload["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        self._restart_if_dead()
        nb = parameterize_notebook(
            load_notebook_node(str(self.notebook)),
            notebook_parameters(payload),
            kernel_name=_KERNEL,
            language="python",
        )
        error: str | None = None
        client = NotebookClient(
            nb,
            km=self._km,
            timeout=None,
            kernel_name=_KERNEL,
            resources={"metadata": {"path": self.cwd}},
        )
        try:
            client.execute()
        except Exception as exc:  # the run failed: recorded, the pipeline goes on
            error = _cell_error(exc)
        finally:
            if client.kc is not None:  # the client of this run (the kernel stays)
                client.kc.stop_channels()
        self._runs += 1
        with tempfile.TemporaryDirectory(prefix=".notebook-", dir=run_dir) as tmp:
            executed = Path(tmp) / NOTEBOOK_NAME
            nbformat.write(nb, executed)
            shutil.move(str(executed), run_dir / NOTEBOOK_NAME)
        if error is None and not RunFolder(run_dir).is_finished():
            error = "the notebook ended but summary.json does not say finished"
        return {
            "status": "failed" if error else "finished",
            "error": error,
            "elapsed_s": time.perf_counter() - start,
        }
