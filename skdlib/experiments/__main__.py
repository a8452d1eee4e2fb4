"""``python -m skdlib.experiments``: see :mod:`skdlib.experiments.cli`."""

from skdlib.experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
