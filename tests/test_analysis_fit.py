"""labelled_fit: the networks' scores on the students' labelled scenes and on the val scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from skdlib.analysis.demo import make_demo_runs
from skdlib.analysis.fit import labelled_fit
from skdlib.analysis.runs import RunsTree

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_labelled_fit_scores_the_teacher_and_each_student(tmp_path: Path) -> None:
    root = make_demo_runs(tmp_path / "tree", ["baseline", "pi"], iters=1, repo=REPO)
    tree = RunsTree.read(root, project_root=REPO)
    fit = labelled_fit(tree, ["baseline", "pi"])
    assert fit["network"].tolist() == ["teacher", "baseline", "pi"]
    assert fit["n_seeds"].tolist() == [1, 1, 1]
    for column in ("labelled_miou", "labelled_pixel_acc", "val_miou", "val_pixel_acc"):
        assert fit[column].between(0, 1).all(), column
    # Parity: the val scores are the runs' own final evaluation (whole images, single scale).
    for name in ("baseline", "pi"):
        summary = tree.run(name).read_summary()
        row = fit[fit["network"] == name].iloc[0]
        assert row["val_miou"] == pytest.approx(summary["miou"], abs=1e-6)
        assert row["val_pixel_acc"] == pytest.approx(summary["pixel_acc"], abs=1e-6)
    with pytest.raises(ValueError, match="no finished run of 'pi_pa'"):
        labelled_fit(tree, ["pi_pa"])
