"""``<runs_root>/<profile>/index.json``: the profile's runs and their status, for the readers.

Layout: ``profile``, ``data`` (name, root), ``num_classes``, ``teacher`` (config, overrides,
run_dir, config_hash, status), ``experiments`` (name, groups, label, description, config,
overrides, runs: seed, run_dir, config_hash, status, error, elapsed_s). Every ``run_dir`` is
relative to the profile folder. Paths inside the project are written relative to it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skdlib.experiments.plan import Plan, Profile
from skdlib.experiments.runs import RunSpec
from skdlib.train.runfolder import atomic_write_json

__all__ = ["INDEX_NAME", "write_index"]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"


def _run_entry(spec: RunSpec, state: Mapping[str, Any], profile_dir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "run_dir": os.path.relpath(spec.run_dir, profile_dir),  # a kept teacher lies elsewhere
        "config_hash": spec.hash,
        "status": state["status"],
    }
    if state.get("error"):
        entry["error"] = state["error"]
    if state.get("elapsed_s") is not None:
        entry["elapsed_s"] = round(float(state["elapsed_s"]), 2)
    return entry


def _display(path: Path, project_root: Path) -> str:
    """``path`` relative to the project root when it lies inside it."""
    try:
        return str(path.relative_to(project_root))
    except ValueError:
        return str(path)


def _read_previous(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("%s is unreadable; writing a new one", path)
        return {}
    return previous if isinstance(previous, dict) else {}


def write_index(
    path: Path,
    plan: Plan,
    profile: Profile,
    runs: Sequence[RunSpec],
    states: Mapping[str, Mapping[str, Any]],
    *,
    num_classes: int | None,
    project_root: Path,
) -> None:
    """Rewrite ``index.json`` atomically from ``runs`` (the teacher first) and their ``states``;
    experiments absent from this invocation (``--only``) are kept from the previous index."""
    previous = _read_previous(path)
    teacher = runs[0]
    cfg = teacher.config
    index: dict[str, Any] = {
        "profile": profile.name,
        "data": {"name": cfg.data.name, "root": _display(Path(cfg.data.root), project_root)},
        "num_classes": num_classes if num_classes is not None else previous.get("num_classes"),
        "teacher": {
            "config": _display(teacher.config_path, project_root),
            "overrides": list(profile.overrides),
            **_run_entry(teacher, states[teacher.key], path.parent),
        },
        "experiments": [],
    }
    old = {e.get("name"): e for e in previous.get("experiments", []) if isinstance(e, dict)}
    by_experiment: dict[str, list[RunSpec]] = {}
    for spec in runs[1:]:
        by_experiment.setdefault(spec.experiment or "", []).append(spec)
    for exp in plan.experiments:
        if exp.name in by_experiment:
            specs = by_experiment[exp.name]
            index["experiments"].append(
                {
                    "name": exp.name,
                    "groups": list(exp.groups),
                    "label": exp.label,
                    "description": exp.description,
                    "config": _display(specs[0].config_path, project_root),
                    "overrides": list(plan.overrides(exp, profile)),
                    "runs": [
                        {"seed": s.seed, **_run_entry(s, states[s.key], path.parent)} for s in specs
                    ],
                }
            )
        elif exp.name in old:
            index["experiments"].append(old[exp.name])
    atomic_write_json(path, index)
