"""``python -m skdlib.experiments {run,status} --profile NAME ...``: see :mod:`skdlib.experiments`.

Bad input (an unknown profile, experiment or key, a missing file) prints one line naming it
and exits 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from skdlib.experiments.pipeline import EXECUTORS, run_pipeline
from skdlib.experiments.plan import DEFAULT_PLAN, PlanError, load_plan
from skdlib.experiments.runs import build_runs, resolve, run_action

logger = logging.getLogger("skdlib.experiments")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", help="profile of the plan (quick, smoke, paper)")
    p.add_argument(
        "--runs-root", default="runs", help="runs go to <runs-root>/<profile>/ (default: runs)"
    )
    p.add_argument(
        "--only", nargs="+", metavar="NAME", help="only these experiments (the teacher always)"
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every run, repeatable (e.g. --set data.root=/data/cityscapes)",
    )
    p.add_argument("--plan", default=str(DEFAULT_PLAN), help=f"the plan (default: {DEFAULT_PLAN})")
    p.add_argument(
        "--root",
        default=".",
        help="project root: presets, --plan, --runs-root, --notebook and relative data paths "
        "are relative to it (default: the current directory)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="train every run again from scratch")
    p.add_argument(
        "--teacher-only",
        action="store_true",
        help="train (or reuse) the profile's teacher and stop (make teacher: with --force)",
    )
    p.add_argument(
        "--executor",
        default="local",
        choices=EXECUTORS,
        help="local: each run a papermill execution of --notebook (default); inprocess: "
        "train() directly, no notebook",
    )
    p.add_argument(
        "--notebook",
        default=None,
        help="the training notebook the local executor runs (make passes the training chapter)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="student runs at a time, each its own process (default: the profile's jobs)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per student run (default: the profile's threads)",
    )
    p.add_argument(
        "--teacher-threads",
        type=int,
        default=None,
        help="torch threads of the teacher run (default: the profile's teacher_threads)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skdlib.experiments",
        description="Train every run of a profile of the experiment plan, or say what it would do.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every missing run of a profile")
    _common(run)
    _run_options(run)
    status = sub.add_parser("status", help="what `run` would do")
    _common(status)
    return parser


def _status(args: argparse.Namespace) -> int:
    plan = load_plan(resolve(args.plan, args.root))
    specs = build_runs(
        plan,
        args.profile,
        runs_root=args.runs_root,
        project_root=args.root,
        sets=args.sets,
        only=args.only,
    )
    for spec in specs:
        action, why = run_action(spec)
        sys.stdout.write(f"{spec.key:32s} {action:8s} {why}\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    result = run_pipeline(
        args.profile,
        plan_path=args.plan,
        runs_root=args.runs_root,
        project_root=args.root,
        notebook=args.notebook,
        executor=args.executor,
        force=args.force,
        only=args.only,
        sets=args.sets,
        jobs=args.jobs,
        threads=args.threads,
        teacher_threads=args.teacher_threads,
        teacher_only=args.teacher_only,
    )
    if result["failed"]:
        logger.error("failed runs (see their run folders): %s", ", ".join(result["failed"]))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0 done, 1 failed runs, 2 bad input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        return _status(args) if args.command == "status" else _run(args)
    except (PlanError, FileNotFoundError) as error:
        if args.debug:
            raise
        logger.error("%s", error)
        return 2
