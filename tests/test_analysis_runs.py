"""skdlib.analysis.runs: index reading, seed aggregation by hand, missing/failed runs, the noise
test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from skdlib.analysis.demo import demo_experiments, make_demo_runs
from skdlib.analysis.runs import (
    RunsTree,
    collect_runs,
    experiment_table,
    find_repo_root,
    load_index,
    run_status,
    teacher_curve,
    teacher_summary,
    val_curves,
)
from skdlib.analysis.stats import contrast, curve_summary, noise_comparison, welch_t
from skdlib.train.runfolder import RunFolder

CLASSES = ["road", "car"]


def _run(
    profile: Path,
    run_dir: str,
    *,
    miou: float | None,
    acc: float = 0.9,
    ious=(0.5, 0.25),
    finished: bool = True,
    val: tuple[tuple[int, float], ...] = (),
) -> None:
    """A run folder with a summary (``miou=None``: no summary at all) and optional val records."""
    folder = profile / run_dir
    folder.mkdir(parents=True, exist_ok=True)
    if miou is not None:
        summary = {
            "miou": miou,
            "pixel_acc": acc,
            "class_iou": list(ious),
            "class_names": CLASSES,
            "iterations": 10,
            "wall_time_s": 1.0,
            "finished": finished,
        }
        (folder / "summary.json").write_text(json.dumps(summary))
    lines = [json.dumps({"iter": 5, "lr": 0.01, "total": 1.0})]
    lines += [
        json.dumps({"iter": it, "split": "val", "miou": m, "pixel_acc": 0.5}) for it, m in val
    ]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _entry(name: str, groups: list[str], seeds_status: list[tuple[int, str]]) -> dict:
    return {
        "name": name,
        "groups": groups,
        "label": name.upper(),
        "description": "",
        "config": "c.yaml",
        "overrides": [],
        "runs": [
            {"seed": s, "run_dir": f"{name}/seed{s}", "config_hash": "h", "status": st}
            for s, st in seeds_status
        ],
    }


def _open(profile_dir: Path) -> RunsTree:
    return RunsTree.read(profile_dir, project_root=profile_dir.parent)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """Fabricated profile: A (3 finished seeds), B (1 finished, 1 without summary, 1 failed),
    C (listed, nothing on disk), D (2 finished, other group), teacher finished."""
    p = tmp_path / "quick"
    _run(p, "teacher", miou=0.8, acc=0.95)
    _run(p, "a/seed0", miou=0.5, acc=0.80, ious=(0.6, 0.4), val=((5, 0.2), (10, 0.5)))
    _run(p, "a/seed1", miou=0.6, acc=0.84, ious=(0.7, None), val=((5, 0.4), (10, 0.6)))
    _run(p, "a/seed2", miou=0.7, acc=0.88, ious=(0.8, 0.6), val=((5, 0.3), (10, 0.7)))
    _run(p, "b/seed0", miou=0.4, acc=0.7, ious=(0.5, 0.3))
    _run(p, "b/seed1", miou=None)  # listed finished, but no summary: unfinished
    _run(p, "b/seed2", miou=0.9, finished=False)  # a summary saying finished: false, listed failed
    _run(p, "d/seed0", miou=0.2)
    _run(p, "d/seed1", miou=0.4)
    index = {
        "profile": "quick",
        "data": {"name": "embedded", "root": "data/embedded"},
        "num_classes": 2,
        "teacher": {
            "run_dir": "teacher",
            "config": "t.yaml",
            "overrides": [],
            "status": "finished",
        },
        "experiments": [
            _entry("a", ["ablation"], [(0, "finished"), (1, "finished"), (2, "finished")]),
            _entry(
                "b", ["ablation", "variants"], [(0, "finished"), (1, "finished"), (2, "failed")]
            ),
            _entry("c", ["ablation"], [(0, "pending")]),
            _entry("d", ["variants"], [(0, "finished"), (1, "finished")]),
        ],
    }
    (p / "index.json").write_text(json.dumps(index))
    return p


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------
def test_load_index_refuses_missing_and_malformed(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"profile": "quick"}))
    with pytest.raises(ValueError, match="experiments"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text(
        json.dumps({"profile": "q", "experiments": [{"name": "x", "runs": [{}]}]})
    )
    with pytest.raises(ValueError, match="seed"):
        load_index(tmp_path)


def test_run_status_rules(tree):
    assert run_status(tree / "a/seed0", "finished") == "finished"
    assert run_status(tree / "a/seed0", "pending") == "finished"  # the summary decides
    assert run_status(tree / "b/seed1", "finished") == "unfinished"  # no summary
    assert run_status(tree / "b/seed2", "failed") == "failed"  # summary says finished: false
    assert run_status(tree / "b/seed2", None) == "unfinished"
    assert run_status(tree / "nowhere", "pending") == "unfinished"


def test_read_metrics_skips_a_torn_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iter": 1, "total": 2.0}\n\n{"iter": 2, "spl')
    assert RunFolder(tmp_path).read_metrics() == [{"iter": 1, "total": 2.0}]
    assert RunFolder(tmp_path / "absent").read_metrics() == []


def test_find_repo_root(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "book").mkdir()
    assert find_repo_root(tmp_path / "book") == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="pyproject"):
        find_repo_root(Path("/"), fallback_to_package=False)
    # Outside any repository: the installed package's repository (this one, an editable install).
    assert find_repo_root(Path("/")) == Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Aggregation by hand
# --------------------------------------------------------------------------------------------------
def test_experiment_table_by_hand(tree):
    table = experiment_table(_open(tree), "ablation")
    assert list(table.index) == ["a", "b", "c"]  # index order, group filter drops d
    a = table.loc["a"]
    assert a["label"] == "A" and a["n_runs"] == 3 and a["n_finished"] == 3 and a["missing"] == ""
    assert a["miou_mean"] == pytest.approx(0.6)
    assert a["miou_std"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / (3 - 1))
    assert (a["miou_min"], a["miou_max"]) == pytest.approx((0.5, 0.7))
    assert a["pixel_acc_mean"] == pytest.approx(0.84) and a["pixel_acc_std"] == pytest.approx(0.04)
    assert a["iou/road"] == pytest.approx(0.7)
    assert a["iou/car"] == pytest.approx(0.5)  # the None (absent class) of seed 1 is left out
    b = table.loc["b"]
    assert (b["n_runs"], b["n_finished"], b["n_failed"], b["n_unfinished"]) == (3, 1, 1, 1)
    assert b["miou_mean"] == pytest.approx(0.4) and math.isnan(b["miou_std"])  # one seed: no spread
    assert b["missing"] == "seed1 unfinished, seed2 failed"
    c = table.loc["c"]
    assert (
        (c["n_runs"], c["n_finished"]) == (1, 0)
        and math.isnan(c["miou_mean"])
        and math.isnan(c["iou/road"])
    )


def test_table_parity_with_a_plain_rederivation(tree):
    runs = collect_runs(_open(tree))
    table = experiment_table(_open(tree))
    for name in ("a", "d"):
        values = runs[(runs.experiment == name) & (runs.status == "finished")]["miou"].to_numpy()
        assert table.loc[name, "miou_mean"] == pytest.approx(np.mean(values))
        assert table.loc[name, "miou_std"] == pytest.approx(np.std(values, ddof=1))


def test_collect_runs_rows_and_teacher(tree):
    runs = collect_runs(_open(tree), "variants")
    assert list(zip(runs.experiment, runs.seed, runs.status, strict=True)) == [
        ("b", 0, "finished"),
        ("b", 1, "unfinished"),
        ("b", 2, "failed"),
        ("d", 0, "finished"),
        ("d", 1, "finished"),
    ]
    assert runs["miou"].isna().tolist() == [False, True, True, False, False]
    teacher = teacher_summary(_open(tree))
    assert teacher["status"] == "finished" and teacher["miou"] == pytest.approx(0.8)
    no_teacher = RunsTree(tree, {"profile": "q", "experiments": []}, tree.parent)
    assert teacher_summary(no_teacher) is None and teacher_curve(no_teacher).empty


def test_val_curves_and_their_band(tree):
    curves = val_curves(_open(tree), "ablation")
    assert len(curves) == 6 and set(curves.experiment) == {"a"}  # only a has val records
    band = curve_summary(curves)
    assert band["iter"].tolist() == [5, 10]
    assert band["mean"].tolist() == pytest.approx([0.3, 0.6])
    assert band["min"].tolist() == pytest.approx([0.2, 0.5]) and band[
        "max"
    ].tolist() == pytest.approx([0.4, 0.7])
    assert band["n"].tolist() == [3, 3]
    with pytest.raises(ValueError, match="metric"):
        curve_summary(curves, "loss")


# --------------------------------------------------------------------------------------------------
# Noise test
# --------------------------------------------------------------------------------------------------
def test_welch_t_by_hand():
    # Equal spreads, n = 3: se = sqrt(2 * 0.01 / 3), df = 4 exactly.
    t, df = welch_t(0.9, 0.1, 3, 0.6, 0.1, 3)
    assert t == pytest.approx(0.3 / math.sqrt(0.02 / 3)) and df == pytest.approx(4.0)
    assert all(math.isnan(v) for v in welch_t(0.9, 0.1, 1, 0.6, 0.1, 3))
    assert welch_t(0.7, 0.0, 3, 0.6, 0.0, 3)[0] == math.inf
    assert math.isnan(welch_t(0.6, 0.0, 3, 0.6, 0.0, 3)[0])


def test_welch_t_parity_with_numpy_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 0.05, 4), rng.normal(0.55, 0.02, 3)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t, df = welch_t(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
    assert t == pytest.approx((a.mean() - b.mean()) / np.sqrt(va + vb))
    assert df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 2))


def test_noise_comparison_hand_cases():
    table = pd.DataFrame(
        {
            "label": ["ref", "close", "far", "lonely"],
            "miou_mean": [0.6, 0.7, 0.9, 0.99],
            "miou_std": [0.1, 0.1, 0.1, math.nan],
            "n_finished": [3, 3, 3, 1],
        },
        index=["ref", "close", "far", "lonely"],
    )
    out = noise_comparison(table, "ref")
    assert list(out.index) == ["close", "far", "lonely"]
    assert out.loc["close", "t"] == pytest.approx(
        0.1 / math.sqrt(0.02 / 3)
    )  # 1.22: within the noise
    assert out.loc["close", "verdict"] == "within seed noise" and not out.loc["close", "exceeds"]
    assert out.loc["far", "t"] == pytest.approx(3.674, abs=1e-3) and out.loc["far", "exceeds"]
    assert out.loc["far", "diff"] == pytest.approx(0.3) and out.loc["far", "se"] == pytest.approx(
        0.08165, abs=1e-5
    )
    assert (
        out.loc["lonely", "verdict"].startswith("not testable") and not out.loc["lonely", "exceeds"]
    )
    # Welch's df = 4 for equal spreads and sizes; two-sided p of t = 3.674 on 4 df: 0.0213.
    assert out.loc["far", "df"] == pytest.approx(4.0)
    assert out.loc["far", "p"] == pytest.approx(0.02131, abs=1e-5)
    assert out.loc["close", "p"] == pytest.approx(0.2879, abs=1e-4)
    # A stricter level changes the verdict, not the statistic.
    strict = noise_comparison(table, "ref", alpha=0.01)
    assert not strict.loc["far", "exceeds"] and strict.loc["far", "t"] == out.loc["far", "t"]
    # The sign follows "experiment minus reference".
    assert noise_comparison(table, "far").loc["ref", "t"] == pytest.approx(-out.loc["far", "t"])


def test_noise_comparison_refusals(tree):
    table = experiment_table(_open(tree), "ablation")
    with pytest.raises(ValueError, match="reference"):
        noise_comparison(table, "zzz")
    with pytest.raises(ValueError, match="alpha"):
        noise_comparison(table, "a", alpha=0)
    with pytest.raises(ValueError, match="columns"):
        noise_comparison(table[["label"]], "a")
    # b and c have < 2 finished seeds: reported as not testable, no crash.
    out = noise_comparison(table, "a")
    assert out["verdict"].str.startswith("not testable").all()


def test_demo_experiments_come_from_the_plan(tmp_path):
    specs = demo_experiments()
    assert list(specs)[:4] == ["baseline", "pi", "pi_pa", "pi_pa_ho"]
    assert (
        specs["pi"]["groups"] == ["ablation", "variants"]
        and specs["pi_pa_ho"]["label"] == "+PI+PA+HO"
    )
    assert (
        "distill.disc_input=logits" in specs["official_pi_pa_ho"]["overrides"]
    )  # settings expanded
    with pytest.raises(ValueError, match=r"unknown experiment\(s\) \[.no_such_experiment.\]"):
        make_demo_runs(tmp_path, ["pi", "no_such_experiment"])
    with pytest.raises(ValueError, match="iters"):
        make_demo_runs(tmp_path, ["pi"], iters=0)
    with pytest.raises(ValueError, match="threads"):
        make_demo_runs(tmp_path, ["pi"], threads=0)
    assert not any(tmp_path.iterdir())  # refused before any work


def test_contrast_by_hand_and_parity_with_welch():
    table = pd.DataFrame(
        {
            "miou_mean": [0.5, 0.6, 0.52, 0.70, 0.9],
            "miou_std": [0.1, 0.1, 0.05, 0.05, math.nan],
            "n_finished": [3, 3, 2, 2, 1],
        },
        index=["a0", "a1", "b0", "b1", "lone"],
    )
    # (a1 - a0) - (b1 - b0) = 0.1 - 0.18 = -0.08; se^2 = 2 * 0.01 / 3 + 2 * 0.0025 / 2.
    out = contrast(table, ["a1", "b0"], ["a0", "b1"])
    assert out["value"] == pytest.approx(-0.08)
    assert out["se"] == pytest.approx(math.sqrt(0.02 / 3 + 0.0025))
    assert out["t"] == pytest.approx(-0.08 / math.sqrt(0.02 / 3 + 0.0025)) and not out["exceeds"]
    single = contrast(table, ["a1"], ["a0"])
    t, df = welch_t(0.6, 0.1, 3, 0.5, 0.1, 3)
    assert single["t"] == pytest.approx(t) and single["df"] == pytest.approx(df)
    assert single["p"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), df))
    assert contrast(table, ["lone"], ["a0"])["verdict"].startswith("not testable")
    with pytest.raises(ValueError, match="not in the table"):
        contrast(table, ["zz"], ["a0"])
    with pytest.raises(ValueError, match="plus and minus"):
        contrast(table, [], ["a0"])


def test_plateau_check_by_hand():
    from skdlib.analysis.stats import plateau_check

    rows = []
    # a: seeds rise 0.40 -> 0.405 and 0.50 -> 0.50 between iterations 75 and 100: +0.0025, flat.
    for seed, (at, last) in enumerate([(0.40, 0.405), (0.50, 0.50)]):
        for it, value in ((25, 0.1), (50, 0.3), (75, at), (100, last)):
            rows.append(("a", "A", seed, "finished", it, value))
    # b: +0.03 over the last quarter: still climbing.
    for it, value in ((30, 0.2), (60, 0.25), (90, 0.30), (120, 0.33)):
        rows.append(("b", "B", 0, "finished", it, value))
    # c: only a final record; d: not finished (ignored).
    rows.append(("c", "C", 0, "finished", 10, 0.5))
    rows.append(("d", "D", 0, "unfinished", 10, 0.5))
    curves = pd.DataFrame(rows, columns=["experiment", "label", "seed", "status", "iter", "miou"])
    table = plateau_check(curves)
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["a", "at_iter"] == 75 and table.loc["a", "rise"] == pytest.approx(0.0025)
    assert bool(table.loc["a", "at_plateau"]) and table.loc["a", "n_seeds"] == 2
    assert table.loc["b", "at_iter"] == 90 and table.loc["b", "rise"] == pytest.approx(0.03)
    assert not bool(table.loc["b", "at_plateau"])
    assert math.isnan(table.loc["c", "rise"]) and not bool(table.loc["c", "at_plateau"])
    with pytest.raises(ValueError, match="fraction"):
        plateau_check(curves, fraction=1.0)


def test_plateau_of_groups_lists_each_experiment_once_and_the_report_words_it(tmp_path):
    from skdlib.analysis.report import plateau_report
    from skdlib.analysis.stats import plateau_of_groups

    p = tmp_path / "quick"
    # flat: +0.005 over the last quarter (passes); climbing: +0.02 (fails); in two groups.
    for seed, (at, last) in enumerate([(0.60, 0.61), (0.70, 0.70)]):
        _run(p, f"flat/seed{seed}", miou=last, val=((50, 0.4), (75, at), (100, last)))
    _run(p, "climbing/seed0", miou=0.52, val=((75, 0.50), (100, 0.52)))
    index = {
        "experiments": [
            _entry("flat", ["ablation", "variants"], [(0, "finished"), (1, "finished")]),
            _entry("climbing", ["variants"], [(0, "finished")]),
        ]
    }
    runs = RunsTree(p, index, tmp_path)
    table = plateau_of_groups(runs, ["ablation", "variants"])
    assert list(table.index) == ["flat", "climbing"]  # flat once, where it first appears
    assert table.loc["flat", "rise"] == pytest.approx(0.005)
    assert table["at_plateau"].tolist() == [True, False]
    shown, verdict = plateau_report(runs, ["ablation", "variants"])
    assert shown["rise (points)"].tolist() == ["+0.500", "+2.000"]
    assert shown["at plateau"].tolist() == ["yes", "no"]
    assert verdict.startswith("**Not at a plateau:** climbing (of 2 settings)")
    assert list(shown.columns[:4]) == ["setting", "seeds", "at iteration", "last iteration"]
    assert plateau_report(runs, ["ablation"])[1] == ("All 1 settings pass the plateau rule.")
    with pytest.raises(ValueError, match="at least one"):
        plateau_of_groups(runs, [])


# --------------------------------------------------------------------------------------------------
# The tree: teachers, runs, paths
# --------------------------------------------------------------------------------------------------
def test_the_tree_finds_runs_teachers_and_configs(tree):
    runs = _open(tree)
    assert runs.profile == "quick" and runs.num_classes == 2
    assert runs.teachers == {"teacher": RunFolder(tree / "teacher")}
    assert runs.teacher() == runs.teacher("a") == RunFolder(tree / "teacher")
    assert runs.pretrain is None
    assert [e["name"] for e in runs.experiments("variants")] == ["b", "d"]
    assert runs.runs("a") == {s: RunFolder(tree / f"a/seed{s}") for s in range(3)}
    assert runs.run("d", 1) == RunFolder(tree / "d/seed1")
    assert runs.finished("b") == [RunFolder(tree / "b/seed0")]
    assert (runs.status("b", 0), runs.status("b", 1), runs.status("b", 2)) == (
        "finished",
        "unfinished",
        "failed",
    )
    assert runs.first_config("c") is None and runs.first_config("nope") is None
    with pytest.raises(ValueError, match=r"'nope' is not in the index \(\['a', 'b', 'c', 'd'\]\)"):
        runs.run("nope")
    with pytest.raises(ValueError, match="seed 7"):
        runs.run("a", 7)


def test_several_teachers_and_an_experiments_own_teacher(tree):
    index = load_index(tree)
    index["teachers"] = {
        "small": {"run_dir": "teacher", "status": "finished"},
        "large": {"run_dir": "../kept/large", "status": "finished"},
    }
    index["experiments"][0]["teacher"] = "large"  # a names a teacher of the mapping
    index["experiments"][1]["teacher_dir"] = "elsewhere/teacher"  # b gives its folder
    runs = RunsTree(tree, index, tree.parent)
    assert list(runs.teachers) == ["small", "large"]
    assert runs.teacher("a") == RunFolder(tree / "../kept/large")
    assert runs.teacher("b") == RunFolder(tree / "elsewhere/teacher")
    assert runs.teacher("d") == runs.teacher() == RunFolder(tree / "teacher")  # the first one
    assert teacher_summary(runs, "small")["miou"] == pytest.approx(0.8)
    with pytest.raises(
        ValueError, match=r"'huge' is not a teacher of the index \(\['small', 'large'\]\)"
    ):
        runs.teacher_entry("huge")


def test_the_teachers_of_an_index_the_pipeline_writes(tree):
    """The writer's layout with several teachers: every teacher by name, the default also under
    ``teacher`` (not the first listed here), each experiment's teacher and teacher_dir; the
    summary and curve of the teacher an experiment learns from."""
    _run(tree, "small", miou=0.7, val=((10, 0.65),))
    index = load_index(tree)
    small = {"run_dir": "small", "config_hash": "s", "status": "finished"}
    large = {"run_dir": "teacher", "config_hash": "l", "status": "finished"}
    index |= {"teachers": {"small": small, "large": large}, "teacher": large}
    for exp, (name, folder) in zip(
        index["experiments"], [("small", "small")] + [("large", "teacher")] * 3, strict=True
    ):
        exp |= {"teacher": name, "teacher_dir": folder}
    runs = RunsTree(tree, index, tree.parent)
    assert runs.teachers == {
        "small": RunFolder(tree / "small"),
        "large": RunFolder(tree / "teacher"),
    }
    assert runs.teacher() == RunFolder(tree / "teacher")  # the index's default, not the first
    assert runs.teacher("a") == RunFolder(tree / "small") and runs.teacher("b") == runs.teacher()
    assert runs.teacher_entry(experiment="a")["config_hash"] == "s"
    assert teacher_summary(runs, experiment="a")["miou"] == pytest.approx(0.7)
    assert teacher_summary(runs)["miou"] == pytest.approx(0.8)
    assert teacher_curve(runs, experiment="a")["miou"].tolist() == [0.65]
    assert teacher_curve(runs, "large")["iter"].tolist() == []  # the teacher's run logs no val
    assert teacher_summary(runs, experiment="nope") is None
    with pytest.raises(ValueError, match="not both"):
        runs.teacher_entry("small", experiment="a")
    with pytest.raises(ValueError, match=r"'nope' is not in the index"):
        runs.teacher("nope")


def test_paths_are_resolved_and_shown_relative_to_the_project(tree, tmp_path):
    runs = _open(tree)
    assert runs.resolve("data/embedded") == tmp_path / "data" / "embedded"
    assert runs.resolve("/abs/data") == Path("/abs/data")
    assert runs.display(tree / "a" / "seed0") == "quick/a/seed0"
    elsewhere = tmp_path / "other" / "runs" / "quick"
    outside = RunsTree(tree, runs.index, elsewhere, name="the demo tree")
    assert outside.display(tree / "a" / "seed0") == "the demo tree/a/seed0"
    assert outside.display("/somewhere/else/x/y") == "x/y"


def test_open_runs_reads_the_profile_and_says_so(tree, tmp_path):
    from skdlib.analysis.runs import open_runs

    runs = open_runs("quick", runs_root=".", repo=tmp_path)
    assert runs.profile_dir == tree.resolve() and runs.project_root == tmp_path
    assert runs.note == "Runs read from `./quick/` (profile `quick`)."
