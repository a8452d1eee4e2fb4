"""Executors: how the pipeline runs each run.

* :class:`LocalExecutor` with a notebook (``--executor local``, what ``make book`` uses): each run
  is a papermill execution of the training notebook, whose executed copy is kept as
  ``<run_dir>/notebook.ipynb``: every number traces to a notebook, a config and a commit.
* :class:`LocalExecutor` without a notebook (``--executor inprocess``): each run calls
  :func:`skdlib.train.loop.train` directly (no kernel start): demo and test trees.

Both run ``jobs`` runs at a time, each in its own process (``jobs=1``: one after the other; an
in-process run then trains in the calling process). A run never raises into the pipeline: it
returns ``{"status": "finished" | "failed", "error": str | None, "elapsed_s": float}``.

What a run gets is a plain dict (its *payload*, picklable): ``run_dir``, ``config`` (preset
path), ``overrides`` (list), ``resume``, ``force``, ``threads`` (torch threads), ``progress``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from skdlib.train.runfolder import RunFolder

__all__ = [
    "NOTEBOOK_NAME",
    "LocalExecutor",
    "execute_inprocess_run",
    "execute_notebook_run",
    "short_error",
]

logger = logging.getLogger(__name__)

#: The executed training notebook inside a run folder.
NOTEBOOK_NAME = "notebook.ipynb"

Payload = Mapping[str, Any]
Result = dict[str, Any]


def short_error(exc: BaseException) -> str:
    """The exception's last meaningful line (papermill's errors carry the cell's traceback)."""
    name = getattr(exc, "ename", None)
    value = getattr(exc, "evalue", None)
    if name:
        return f"{name}: {value}"
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _result(run_dir: Path, error: str | None, start: float) -> Result:
    if error is None and not RunFolder(run_dir).is_finished():
        error = "the run ended but summary.json does not say finished"
    return {
        "status": "failed" if error else "finished",
        "error": error,
        "elapsed_s": time.perf_counter() - start,
    }


def execute_notebook_run(notebook: str, payload: Payload, cwd: str) -> Result:
    """Execute ``notebook`` (an ``.ipynb``) with papermill for one run, in ``cwd``; never raises.

    The executed copy goes to ``<run_dir>/notebook.ipynb`` (also when the run fails). A picklable
    top-level function: the executor calls it in worker processes.
    """
    import papermill

    start = time.perf_counter()
    run_dir = Path(payload["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = {
        "MODE": "train",
        "CONFIG": str(payload["config"]),
        "RUN_DIR": str(run_dir),
        "OVERRIDES": json.dumps(list(payload["overrides"])),
        "RESUME": bool(payload["resume"]),
        "FORCE": bool(payload["force"]),
        "PROGRESS": bool(payload.get("progress", False)),
        "THREADS": int(payload.get("threads", 1)),
    }
    error: str | None = None
    with tempfile.TemporaryDirectory(prefix=".notebook-", dir=run_dir) as tmp:
        executed = Path(tmp) / NOTEBOOK_NAME
        try:
            papermill.execute_notebook(
                notebook,
                str(executed),
                parameters=parameters,
                kernel_name="python3",
                cwd=cwd,
                log_output=False,
                progress_bar=False,
            )
        except Exception as exc:  # the run failed: recorded, the pipeline goes on
            error = short_error(exc)
        if executed.is_file():
            shutil.move(str(executed), run_dir / NOTEBOOK_NAME)
    return _result(run_dir, error, start)


def execute_inprocess_run(payload: Payload) -> Result:
    """Train one run in this process with ``payload["threads"]`` torch threads (restored
    afterwards); never raises (the traceback goes to the log)."""
    import torch

    from skdlib.train.config import load_config
    from skdlib.train.loop import train

    start = time.perf_counter()
    run_dir = Path(payload["run_dir"])
    previous = torch.get_num_threads()
    torch.set_num_threads(int(payload.get("threads", 1)))
    error: str | None = None
    try:
        cfg = load_config(payload["config"], list(payload["overrides"]))
        train(
            cfg,
            run_dir,
            resume=bool(payload["resume"]),
            force=bool(payload["force"]),
            progress=bool(payload.get("progress", False)),
        )
    except Exception as exc:  # the run failed: recorded, the pipeline goes on
        logger.error("run %s failed:\n%s", run_dir, traceback.format_exc())
        error = short_error(exc)
    finally:
        torch.set_num_threads(previous)
    return _result(run_dir, error, start)


def _notebook_ipynb(source: Path, folder: Path) -> Path:
    """Convert the MyST notebook to an ``.ipynb`` in ``folder`` (jupytext) and return its path."""
    import jupytext

    if not source.is_file():
        raise FileNotFoundError(f"training notebook not found: {source}")
    target = folder / f"{source.stem}.ipynb"
    jupytext.write(jupytext.read(source), target)
    return target


class LocalExecutor:
    """Runs on this machine, ``jobs`` at a time: papermill executions of ``notebook`` (a MyST
    ``.md`` or an ``.ipynb``) when one is given, else in-process training.

    Use as a context manager (the notebook is converted once into a temporary folder).
    """

    def __init__(self, *, notebook: str | Path | None, cwd: str | Path, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.notebook = Path(notebook) if notebook is not None else None
        self.cwd, self.jobs = str(cwd), jobs
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ipynb: str | None = None

    def __enter__(self) -> LocalExecutor:
        if self.notebook is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="skd-experiments-")
            self._ipynb = str(_notebook_ipynb(self.notebook, Path(self._tmp.name)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def run_one(self, payload: Payload) -> Result:
        """One run in the calling process (a papermill kernel, or this interpreter)."""
        if self._ipynb is None:
            return execute_inprocess_run(payload)
        return execute_notebook_run(self._ipynb, payload, self.cwd)

    def run_many(
        self,
        payloads: Sequence[tuple[str, Payload]],
        *,
        started: Callable[[str], None],
        finished: Callable[[str, Result], None],
    ) -> None:
        """Every ``(key, payload)``, ``jobs`` at a time; ``started(key)`` when a run starts and
        ``finished(key, result)`` when it ends (in the calling process, in order of ending)."""
        if self.jobs == 1:
            for key, payload in payloads:
                started(key)
                finished(key, self.run_one(payload))
            return
        context = multiprocessing.get_context("spawn")
        queue = list(payloads)
        running: dict[concurrent.futures.Future[Result], str] = {}
        with concurrent.futures.ProcessPoolExecutor(self.jobs, mp_context=context) as pool:
            while queue or running:
                # Submit only as many as run at once, so that "start" lines tell the truth.
                while queue and len(running) < self.jobs:
                    key, payload = queue.pop(0)
                    started(key)
                    running[self._submit(pool, payload)] = key
                ended, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in ended:
                    key = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # a worker process died
                        result = {"status": "failed", "error": short_error(exc), "elapsed_s": 0.0}
                    finished(key, result)

    def _submit(
        self, pool: concurrent.futures.Executor, payload: Payload
    ) -> concurrent.futures.Future[Result]:
        if self._ipynb is None:
            return pool.submit(execute_inprocess_run, dict(payload))
        return pool.submit(execute_notebook_run, self._ipynb, dict(payload), self.cwd)
