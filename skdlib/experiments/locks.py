"""Locks on a shared runs tree: a run's claim and the merge of ``index.json``.

A lock is :class:`skdlib.filelock.FileLock` (``fcntl.flock`` on a lock file): exclusive, and
released by the kernel when the holder's process ends, however it ends (a crash, SIGKILL, a SLURM
job killed at its time limit). That is the crash-safety: a dead holder's lock is simply free,
there is no stale lock to clean up. The holder writes ``host pid start-time`` into the file so
that a waiting process can say who it waits for. Lock files are never deleted.

Network file systems: flock works across machines where the server supports locks (NFSv4, NFSv3
with lockd; the Linux client maps flock onto byte-range locks), Lustre mounted with
``-o flock``, BeeGFS and GPFS. Without it, several pipelines on one tree are not safe: run them on
one machine, or split the profile by hand with ``--only``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from skdlib.filelock import FileLock

__all__ = ["RUN_LOCK_NAME", "holder_of", "run_lock", "wait_until_free"]

logger = logging.getLogger(__name__)

#: The lock file inside a run folder (a run is claimed while its lock is held).
RUN_LOCK_NAME = ".run.lock"
#: Seconds between two log lines of a process waiting for a lock.
_SAY_EVERY_S = 300.0


def _describe(path: Path) -> str:
    """Who holds the lock at ``path``, from what the holder wrote: ``host pid N since HH:MM``."""
    try:
        host, pid, since = path.read_text().split()
        clock = time.strftime("%H:%M:%S", time.localtime(float(since)))
        return f"{host} pid {pid} since {clock}"
    except (OSError, ValueError):
        return "another process"


def holder_of(path: str | os.PathLike[str]) -> str | None:
    """``None`` when nobody holds the lock at ``path`` now, else who holds it (for messages).

    Probes by taking the lock and giving it back at once.
    """
    lock = FileLock(path)
    if lock.acquire(timeout=0):
        lock.release()
        return None
    return _describe(Path(path))


def run_lock(run_dir: str | os.PathLike[str]) -> Path:
    """The lock file of the run folder ``run_dir``."""
    return Path(run_dir) / RUN_LOCK_NAME


def wait_until_free(path: str | os.PathLike[str], *, poll_s: float, what: str) -> None:
    """Wait until nobody holds the lock at ``path`` (checked every ``poll_s`` seconds), saying
    who holds it now and then."""
    said = -_SAY_EVERY_S
    while (holder := holder_of(path)) is not None:
        if time.monotonic() - said >= _SAY_EVERY_S:
            logger.info("waiting for %s, held by %s", what, holder)
            said = time.monotonic()
        time.sleep(poll_s)
