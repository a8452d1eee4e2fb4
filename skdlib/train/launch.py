"""One run in ``nproc`` processes under torch's elastic launcher, as ``torchrun`` starts them.

``launch_train(cfg, run_dir, nproc=2)`` is ``torchrun --standalone --nproc-per-node 2 -m
skdlib.train ...`` called from Python (the training notebook calls it, so a papermill execution
stays the run's record): the same launcher (:func:`torch.distributed.launcher.api.elastic_launch`,
a c10d rendezvous on localhost at a free port, no restarts), the same environment in each process
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and in each process
:func:`skdlib.train.loop.train` with one torch thread unless told otherwise (torchrun sets
``OMP_NUM_THREADS=1``). So a run launched here and one launched by hand with the same config
and process count train the same weights. ``nproc=1`` trains in the calling process.

On GPUs each process takes ``cuda:LOCAL_RANK`` (of the devices ``CUDA_VISIBLE_DEVICES`` shows);
on CPU the processes join with gloo. ``data.batch_size`` is per process
(:mod:`skdlib.train.distributed`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record

from skdlib.train.config import ExperimentConfig

__all__ = ["LaunchError", "launch_train"]

logger = logging.getLogger(__name__)

#: Seconds between two looks of the launcher at its processes (torchrun's default: 0.1 s).
_MONITOR_S = 0.5
#: The signals the launcher handles (LaunchConfig.signals_to_handle's default).
_LAUNCHER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """Give the signal handlers back afterwards: the launcher installs its own (SIGTERM raises)
    and leaves them, so a Jupyter kernel that trained a run printed a traceback when it was shut
    down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in _LAUNCHER_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


class LaunchError(RuntimeError):
    """A process of a multi-process run failed; the message holds its rank and its error."""


@record
def _process(
    cfg: ExperimentConfig,
    run_dir: str,
    resume: bool,
    force: bool,
    progress: bool,
    threads: int,
    teacher_store: str | None = None,
) -> dict[str, Any]:
    """One process of the run (its rank from the launcher's environment); rank 0 returns the
    summary, the others ``{}``. ``@record`` writes its error for the launcher to report."""
    from skdlib.train.build import torch_threads
    from skdlib.train.loop import train

    with torch_threads(threads):
        return train(
            cfg, run_dir, resume=resume, force=force, progress=progress, teacher_store=teacher_store
        )


def _first_failure(error: ChildFailedError) -> str:
    rank, failure = error.get_first_failure()
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    text = str(message).strip().splitlines()
    reason = text[-1] if text else f"exit code {failure.exitcode}"
    return f"process {rank} of the run failed: {reason}"


def launch_train(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike[str],
    *,
    nproc: int = 1,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
    threads: int | None = None,
    teacher_store: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` in ``nproc`` processes; the summary (rank 0's).

    Args:
        nproc: processes (one per GPU on CUDA); 1 trains in this process.
        threads: torch threads of each process (default: 1 with several processes, as torchrun;
            this process's setting with one), set for the run and restored after it.
        teacher_store: the folder of teacher-output stores each process reads (see
            :func:`skdlib.train.loop.train`).

    Raises:
        ValueError: ``nproc`` or ``threads`` below 1.
        LaunchError: a process failed (its rank and last error line in the message).
        Exception: whatever :func:`skdlib.train.loop.train` raises, with ``nproc=1``.
    """
    from skdlib.train.build import torch_threads
    from skdlib.train.loop import train

    if nproc < 1:
        raise ValueError(f"nproc: expected an int >= 1, got {nproc!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads: expected an int >= 1, got {threads!r}")
    if nproc == 1:
        with torch_threads(threads):
            return train(
                cfg,
                run_dir,
                resume=resume,
                force=force,
                progress=progress,
                teacher_store=teacher_store,
            )
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"skd-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",  # torchrun --standalone
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=_MONITOR_S,
        start_method="spawn",
    )
    logger.info("launching %s in %d processes (%s)", Path(run_dir), nproc, config.run_id)
    store = None if teacher_store is None else str(teacher_store)
    args = (cfg, str(run_dir), resume, force, progress, threads or 1, store)
    try:
        with _own_signal_handlers():
            results = elastic_launch(config, _process)(*args)
    except ChildFailedError as error:
        raise LaunchError(f"{Path(run_dir)}: {_first_failure(error)}") from None
    return results[0]
