"""Errors for people: what the command lines do with an exception, and the checkpoint error.

Every command line of the library (``python -m skdlib.train``, ``skdlib.evaluate``,
``skdlib.experiments``) runs its work through :func:`run_cli`: bad input (a config key or
value, a missing or unreadable file, a torn checkpoint, a run folder that must not be
overwritten) prints one line naming it and exits 2; any other error prints one line and exits 1;
``--debug`` raises instead, with the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = [
    "BAD_INPUT",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "CheckpointError",
    "one_line",
    "run_cli",
]

#: Exit status of a command line given bad input (as argparse's own usage errors).
EXIT_BAD_INPUT = 2
#: Exit status of a command line whose work failed (a run, a non-finite loss, a crash).
EXIT_FAILED = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: torn (a crash while it was written, a partial
    copy), not a PyTorch file at all, or one that would need arbitrary unpickling."""


#: What counts as bad input: configuration keys and values (ValueError, the plan's PlanError and
#: CheckpointError among them), missing files, folders that hold what must not be overwritten
#: (FileExistsError: the training loop's RunFolderError), files that cannot be read.
BAD_INPUT: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError)


def one_line(error: BaseException) -> str:
    """The error's message on one line (its lines joined with a semicolon), with the exception's
    name when the message alone would not say what went wrong."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = "; ".join(lines) or type(error).__name__
    if isinstance(error, (ValueError, FileNotFoundError, FileExistsError)) and lines:
        return message
    return f"{type(error).__name__}: {message}"


def run_cli(body: Callable[[], int], *, debug: bool, logger: logging.Logger) -> int:
    """``body()``'s exit status; an exception becomes one logged line and exit 2 (bad input,
    :data:`BAD_INPUT`) or 1 (anything else), or propagates with ``debug``."""
    try:
        return body()
    except BAD_INPUT as error:
        if debug:
            raise
        logger.error("%s", one_line(error))
        return EXIT_BAD_INPUT
    except Exception as error:
        if debug:
            raise
        logger.error("%s (--debug shows the traceback)", one_line(error))
        return EXIT_FAILED
