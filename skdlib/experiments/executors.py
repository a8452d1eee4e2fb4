"""Executors: how the pipeline runs each run.

* :class:`LocalExecutor` with a notebook (``--executor local``, what ``make book`` uses): each run
  is a papermill execution of the training notebook, whose executed copy is kept as
  ``<run_dir>/notebook.ipynb``: every number traces to a notebook, a config and a commit.
* :class:`LocalExecutor` without a notebook (``--executor inprocess``): each run calls
  :func:`skdlib.train.launch.launch_train` directly (no kernel start): demo and test trees.
* :class:`skdlib.experiments.slurm.SlurmExecutor` (``--executor slurm``): each run a SLURM job
  (submitit) running one of the two functions below.

The local ones run ``jobs`` runs at a time, each in its own process (``jobs=1``: one after the
other; an in-process run then trains in the calling process); with ``gpus``, one run per group of
``nproc`` free GPUs, each in a fresh process that sees only its GPUs (``CUDA_VISIBLE_DEVICES``).
A run never raises into the pipeline: it returns ``{"status": "finished" | "failed" | "busy",
"error": str | None, "elapsed_s": float}`` (``busy``: another process holds the run's lock, see
:func:`claimed`; ``reused``: set when the run turned out to be finished already).

What a run gets is a plain dict (its *payload*, picklable): ``run_dir``, ``config`` (preset
path), ``overrides`` (list), ``resume``, ``force`` (the pipeline's plan), ``forced``
(``--force``), ``config_hash`` (the run's identity, which a finished run's summary must hold:
its config hash with paths relative to ``roots``, :func:`skdlib.experiments.runs.hash_roots`),
``roots``, ``threads``
(torch threads per process), ``nproc`` (processes), ``devices`` (``CUDA_VISIBLE_DEVICES`` or
None), ``progress``, ``teacher_store`` (the folder of teacher-output stores a student reads, or
None).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from skdlib.experiments.kernels import WarmKernel, notebook_parameters
from skdlib.experiments.locks import holder_of, run_lock
from skdlib.experiments.runs import folder_action, mark_portable
from skdlib.filelock import FileLock
from skdlib.train.runfolder import NOTEBOOK_NAME, RunFolder

__all__ = [
    "BUSY",
    "LocalExecutor",
    "claimed",
    "execute_inprocess_run",
    "execute_notebook_run",
    "gpu_groups",
    "short_error",
]

logger = logging.getLogger(__name__)


#: The status of a run whose lock another live process holds (the pipeline comes back to it).
BUSY = "busy"
#: Seconds a run's executor tries for the run's lock before it reports the run busy (the
#: pipeline's own look at the lock, a moment before, holds it briefly).
_CLAIM_WAIT_S = 2.0

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


def claimed(payload: Payload, run: Callable[[Payload], Result]) -> Result:
    """``run(payload)`` with the run's lock held (:mod:`skdlib.experiments.locks`), the action
    decided again under it; ``{"status": "busy", "holder": ...}`` when another live process holds
    the lock.

    Under the lock the folder says what to do (:func:`skdlib.experiments.runs.folder_action`):
    a run another process finished meanwhile is reused (``"reused"`` set, nothing trains), one
    that a dead process left half-done is resumed. ``payload["resume"]`` and ``["force"]`` are
    replaced by that decision. The lock is held while the run trains, by the process that trains
    it (a worker, the pipeline itself, a SLURM job), so it ends with that process.
    """
    run_dir = Path(payload["run_dir"])
    lock = FileLock(run_lock(run_dir))
    if not lock.acquire(timeout=_CLAIM_WAIT_S):
        holder = holder_of(run_lock(run_dir)) or "another process"
        return {"status": BUSY, "error": None, "elapsed_s": 0.0, "holder": holder}
    try:
        if payload.get("config_hash") is None:
            return run(payload)
        forced = bool(payload.get("forced", False))
        roots = payload["roots"]
        action, why = folder_action(run_dir, payload["config_hash"], force=forced, roots=roots)
        if action == "reuse":
            return {"status": "finished", "error": None, "elapsed_s": 0.0, "reused": why}
        result = run({**payload, "resume": action == "resume", "force": action == "retrain"})
        if result["status"] == "finished":
            mark_portable(run_dir, payload["config_hash"])
        return result
    finally:
        lock.release()


def _show_devices(payload: Payload) -> None:
    """Make only the run's GPUs visible (a fresh worker process, before CUDA starts)."""
    if payload.get("devices") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(payload["devices"])


