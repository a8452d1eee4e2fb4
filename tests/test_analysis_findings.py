"""findings: the introduction's lines, computed from a runs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from skdlib.analysis.demo import make_demo_runs
from skdlib.analysis.findings import findings
from skdlib.analysis.runs import RunsTree

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_findings_answer_the_questions_whose_runs_finished(tmp_path: Path) -> None:
    names = ["baseline", "pi", "pi_unl0x", "pi_unl1x"]
    root = make_demo_runs(tmp_path / "tree", names, iters=1, repo=REPO)
    tree = RunsTree.read(root, project_root=REPO)
    lines = findings(tree)
    # One seed each: every comparison is named, with its numbers, and not testable.
    assert lines[0].startswith("- Does the pixel-wise term help: +PI against baseline: ")
    assert "not testable: 1 value(s) on one side (needs 2)" in lines[0]
    assert "(No twice-as-long control of either side was run.)" in lines[0]
    assert lines[1].startswith("- The teacher scores ") and "above the baseline" in lines[1]
    assert lines[2].startswith("- Do unlabeled scenes help the pixel-wise term: ")
    # No +PI+PA, +PI+PA+HO, CWD or DIST runs: those questions (and Fig. 3) are left out.
    assert len(lines) == 3
    # Nothing finished: no line.
    index = dict(tree.index)
    for exp in index["experiments"]:
        for run in exp["runs"]:
            run["run_dir"] = f"{exp['name']}/seed9"
    index["teacher"] = {}
    assert findings(RunsTree(tree.profile_dir, index, REPO)) == []
