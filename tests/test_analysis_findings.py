"""findings: the introduction's lines, computed from a runs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from skdlib.analysis.demo import make_demo_runs
from skdlib.analysis.findings import findings
from skdlib.analysis.runs import RunsTree

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_findings_read_the_teacher_the_ablation_and_the_pools(tmp_path: Path) -> None:
    root = make_demo_runs(tmp_path / "tree", ["baseline", "pi", "pi_unl1x"], iters=1, repo=REPO)
    tree = RunsTree.read(root, project_root=REPO)
    lines = findings(tree)
    assert lines[0].startswith("- The teacher scores ") and "above the baseline" in lines[0]
    assert lines[1].startswith("- +PI vs baseline: ")
    assert lines[2].startswith("- +PI, pool vs +PI: ")
    # One validation per run (one iteration): no record at 75 % of training, so no plateau.
    assert lines[3].startswith("- Not at a plateau: ") and "(of 3 settings)" in lines[3]
    assert len(lines) == 4
    # Nothing finished: no line.
    index = dict(tree.index)
    for exp in index["experiments"]:
        for run in exp["runs"]:
            run["run_dir"] = f"{exp['name']}/seed9"
    index["teacher"] = {}
    assert findings(RunsTree(tree.profile_dir, index, REPO)) == []
