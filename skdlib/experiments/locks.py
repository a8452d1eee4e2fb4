"""Locks on a shared runs tree: a run's claim and the merge of ``index.json``.

A lock is ``fcntl.flock`` on a lock file: exclusive, and released by the kernel when the
holder's process ends, however it ends (a crash, SIGKILL, a SLURM job killed at its time limit).
That is the crash-safety: a dead holder's lock is simply free, there is no stale lock to clean
up. The holder writes ``host pid start-time`` into the file so that a waiting process can say
who it waits for. Lock files are never deleted (deleting one lets two processes lock two
different files of the same name).

Network file systems: flock works across machines where the server supports locks (NFSv4, NFSv3
with lockd; the Linux client maps flock onto byte-range locks), Lustre mounted with
``-o flock``, BeeGFS and GPFS. Without it, several pipelines on one tree are not safe: run them on
one machine, or split the profile by hand with ``--only``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

__all__ = ["RUN_LOCK_NAME", "FileLock", "holder_of", "run_lock", "wait_until_free"]

logger = logging.getLogger(__name__)

#: The lock file inside a run folder (a run is claimed while its lock is held).
RUN_LOCK_NAME = ".run.lock"
#: Seconds between two tries of a lock that another process holds.
_RETRY_S = 0.2
#: Seconds between two log lines of a process waiting for a lock.
_SAY_EVERY_S = 300.0


class FileLock:
    """An exclusive ``flock`` on ``path`` (created with its folder when missing).

    ``acquire(timeout=None)`` blocks, ``timeout=0`` tries once, ``timeout>0`` retries until then.
    Locks are per open file: two ``FileLock`` objects on one path exclude each other, also inside
    one process. Use ``with FileLock(path):`` for a blocking acquire and a release.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, *, timeout: float | None = None) -> bool:
        """Take the lock; False when ``timeout`` seconds passed while another process held it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this FileLock already holds the lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        return False
                    time.sleep(_RETRY_S)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock back (closing the file releases it); nothing when not held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
