"""``python -m skdlib.experiments {run,status} --profile NAME ...``: see :mod:`skdlib.experiments`.

Bad input (an unknown profile, experiment or key, a bad value, a missing file) prints one line
naming it and exits 2; failed runs exit 1 (their errors are in the log and ``index.json``);
``--debug`` shows the traceback instead (:func:`skdlib.errors.run_cli`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from skdlib.errors import EXIT_FAILED, run_cli
from skdlib.experiments.pipeline import DEFAULT_POLL_S, EXECUTORS, run_pipeline
from skdlib.experiments.plan import DEFAULT_PLAN, load_plan
from skdlib.experiments.runs import build_runs, resolve, run_action

logger = logging.getLogger("skdlib.experiments")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile", default="quick", help="profile of the plan (quick, smoke, gpu, paper)"
    )
    p.add_argument(
        "--runs-root", default="runs", help="runs go to <runs-root>/<profile>/ (default: runs)"
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="only these experiments (and the teachers they learn from)",
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
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # also accepted before the command
        help="tracebacks instead of one line",
    )
    p.add_argument(
        "--root",
        default=".",
        help="project root: presets, --plan, --runs-root, --notebook and relative data paths "
        "are relative to it (default: the current directory)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="train every run again from scratch")
    p.add_argument(
        "--fresh-kernels",
        action="store_true",
        help="local executor: each run a papermill execution in a kernel of its own (5-8 s of "
        "kernel start and imports per run) instead of one warm kernel per job",
    )
    p.add_argument(
        "--teacher-only",
        action="store_true",
        help="train (or reuse) every teacher of the profile and its pretraining run, and stop "
        "(make teacher: with --force)",
    )
    p.add_argument(
        "--no-teacher-store",
        dest="teacher_store",
        action="store_false",
        help="build no teacher-output store: each student run computes its teacher's outputs "
        "(the same values; by default a fixed teacher's outputs are computed once per data set "
        "into <runs-root>/<profile>/teacher_outputs and read by every run)",
    )
    p.add_argument(
        "--executor",
        default="local",
        choices=EXECUTORS,
        help="local: each run an execution of the training notebook (default); inprocess: "
        "train() directly, no notebook; slurm: each run a SLURM job (submitit) running "
        "the notebook (or train() without one), asking for the SLURM options below",
    )
    p.add_argument(
        "--notebook",
        default=None,
        help="the training notebook each run executes (default: the plan's `notebook`)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="student runs at a time, each its own process (default: the profile's jobs); with "
        "--executor slurm: SLURM jobs in flight at most (default: every run at once)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process of a student run (default: the profile's threads)",
    )
    p.add_argument(
        "--teacher-threads",
        type=int,
        default=None,
        help="torch threads of the teacher run (default: the profile's teacher_threads)",
    )
    p.add_argument(
        "--nproc-per-run",
        type=int,
        default=None,
        metavar="N",
        help="processes of each run, launched as torchrun does (torch's elastic launcher; one per "
        "GPU, gloo on CPU); the notebook stays the run's record (default: the profile's "
        "nproc_per_run, else 1)",
    )
    p.add_argument(
        "--gpus",
        type=_gpu_list,
        default=None,
        metavar="0,1,...",
        help="local executors: one run per --nproc-per-run of these GPUs at a time, each run "
        "seeing its own (CUDA_VISIBLE_DEVICES); replaces --jobs",
    )
    p.add_argument(
        "--poll-s",
        type=float,
        default=DEFAULT_POLL_S,
        metavar="SECONDS",
        help="seconds between two looks at runs another pipeline is training (several "
        "pipelines can share a runs tree: each run trains once) and at SLURM jobs "
        f"(default: {DEFAULT_POLL_S:g})",
    )
    _slurm_options(p)


def _slurm_options(p: argparse.ArgumentParser) -> None:
    slurm = p.add_argument_group(
        "SLURM options (--executor slurm; default: the profile's slurm keys)",
        "One job per run; its logs go to <run folder>/slurm/. A job that dies leaves its "
        "checkpoint: running the pipeline again resumes the run.",
    )
    slurm.add_argument("--partition", default=None, help="partition (default: the cluster's)")
    slurm.add_argument(
        "--gpus-per-run", type=int, default=None, metavar="N", help="GPUs of each job"
    )
    slurm.add_argument(
        "--cpus-per-run",
        type=int,
        default=None,
        metavar="N",
        help="CPUs of each job (default: threads x processes of the run)",
    )
    slurm.add_argument("--mem-gb", type=float, default=None, help="memory of each job in GB")
    slurm.add_argument(
        "--time-min", type=int, default=None, metavar="MINUTES", help="time limit of each job"
    )


def _gpu_list(text: str) -> list[str]:
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise argparse.ArgumentTypeError(f"expected GPU ids like 0,1,2, got {text!r}")
    return gpus


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
    status = sub.add_parser("status", help="what `run` would do, and every teacher of the profile")
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
        all_teachers=True,
    )
    prof = plan.profile(args.profile)
    used = {prof.teacher_of(e.teacher).name for e in plan.select(args.only, prof)}
    for spec in specs:
        action, why = run_action(spec)
        if spec.is_teacher and spec.key not in used:
            why += "; no selected experiment learns from it (run --teacher-only trains it)"
        sys.stdout.write(f"{spec.key:32s} {action:8s} {why}\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    slurm = {
        "partition": args.partition,
        "gpus_per_run": args.gpus_per_run,
        "cpus_per_run": args.cpus_per_run,
        "mem_gb": args.mem_gb,
        "time_min": args.time_min,
    }
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
        nproc_per_run=args.nproc_per_run,
        gpus=args.gpus,
        slurm=slurm,
        poll_s=args.poll_s,
        teacher_only=args.teacher_only,
        fresh_kernels=args.fresh_kernels,
        teacher_store=args.teacher_store,
    )
    if result["failed"]:
        logger.error("failed runs (see their run folders): %s", ", ".join(result["failed"]))
        return EXIT_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0 done, 1 failed runs, 2 bad input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(message)s"
    )
    body = _status if args.command == "status" else _run
    return run_cli(lambda: body(args), debug=args.debug, logger=logger)
