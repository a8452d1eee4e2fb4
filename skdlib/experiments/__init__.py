"""The experiment pipeline: the plan's runs of a profile, each trained once, and their index.

- :mod:`skdlib.experiments.plan`: the plan file (profiles, named settings, experiments).
- :mod:`skdlib.experiments.runs`: the runs of a profile (:class:`RunSpec`) and what to do with
  each folder (reuse, train, resume, retrain).
- :mod:`skdlib.experiments.executors`: how a run runs (a papermill execution of the training
  notebook, or ``train()`` in-process; in ``nproc_per_run`` processes), ``jobs`` at a time or
  one per free GPU group; :mod:`skdlib.experiments.slurm`: one SLURM job per run (submitit).
- :mod:`skdlib.experiments.locks`: a run's claim and the index's merge (``flock``), so that
  several pipelines can share a runs tree.
- :mod:`skdlib.experiments.index`: ``<runs_root>/<profile>/index.json``, merged under a lock.
- :mod:`skdlib.experiments.pipeline`: :func:`run_pipeline`, the whole job.
- :mod:`skdlib.experiments.cli`: ``python -m skdlib.experiments {run,status}``.

``python -m skdlib.experiments run --profile quick`` is what ``make experiments`` calls: each run
executes the training notebook that the plan file names (its ``notebook`` key; ``--notebook``
replaces it). The library names no chapter: the path lives in the plan.
"""

from skdlib.experiments.cli import main
from skdlib.experiments.pipeline import EXECUTORS, run_pipeline
from skdlib.experiments.plan import (
    DEFAULT_PLAN,
    Experiment,
    Plan,
    PlanError,
    Profile,
    SlurmOptions,
    Teacher,
    load_plan,
)
from skdlib.experiments.runs import RunSpec, build_runs, expected_cost, longest_first, run_action

__all__ = [
    "DEFAULT_PLAN",
    "EXECUTORS",
    "Experiment",
    "Plan",
    "PlanError",
    "Profile",
    "RunSpec",
    "SlurmOptions",
    "Teacher",
    "build_runs",
    "expected_cost",
    "load_plan",
    "longest_first",
    "main",
    "run_action",
    "run_pipeline",
]
