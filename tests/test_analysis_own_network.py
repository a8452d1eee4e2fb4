"""skdlib.analysis.own_network: the profile's teacher found as the pipeline names it, the
overrides that make a run's network a teacher, the curves of a few runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from skdlib.analysis.own_network import profile_teacher, run_curves, teacher_overrides
from skdlib.train.config import apply_overrides, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def _finished_run(folder: Path, *overrides: str) -> Path:
    """A run folder with config.yaml (teacher_smoke.yaml + overrides), a finished summary and a
    final.pt."""
    cfg = apply_overrides(load_config(REPO / "configs" / "teacher_smoke.yaml"), list(overrides))
    (folder / "checkpoints").mkdir(parents=True)
    save_config(cfg, folder / "config.yaml")
    (folder / "summary.json").write_text(json.dumps({"finished": True, "miou": 0.5}))
    (folder / "checkpoints" / "final.pt").write_bytes(b"")
    return folder


def _project(root: Path, teacher_dir: str | None) -> Path:
    shutil.copytree(REPO / "configs", root / "configs")
    plan = yaml.safe_load((REPO / "configs" / "experiments.yaml").read_text())
    teacher = plan["profiles"]["quick"]["teachers"]["teacher"]
    teacher["dir"] = teacher_dir
    if teacher_dir is None:
        del teacher["dir"]
    (root / "configs" / "experiments.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return root


def test_teacher_overrides_make_a_runs_network_the_teacher(tmp_path: Path) -> None:
    run = _finished_run(
        tmp_path / "t",
        "model.student=user_networks:build_fcn",
        "model.student_options={width: 8}",
        "model.student_taps={logits: out, features: {head: classifier.2}, probe_size: [32, 32]}",
    )
    cfg = apply_overrides(load_config(REPO / "configs" / "smoke.yaml"), teacher_overrides(run))
    m = cfg.model
    assert m.teacher == "user_networks:build_fcn" and dict(m.teacher_options) == {"width": 8}
    assert m.teacher_taps["features"]["head"] == "classifier.2"
    assert m.teacher_taps["probe_size"] == (32, 32)
    assert m.teacher_checkpoint == str(run / "checkpoints" / "final.pt")
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        teacher_overrides(tmp_path / "nothing")


def test_the_teacher_of_the_index_first_then_the_kept_one(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", "kept/quick/teacher")
    kept = _finished_run(root / "kept" / "quick" / "teacher")
    found = profile_teacher(root, "runs", "quick", smoke=False)
    assert found.run_dir == kept and found.preset == root / "configs" / "quick.yaml"
    assert "kept in the repository" in found.note
    profile_dir = root / "runs" / "quick"
    trained = _finished_run(profile_dir / "teacher")
    index = {"profile": "quick", "experiments": [], "teacher": {"run_dir": "teacher"}}
    (profile_dir / "index.json").write_text(json.dumps(index))
    assert profile_teacher(root, "runs", "quick", smoke=False).run_dir == trained


def test_no_teacher_is_a_clear_error(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", None)
    with pytest.raises(FileNotFoundError, match=r"make teacher PROFILE=quick"):
        profile_teacher(root, "runs", "quick", smoke=False)


def test_run_curves_read_the_validation_records(tmp_path: Path) -> None:
    for name, values in (("a", [(5, 0.1), (10, 0.2)]), ("b", [(10, 0.3)])):
        (tmp_path / name).mkdir()
        lines = [json.dumps({"iter": 5, "total": 1.0})]
        lines += [
            json.dumps({"iter": i, "split": "val", "miou": m, "pixel_acc": 0.5}) for i, m in values
        ]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    curves = run_curves({"first": tmp_path / "a", "second": tmp_path / "b"})
    assert curves[["label", "iter", "miou"]].values.tolist() == [
        ["first", 5, 0.1],
        ["first", 10, 0.2],
        ["second", 10, 0.3],
    ]