def execute_notebook_run(notebook: str, payload: Payload, cwd: str) -> Result:
    """Execute ``notebook`` with papermill for one run, in ``cwd``, holding the run's lock
    (:func:`claimed`); never raises.

    ``notebook``: an ``.ipynb``, or a MyST ``.md`` (converted first, in the run folder). The
    executed copy goes to ``<run_dir>/notebook.ipynb`` (also when the run fails). A picklable
    top-level function: the executor calls it in worker processes and SLURM jobs.
    """
    _show_devices(payload)
    return claimed(payload, lambda decided: _notebook_run(notebook, decided, cwd))


def _notebook_run(notebook: str, payload: Payload, cwd: str) -> Result:
    import papermill

    start = time.perf_counter()
    run_dir = Path(payload["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = notebook_parameters(payload)
    error: str | None = None
    with tempfile.TemporaryDirectory(prefix=".notebook-", dir=run_dir) as tmp:
        executed = Path(tmp) / NOTEBOOK_NAME
        source = Path(notebook)
        try:
            if source.suffix != ".ipynb":
                source = _notebook_ipynb(source, Path(tmp) / "source")
            papermill.execute_notebook(
                str(source),
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
    """Train one run, holding its lock (:func:`claimed`): in this process with
    ``payload["threads"]`` torch threads (restored afterwards), or in ``payload["nproc"]``
    processes of the elastic launcher; never raises (the traceback goes to the log)."""
    _show_devices(payload)
    return claimed(payload, _inprocess_run)


def _inprocess_run(payload: Payload) -> Result:
    from skdlib.train.config import load_config
    from skdlib.train.launch import launch_train

    start = time.perf_counter()
    run_dir = Path(payload["run_dir"])
    error: str | None = None
    try:
        cfg = load_config(payload["config"], list(payload["overrides"]))
        launch_train(
            cfg,
            run_dir,
            nproc=int(payload.get("nproc", 1)),
            resume=bool(payload["resume"]),
            force=bool(payload["force"]),
            progress=bool(payload.get("progress", False)),
            threads=int(payload.get("threads", 1)),  # set for the run, restored after it
            teacher_store=payload.get("teacher_store"),
        )
    except Exception as exc:  # the run failed: recorded, the pipeline goes on
        logger.error("run %s failed:\n%s", run_dir, traceback.format_exc())
        error = short_error(exc)
    return _result(run_dir, error, start)


def _notebook_ipynb(source: Path, folder: Path) -> Path:
    """Convert the MyST notebook to an ``.ipynb`` in ``folder`` (jupytext) and return its path."""
    import jupytext

    if not source.is_file():
        raise FileNotFoundError(f"training notebook not found: {source}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{source.stem}.ipynb"
    jupytext.write(jupytext.read(source), target)
    return target


def gpu_groups(gpus: Sequence[str], nproc: int) -> list[str]:
    """``gpus`` cut into groups of ``nproc`` (``CUDA_VISIBLE_DEVICES`` values), in order; GPUs
    left over (fewer than ``nproc``) are not used."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [",".join(gpus[i : i + nproc]) for i in range(0, len(gpus) - nproc + 1, nproc)]


class LocalExecutor:
    """Runs on this machine, ``jobs`` at a time: executions of ``notebook`` (a MyST ``.md`` or
    an ``.ipynb``) when one is given, else in-process training.

    The notebook runs in ``jobs`` warm kernels (:class:`skdlib.experiments.kernels.WarmKernel`:
    one kept kernel per job, a run after another in it, threads of this process waiting on them)
    unless ``warm`` is off or GPUs are given; then each run is a papermill execution in a fresh
    kernel.

    With ``gpus`` (ids as ``CUDA_VISIBLE_DEVICES`` names them) the runs take groups of ``nproc``
    GPUs (:func:`gpu_groups`): as many runs at a time as there are groups, each in a fresh
    process that sees its group only; a run starts when a group is free.

    Use as a context manager (the notebook is converted once into a temporary folder).
    """

    def __init__(
        self,
        *,
        notebook: str | Path | None,
        cwd: str | Path,
        jobs: int = 1,
        gpus: Sequence[str] | None = None,
        nproc: int = 1,
        warm: bool = True,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.notebook = Path(notebook) if notebook is not None else None
        self.cwd, self.jobs = str(cwd), jobs
        self.groups = gpu_groups(list(gpus), nproc) if gpus is not None else None
        if self.groups is not None:
            if not self.groups:
                raise ValueError(f"gpus: {list(gpus or [])} hold no group of {nproc} GPU(s)")
            self.jobs = len(self.groups)
        self.warm = warm and self.notebook is not None and self.groups is None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ipynb: str | None = None
        self._kernels: list[WarmKernel] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> LocalExecutor:
        if self.notebook is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="skd-experiments-")
            self._ipynb = str(_notebook_ipynb(self.notebook, Path(self._tmp.name)))
        if self.warm:
            self._kernels = [
                self._stack.enter_context(WarmKernel(self._ipynb, cwd=self.cwd))
                for _ in range(self.jobs)
            ]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def run_one(self, payload: Payload) -> Result:
        """One run: in the calling process (a papermill kernel, or this interpreter), or with
        ``gpus`` in a fresh process on the first group."""
        if self.warm:
            return claimed(payload, self._kernels[0].run)
        if self.groups is not None:
            results: list[Result] = []
            self.run_many([("run", payload)], started=lambda key: None, finished=_keep(results))
            return results[0]
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
        if self.jobs == 1 and self.groups is None:
            for key, payload in payloads:
                started(key)
                finished(key, self.run_one(payload))
            return
        if self.warm:
            self._run_warm(payloads, started=started, finished=finished)
            return
        context = multiprocessing.get_context("spawn")
        free = list(self.groups) if self.groups is not None else [None] * self.jobs
        # With GPUs, one process per run: CUDA_VISIBLE_DEVICES counts only before CUDA starts.
        fresh = 1 if self.groups is not None else None
        with concurrent.futures.ProcessPoolExecutor(
            self.jobs, mp_context=context, max_tasks_per_child=fresh
        ) as pool:
            _dispatch(
                payloads,
                free,
                lambda payload, devices: self._submit(pool, {**payload, "devices": devices}),
                started=started,
                finished=finished,
            )

    def _run_warm(
        self,
        payloads: Sequence[tuple[str, Payload]],
        *,
        started: Callable[[str], None],
        finished: Callable[[str, Result], None],
    ) -> None:
        """:meth:`run_many` on the warm kernels: a thread per kernel waits on its run."""
        with concurrent.futures.ThreadPoolExecutor(len(self._kernels)) as pool:
            _dispatch(
                payloads,
                list(self._kernels),
                lambda payload, kernel: pool.submit(claimed, dict(payload), kernel.run),
                started=started,
                finished=finished,
            )

    def _submit(
        self, pool: concurrent.futures.Executor, payload: Payload
    ) -> concurrent.futures.Future[Result]:
        if self._ipynb is None:
            return pool.submit(execute_inprocess_run, dict(payload))
        return pool.submit(execute_notebook_run, self._ipynb, dict(payload), self.cwd)


def _dispatch(
    payloads: Sequence[tuple[str, Payload]],
    slots: list[Any],
    submit: Callable[[Payload, Any], concurrent.futures.Future[Result]],
    *,
    started: Callable[[str], None],
    finished: Callable[[str, Result], None],
) -> None:
    """Every ``(key, payload)`` through ``submit(payload, slot)``, one per free slot (a GPU group,
    a warm kernel, or None for a plain worker); a slot is free again when its run ends. Only as
    many are submitted as run at once, so that ``started`` tells the truth; a run whose future
    raises (a worker process died, a kernel could not run it) is reported failed."""
    queue = list(payloads)
    free = list(slots)
    running: dict[concurrent.futures.Future[Result], tuple[str, Any]] = {}
    while queue or running:
        while queue and free:
            key, payload = queue.pop(0)
            slot = free.pop(0)
            started(key)
            running[submit(payload, slot)] = (key, slot)
        ended, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in ended:
            key, slot = running.pop(future)
            free.append(slot)
            try:
                result = future.result()
            except Exception as exc:
                result = {"status": "failed", "error": short_error(exc), "elapsed_s": 0.0}
            finished(key, result)


def _keep(results: list[Result]) -> Callable[[str, Result], None]:
    """A ``finished`` callback that appends each result to ``results``."""
    return lambda key, result: results.append(result)
