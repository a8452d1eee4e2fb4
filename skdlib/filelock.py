"""One file lock for the whole library: an exclusive ``fcntl.flock`` on a lock file.

Used by the data generator (one process generates a data set, the others wait for it), the
experiments (a run's claim, the merge of ``index.json``; :mod:`skdlib.experiments.locks`) and the
analysis' demo runs tree. The lock is released by the kernel when the holder's process ends,
however it ends, so a dead holder leaves no stale lock. The holder writes ``host pid start-time``
into the file, for messages about who holds it. Lock files are never deleted (deleting one lets
two processes lock two different files of the same name). POSIX only.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

__all__ = ["FileLock"]

#: Seconds between two tries of a lock that another process holds (``acquire(timeout=...)``).
_RETRY_S = 0.2


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
