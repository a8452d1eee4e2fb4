"""Train one experiment into a run folder::

    python -m skdlib.train --config FILE --run-dir DIR [--set key=value ...] [--resume] [--force]
        [--teacher-store DIR]

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) every process runs this; ``data.batch_size`` is
per process and only rank 0 writes the run folder.

Bad input (a config key or value, a missing or torn file, a run folder that must not be
overwritten) prints one line naming it and exits 2; a failed run (a non-finite loss) exits 1;
``--debug`` shows the traceback instead (:func:`skdlib.errors.run_cli`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from skdlib.errors import run_cli

logger = logging.getLogger("skdlib.train")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, load the config, train, print the summary as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m skdlib.train", description="Train one experiment into a run folder."
    )
    parser.add_argument("--config", required=True, help="YAML preset, e.g. configs/quick.yaml")
    parser.add_argument("--run-dir", required=True, help="run folder, e.g. runs/quick")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable (e.g. --set train.max_iters=100)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from checkpoints/last.pt")
    parser.add_argument(
        "--force", action="store_true", help="delete a previous run in --run-dir first"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--teacher-store",
        default=None,
        metavar="DIR",
        help="a folder of teacher-output stores (the pipeline's runs/<profile>/teacher_outputs): "
        "the teacher cache reads the outputs stored there for this run instead of computing "
        "them (bit-identical; not part of the config)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    args = parser.parse_args(argv)
    if args.resume and args.force:
        parser.error("--resume and --force exclude each other")
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return run_cli(lambda: _train(args), debug=args.debug, logger=logger)


def _train(args: argparse.Namespace) -> int:
    from skdlib.train.config import load_config
    from skdlib.train.loop import train

    cfg = load_config(args.config, args.overrides)
    summary = train(
        cfg,
        args.run_dir,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        teacher_store=args.teacher_store,
    )
    if summary:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
