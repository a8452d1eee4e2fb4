"""Tests of skdlib.experiments: the plan, the runs it makes, reuse/resume decisions, the smoke
pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

import skdlib.experiments as ex
import skdlib.experiments.executors as executors
import skdlib.experiments.kernels as kernels
import skdlib.experiments.pipeline as pipeline
from skdlib.experiments.runs import PORTABLE_HASH, portable_hash
from skdlib.train.config import config_hash, load_config, save_config
from skdlib.train.runfolder import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "configs" / "experiments.yaml"
NOTEBOOK = REPO / "book" / "training.md"
# What every invocation rewrites: the index and its lock file (the holder's pid and time).
INDEX_FILES = ("index.json", ".index.json.lock")

# The experiment table of the pipeline's contract: name -> (groups, label).
TABLE = {
    "baseline": (("ablation",), "baseline"),
    "pi": (("ablation", "variants"), "+PI"),
    "pi_pa": (("ablation", "variants"), "+PI+PA"),
    "pi_pa_ho": (("ablation",), "+PI+PA+HO"),
    "pi_mimic": (("variants",), "+PI+MIMIC"),
    "pi_at": (("variants",), "+PI+AT"),
    "pi_local": (("variants",), "+PI+local PA"),
    "pi_pa_node1": (("variants",), "+PI+PA (1x1 nodes)"),
    "pi_pa_maxhalf": (("variants",), "+PI+PA (authors' max, half-map nodes)"),
    "pi_l1": (("lambda",), "+PI (λ1 = 1)"),
    "pi_l3": (("lambda",), "+PI (λ1 = 3)"),
    "pi_pa_l1": (("lambda",), "+PI+PA (λ1 = 1)"),
    "pi_pa_l3": (("lambda",), "+PI+PA (λ1 = 3)"),
    "cwd": (("later",), "+CWD"),
    "dist": (("later",), "+DIST"),
    "official_pi": (("official_scaling",), "+PI (authors' code)"),
    "official_pi_pa": (("official",), "+PI+PA (authors' code)"),
    "official_pi_pa_ho": (("official",), "+PI+PA+HO (authors' code)"),
    "baseline_2x": (("convergence",), "baseline, 2x iterations"),
    "pi_pa_ho_2x": (("convergence",), "+PI+PA+HO, 2x iterations"),
    "pi_pa_2x": (("convergence",), "+PI+PA, 2x iterations"),
    "pi_2x": (("convergence",), "+PI, 2x iterations"),
    "cwd_2x": (("convergence",), "+CWD, 2x iterations"),
    "dist_2x": (("convergence",), "+DIST, 2x iterations"),
    "pi_unl0x": (("unlabeled",), "+PI, no pool"),
    "pi_unl1x": (("unlabeled",), "+PI, pool"),
    "pi_pa_ho_unl1x": (("unlabeled",), "+PI+PA+HO, pool"),
    "pi_unl1x_2x": (("unlabeled",), "+PI, pool, 2x iterations"),
    "pi_pa_ho_unl1x_2x": (("unlabeled",), "+PI+PA+HO, pool, 2x iterations"),
}
# The groups each profile runs: the paper profile leaves out the embedded-only unlabeled group;
# quick and gpu, whose recipe has no random scaling, leave out official_scaling (+PI again there).
_COMMON_GROUPS = {"ablation", "variants", "official", "lambda", "later", "convergence"}
PROFILE_GROUPS = {
    "quick": _COMMON_GROUPS | {"unlabeled"},
    "smoke": _COMMON_GROUPS | {"unlabeled", "official_scaling"},
    "paper": _COMMON_GROUPS | {"official_scaling"},
    "gpu": _COMMON_GROUPS | {"unlabeled"},
}
# The experiments that run all five seeds of the quick, paper and gpu profiles (the ablation's
# four settings and the baseline's convergence control); every other runs the first three.
FIVE_SEEDS = {"baseline", "pi", "pi_pa", "pi_pa_ho", "baseline_2x"}
SWITCHES = (
    "pixelwise",
    "pairwise",
    "holistic",
    "mimic",
    "attention",
    "local_pairwise",
    "cwd",
    "dist",
)
# Which switches each experiment turns on.
TERMS = {
    "baseline": set(),
    "pi": {"pixelwise"},
    "pi_pa": {"pixelwise", "pairwise"},
    "pi_pa_ho": {"pixelwise", "pairwise", "holistic"},
    "pi_mimic": {"pixelwise", "mimic"},
    "pi_at": {"pixelwise", "attention"},
    "pi_local": {"pixelwise", "local_pairwise"},
    "pi_pa_node1": {"pixelwise", "pairwise"},
    "pi_pa_maxhalf": {"pixelwise", "pairwise"},
    "pi_l1": {"pixelwise"},
    "pi_l3": {"pixelwise"},
    "pi_pa_l1": {"pixelwise", "pairwise"},
    "pi_pa_l3": {"pixelwise", "pairwise"},
    "cwd": {"cwd"},
    "dist": {"dist"},
    "official_pi": {"pixelwise"},
    "official_pi_pa": {"pixelwise", "pairwise"},
    "official_pi_pa_ho": {"pixelwise", "pairwise", "holistic"},
    "baseline_2x": set(),
    "pi_pa_ho_2x": {"pixelwise", "pairwise", "holistic"},
    "pi_pa_2x": {"pixelwise", "pairwise"},
    "pi_2x": {"pixelwise"},
    "cwd_2x": {"cwd"},
    "dist_2x": {"dist"},
    "pi_unl0x": {"pixelwise"},
    "pi_unl1x": {"pixelwise"},
    "pi_pa_ho_unl1x": {"pixelwise", "pairwise", "holistic"},
    "pi_unl1x_2x": {"pixelwise"},
    "pi_pa_ho_unl1x_2x": {"pixelwise", "pairwise", "holistic"},
}


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------
def test_plan_has_the_contracts_profiles_and_experiments() -> None:
    plan = ex.load_plan(PLAN)
    assert set(plan.profiles) == {"quick", "smoke", "paper", "gpu"}
    for name in ("quick", "paper", "gpu"):
        prof = plan.profile(name)
        assert (prof.seeds, prof.default_seeds) == ((0, 1, 2, 3, 4), 3), name
        seeds = {e.name: prof.seeds_of(e) for e in plan.experiments}
        assert seeds == {n: (0, 1, 2, 3, 4) if n in FIVE_SEEDS else (0, 1, 2) for n in TABLE}
    assert plan.profile("smoke").seeds == (0,)
    assert [e.name for e in plan.experiments] == list(TABLE)
    for exp in plan.experiments:
        assert (exp.groups, exp.label) == TABLE[exp.name]
        assert exp.description
    for name, groups in PROFILE_GROUPS.items():
        ran = {g for e in plan.select(None, name) for g in e.groups}
        assert ran == groups, name


@pytest.mark.parametrize("profile", ["quick", "smoke", "paper", "gpu"])
def test_every_run_of_every_profile_validates(profile: str, tmp_path: Path) -> None:
    plan = ex.load_plan(PLAN)
    runs = ex.build_runs(plan, profile, runs_root=tmp_path, project_root=REPO)
    prof = plan.profile(profile)
    experiments = {e.name: e for e in plan.experiments}
    ran = [name for name, (groups, _) in TABLE.items() if set(groups) & PROFILE_GROUPS[profile]]
    students = [s for s in runs if s.experiment is not None]
    assert [s.key for s in students] == [
        f"{name}/seed{seed}" for name in ran for seed in prof.seeds_of(experiments[name])
    ]
    # The runs the students need come first: each teacher (in the folder of its name, or its
    # kept one) after its own pretraining run (pretrain_<the first teacher that has it>, one for
    # the teachers that share it), then the students' pretraining run when the profile has one.
    needed: list[str] = []
    for name, entry in prof.teachers.items():
        first = next(n for n, t in prof.teachers.items() if t.pretrain == entry.pretrain)
        if entry.pretrain is not None and first == name:
            needed.append(f"pretrain_{name}")
        needed.append(name)
    needed += ["pretrain"] if prof.pretrain is not None else []
    assert [s.key for s in runs[: len(runs) - len(students)]] == needed
    by_key = {s.key: s for s in runs}
    teachers = {s.key: s for s in runs if s.is_teacher}
    assert list(teachers) == list(prof.teachers)
    for name, entry in prof.teachers.items():
        spec = teachers[name]
        assert spec.run_dir == (REPO / entry.dir if entry.dir else tmp_path / profile / name)
        assert not spec.config.distill.enabled and spec.config.model.teacher is None
        if entry.pretrain is not None:  # its backbone from its own pretraining run's
            first = next(n for n, t in prof.teachers.items() if t.pretrain == entry.pretrain)
            pre = by_key[f"pretrain_{first}"]
            assert not pre.is_teacher and pre.experiment is None
            assert pre.run_dir == (
                REPO / entry.pretrain.dir
                if entry.pretrain.dir
                else tmp_path / profile / f"pretrain_{first}"
            )
            m = spec.config.model
            assert m.student_pretrained == str(pre.run_dir / "checkpoints" / "final.pt")
            assert m.student_pretrained_source == pre.reuse_hash
    for spec in students:
        cfg = spec.config
        # Each student learns from the teacher its experiment names (else the default).
        assert spec.teacher == prof.teacher_of(experiments[spec.experiment].teacher).name
        teacher = teachers[spec.teacher]
        checkpoint = str(teacher.run_dir / "checkpoints" / "final.pt")
        assert spec.key == f"{spec.experiment}/seed{spec.seed}"
        assert spec.run_dir == tmp_path / profile / spec.experiment / f"seed{spec.seed}"
        assert cfg.model.teacher_checkpoint == checkpoint
        assert cfg.train.seed == spec.seed
        # The teacher run trains the architecture the students load as their teacher.
        assert cfg.model.teacher == teacher.config.model.student
        assert dict(cfg.model.teacher_options) == dict(teacher.config.model.student_options)
        assert {s for s in SWITCHES if getattr(cfg.distill, s)} == TERMS[spec.experiment], spec.key
        # Every path the notebook gets is absolute (it runs with the repository root as cwd).
        assert Path(cfg.data.root).is_absolute() and spec.config_path.is_absolute()
        assert cfg.data.unlabeled.root is None or Path(cfg.data.unlabeled.root).is_absolute()
    assert len({s.hash for s in students}) == len(students)  # no two runs share a config


def test_experiment_settings_match_the_table(tmp_path: Path) -> None:
    runs = {
        s.key: s.config
        for s in ex.build_runs(ex.load_plan(PLAN), "quick", runs_root=tmp_path, project_root=REPO)
    }
    base = load_config(REPO / "configs" / "quick.yaml")
    assert runs["pi_pa/seed0"].distill.node_size == base.distill.node_size == 2
    assert runs["pi_pa_node1/seed0"].distill.node_size == 1
    maxhalf = runs["pi_pa_maxhalf/seed0"].distill
    assert (maxhalf.pool, maxhalf.node_size, maxhalf.node_fraction) == ("max", 1, 0.5)
    official = load_config(REPO / "configs" / "official_code.yaml").distill
    # (official_pi is in official_scaling, which quick leaves out: see the next test.)
    assert "official_pi/seed1" not in runs
    for key in ("official_pi_pa", "official_pi_pa_ho"):
        cfg = runs[f"{key}/seed1"]
        d = cfg.distill
        assert (d.lambda_pa, d.pool, d.node_size, d.node_fraction) == (0.5, "max", 1, 0.5)
        assert (d.disc_use_image, d.disc_input, d.disc_input_batchnorm, d.disc_loss_scale) == (
            official.disc_use_image,
            official.disc_input,
            official.disc_input_batchnorm,
            official.disc_loss_scale,
        )
        # The quick recipe has no random scaling (official_augment: []): the official runs keep it.
        assert (cfg.data.scale_range, cfg.train.teacher_cache) == (base.data.scale_range, True)
        # What the quick size cannot change stays the profile's.
        assert (
            cfg.data.crop_size == base.data.crop_size
            and cfg.distill.disc_widths == base.distill.disc_widths
        )
    assert (
        runs["pi_pa_ho/seed0"].distill.lambda_pa == 10.0
    )  # the paper's weight outside the official group
    # The sensitivity study changes lambda1 alone, on both terms it weighs.
    for name, value in (("pi_l1", 1.0), ("pi_l3", 3.0)):
        assert runs[f"{name}/seed0"].distill.lambda_pi == value
    for name, value in (("pi_pa_l1", 1.0), ("pi_pa_l3", 3.0)):
        d = runs[f"{name}/seed0"].distill
        assert (d.lambda_pi, d.lambda_pa) == (value, value)
    # Later methods: the weights and temperatures of their sources.
    cwd, dist = runs["cwd/seed0"].distill, runs["dist/seed0"].distill
    assert (cwd.lambda_cwd, cwd.cwd_temperature) == (3.0, 4.0)
    assert (dist.lambda_dist, dist.dist_beta, dist.dist_gamma, dist.dist_temperature) == (
        1,
        1,
        1,
        1,
    )
    # The paper's question: the ablation's students learn from the teacher trained on their own
    # labelled scenes; the unlabeled chapter's from the one trained on many more.
    labelled = base.data.options["num_train"]
    assert runs["teacher"].data.options["num_train"] == labelled == 100
    assert runs["pi/seed0"].data.options["num_train"] == labelled
    assert runs["teacher_unlabeled"].data.options["num_train"] > labelled
    # A convergence control is its setting trained twice as long, nothing else changed.
    twice = {"max_iters": 2 * base.train.max_iters, "eval_every": 500, "checkpoint_every": 1000}
    assert twice["max_iters"] == 2000
    controls = ("baseline_2x", "pi_2x", "pi_pa_ho_2x", "cwd_2x", "dist_2x")
    for control in (*controls, "pi_unl1x_2x", "pi_pa_ho_unl1x_2x"):
        cfg, setting = runs[f"{control}/seed0"], runs[f"{control.removesuffix('_2x')}/seed0"]
        assert cfg.train == dataclasses.replace(setting.train, **twice), control
        assert (cfg.data, cfg.model, cfg.distill) == (
            setting.data,
            setting.model,
            setting.distill,
        ), control


def test_official_scaling_follows_the_profile_recipe(tmp_path: Path) -> None:
    # Profiles whose recipe scales at random keep the authors' 0.7-2.1 (no teacher cache, a scene
    # never comes again the same); quick and gpu have no random scaling and keep their recipe.
    # There official_pi would be +PI again: they leave out its group (official_scaling).
    plan = ex.load_plan(PLAN)
    for profile, scale, cache in (
        ("paper", (0.7, 2.1), False),
        ("smoke", (0.7, 2.1), False),
        ("quick", (1.0, 1.0), True),
        ("gpu", (1.0, 1.0), True),
    ):
        scaled = profile not in ("quick", "gpu")
        only = ["pi", "official_pi_pa", *(["official_pi"] if scaled else [])]
        runs = ex.build_runs(plan, profile, runs_root=tmp_path, project_root=REPO, only=only)
        by_name = {s.experiment: s.config for s in runs if s.experiment is not None}
        for name in only[1:]:
            official = by_name[name]
            assert (official.data.scale_range, official.train.teacher_cache) == (scale, cache), (
                profile,
                name,
            )
        assert (by_name["pi"].data.scale_range == scale) is not scaled, profile
        if not scaled:
            with pytest.raises(ex.PlanError, match=r"\['official_pi'\] are not in the groups"):
                ex.build_runs(
                    plan, profile, runs_root=tmp_path, project_root=REPO, only=["official_pi"]
                )
        assert ("official_pi" in {e.name for e in plan.select(None, profile)}) is scaled, profile


def test_command_line_sets_apply_to_every_run(tmp_path: Path) -> None:
    plan = ex.load_plan(PLAN)
    runs = ex.build_runs(
        plan,
        "paper",
        runs_root=tmp_path,
        project_root=REPO,
        sets=["data.name=camvid", f"data.root={tmp_path / 'camvid'}"],
        only=["pi"],
    )
    # The paper profile's teacher (no pretraining run) and pi's seeds.
    seeds = plan.profile("paper").seeds_of(next(e for e in plan.experiments if e.name == "pi"))
    assert [s.key for s in runs] == ["teacher", *(f"pi/seed{k}" for k in seeds)]
    assert {(s.config.data.name, s.config.data.root) for s in runs} == {
        ("camvid", str(tmp_path / "camvid"))
    }


def test_profiles_expand_named_settings_their_own_way(tmp_path: Path) -> None:
    import re

    plan = ex.load_plan(PLAN)
    group = [e.name for e in plan.experiments if "unlabeled" in e.groups]
    assert len(group) == 5
    for profile, labelled, per_step in (("quick", 100, 8), ("smoke", 8, 2), ("gpu", 100, 8)):
        specs = ex.build_runs(
            plan, profile, runs_root=tmp_path, project_root=REPO, only=[*group, "pi", "pi_2x"]
        )
        students = [s for s in specs if s.experiment is not None and s.seed == 0]
        assert {s.experiment for s in students if s.teacher == "teacher_unlabeled"} == set(group)
        runs = {s.experiment: s.config for s in students}
        assert runs["pi_2x"].train.max_iters == 2 * runs["pi"].train.max_iters, profile
        for name in group:
            cfg = runs[name]
            # The ablation's labelled data and recipe (its 2x control's for a 2x control), plus
            # a pool of unlabeled scenes (none for the 0x setting).
            recipe = runs["pi_2x" if name.endswith("_2x") else "pi"]
            assert cfg.data == dataclasses.replace(recipe.data, unlabeled=cfg.data.unlabeled)
            assert cfg.train == recipe.train, (profile, name)
            unl = cfg.data.unlabeled
            k = int(re.search(r"_unl(\d+)x", name).group(1))
            if k == 0:
                assert not unl.enabled and unl == recipe.data.unlabeled, (profile, name)
                continue
            # A pool of k x the labelled images, fresh scenes (generator seed 1), under the
            # repository, the same scene size as the labelled ones.
            options = dict(unl.options)
            assert options["num_train"] == k * labelled and options["seed"] == 1, (profile, name)
            labelled_options = dict(cfg.data.options)
            for key in ("height", "width", "small_object_scale"):
                assert options.get(key) == labelled_options.get(key), (profile, name, key)
            assert (unl.name, unl.batch_size) == ("embedded", per_step)
            assert Path(unl.root).is_absolute() and Path(unl.root).is_relative_to(REPO / "data")
    with pytest.raises(
        ex.PlanError, match=r"\['pi_unl1x'\] are not in the groups .* of profile 'paper'"
    ):
        ex.build_runs(plan, "paper", runs_root=tmp_path, project_root=REPO, only=["pi_unl1x"])
    assert "pi_unl1x" not in [e.name for e in plan.select(None, "paper")]


def _write_plan(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(PLAN.read_text())
    mutate(data)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # the first teacher is the default
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["profiles"]["quick"].update(seed=[0]),
            r"profiles.quick: unknown key\(s\) \['seed'\]",
        ),
        (
            lambda d: d["experiments"][0].update(label=""),
            r"experiments\[0\].label: expected a non-empty string",
        ),
        (
            lambda d: d["experiments"][1].update(name="pi pa"),
            r"experiments\[1\].name: expected a folder-safe name",
        ),
        (
            lambda d: d["experiments"][1].update(name="baseline"),
            r"duplicate experiment name 'baseline'",
        ),
        (
            lambda d: d["experiments"][1].update(name="teacher"),
            r"profiles.quick.teachers: \['teacher'\] also name experiments",
        ),
        (
            lambda d: d["experiments"][1].update(name="pretrain"),
            r"'pretrain' is a folder of the profile's and cannot name a run",
        ),
        (
            lambda d: d["experiments"][19].update(teacher="teacher_unlabelled"),
            r"experiments\[19\].teacher: unknown teacher 'teacher_unlabelled' for profile "
            r"'quick'; its teachers: teacher, teacher_unlabeled",
        ),
        (
            lambda d: d["profiles"]["quick"].update(teacher_config="configs/teacher_quick.yaml"),
            r"profiles.quick: \['teacher_config'\] are replaced by teachers:",
        ),
        (
            lambda d: d["profiles"]["quick"]["teachers"].update(other="teachr"),
            r"profiles.quick.teachers.other: 'teachr' names no teacher run of the profile",
        ),
        (
            lambda d: d["profiles"]["smoke"].update(teachers={"teacher": {"dir": "kept/x"}}),
            r"profiles.smoke.teachers.teacher: missing key\(s\) \['config'\]",
        ),
        (
            lambda d: d["profiles"]["smoke"].update(teachers={}),
            r"profiles.smoke.teachers: expected a mapping of teacher names",
        ),
        (
            lambda d: d["experiments"][2].update(overrides=["distill.holistic"]),
            r"must look like key=value",
        ),
        (lambda d: d["experiments"][9].update(settings=["oficial"]), r"unknown setting 'oficial'"),
        (
            lambda d: d["profiles"]["quick"].update(seeds=[0, 0]),
            r"seeds: expected a non-empty list of distinct",
        ),
        (lambda d: d.update(extra=1), r"unknown key\(s\) \['extra'\]"),
        (
            lambda d: d["experiments"][3].pop("groups"),
            r"experiments\[3\]: missing key\(s\) \['groups'\]",
        ),
        (
            lambda d: d["profiles"]["smoke"]["settings"].update(few_label=["train.max_iters=1"]),
            r"profiles.smoke.settings: \['few_label'\] name no setting of the plan",
        ),
        (
            lambda d: d["profiles"]["smoke"]["settings"].update(unlabeled_1x=["train.max_iters"]),
            r"profiles.smoke.settings.unlabeled_1x: overrides must look like key=value",
        ),
        (
            lambda d: d["profiles"]["paper"].update(groups=["ablation", "ablasion"]),
            r"profiles.paper.groups: no experiment is in group\(s\) \['ablasion'\]",
        ),
    ],
)
def test_bad_plans_fail_clearly(tmp_path: Path, mutate, message: str) -> None:
    with pytest.raises(ex.PlanError, match=message):
        ex.load_plan(_write_plan(tmp_path, mutate))


def test_bad_requests_fail_before_anything_runs(tmp_path: Path) -> None:
    plan = ex.load_plan(PLAN)
    with pytest.raises(ex.PlanError, match=r"unknown profile 'quik'.*quick, smoke, paper"):
        ex.build_runs(plan, "quik", runs_root=tmp_path, project_root=REPO)
    with pytest.raises(ex.PlanError, match=r"--only: unknown experiment\(s\) \['pi_ho'\]"):
        ex.build_runs(plan, "quick", runs_root=tmp_path, project_root=REPO, only=["pi_ho"])
    # A typo in an override names the run and the key, in seconds (no teacher trained first).
    with pytest.raises(
        ex.PlanError, match=r"run 'teacher'.*unknown key 'train.max_iter'.*did you mean"
    ):
        ex.build_runs(
            plan, "quick", runs_root=tmp_path, project_root=REPO, sets=["train.max_iter=5"]
        )
    bad = _write_plan(
        tmp_path, lambda d: d["experiments"][4].update(overrides=["distill.mimic=yes please"])
    )
    with pytest.raises(ex.PlanError, match=r"run 'pi_mimic/seed0'.*distill.mimic: expected bool"):
        ex.build_runs(ex.load_plan(bad), "quick", runs_root=tmp_path, project_root=REPO)
    with pytest.raises(FileNotFoundError, match="plan file not found"):
        ex.load_plan(tmp_path / "missing.yaml")
    args = ["run", "--profile", "quick", "--root", str(REPO), "--runs-root", str(tmp_path)]
    assert ex.main([*args, "--notebook", str(NOTEBOOK), "--set", "train.max_iter=5"]) == 2
    assert not (tmp_path / "quick").exists()


# --------------------------------------------------------------------------------------------------
# Reuse / retrain / resume decisions (files written by hand, nothing trained)
# --------------------------------------------------------------------------------------------------
def test_run_action_follows_the_folder(tmp_path: Path) -> None:
    spec = ex.build_runs(
        ex.load_plan(PLAN), "smoke", runs_root=tmp_path, project_root=REPO, only=["pi"]
    )[1]
    folder = spec.run_dir
    assert ex.run_action(spec) == ("train", "new run")
    folder.mkdir(parents=True)
    save_config(spec.config, folder / "config.yaml")
    assert (
        ex.run_action(spec)[0] == "resume"
    )  # started, no checkpoint yet: the loop starts it again
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"")
    assert ex.run_action(spec) == ("resume", "interrupted run: resuming from checkpoints/last.pt")
    # A summary written before runs recorded their identity: matched through its config.yaml.
    summary = {"finished": True, "config_hash": spec.hash}
    (folder / "summary.json").write_text(json.dumps(summary))
    assert ex.run_action(spec)[0] == "reuse"
    (folder / "summary.json").write_text(json.dumps({**summary, "config_hash": "0" * 16}))
    assert ex.run_action(spec)[0] == "retrain"  # the summary is not of this config.yaml
    summary = {"finished": True, "config_hash": spec.hash, PORTABLE_HASH: spec.reuse_hash}
    (folder / "summary.json").write_text(json.dumps(summary))
    assert ex.run_action(spec)[0] == "reuse"
    assert ex.run_action(spec, force=True) == ("retrain", "--force")
    (folder / "summary.json").write_text(json.dumps({**summary, PORTABLE_HASH: "0" * 16}))
    action, why = ex.run_action(spec)
    assert action == "retrain" and spec.reuse_hash in why
    # A partial run of another configuration is started over, not resumed.
    (folder / "summary.json").unlink()
    other = load_config(spec.config_path, [*spec.overrides, "train.lr=0.02"])
    save_config(other, folder / "config.yaml")
    action, why = ex.run_action(spec)
    assert action == "retrain" and portable_hash(other, dict(spec.roots)) in why


def test_failures_are_recorded_and_the_pipeline_goes_on(tmp_path: Path, monkeypatch) -> None:
    calls: list[dict] = []

    def fake(notebook, payload, cwd):
        calls.append(payload)
        Path(payload["run_dir"]).mkdir(parents=True, exist_ok=True)
        name = Path(payload["run_dir"]).parent.name
        if name == "pi":
            return {"status": "failed", "error": "RuntimeError: boom", "elapsed_s": 1.0}
        return {"status": "finished", "error": None, "elapsed_s": 1.0}

    monkeypatch.setattr(executors, "execute_notebook_run", fake)
    monkeypatch.setattr(pipeline, "_ensure_data", lambda runs, actions: 8)
    args = ["run", "--profile", "smoke", "--root", str(REPO), "--runs-root", str(tmp_path)]
    args += ["--notebook", str(NOTEBOOK), "--only", "baseline", "pi", "pi_pa", "--jobs", "1"]
    args += ["--fresh-kernels"]  # the faked papermill execution
    assert ex.main(args) == 1
    assert [Path(c["run_dir"]).relative_to(tmp_path / "smoke").as_posix() for c in calls] == [
        "pretrain_teacher",  # the teacher starts from its own pretraining run
        "teacher",
        "pretrain",  # the smoke students start from a pretraining run
        "baseline/seed0",
        "pi/seed0",
        "pi_pa/seed0",
    ]
    assert not calls[0]["resume"] and not calls[0]["force"]
    index = json.loads((tmp_path / "smoke" / "index.json").read_text())
    status = {e["name"]: e["runs"][0] for e in index["experiments"]}
    assert [e["name"] for e in index["experiments"]] == ["baseline", "pi", "pi_pa"]
    assert status["pi"]["status"] == "failed" and status["pi"]["error"] == "RuntimeError: boom"
    assert status["baseline"]["status"] == status["pi_pa"]["status"] == "finished"

    # A failed teacher: no student starts (nor the students' pretraining), every one is
    # recorded as failed; a failed pretraining of the teacher: the teacher does not start either.
    for failing, ran in (("teacher", ["pretrain_teacher", "teacher"]), ("pretrain_teacher", [])):

        def fail(nb, p, cwd, failing=failing):
            calls.append(Path(p["run_dir"]).name)
            if Path(p["run_dir"]).name == failing:
                return {"status": "failed", "error": "FileNotFoundError: x", "elapsed_s": 0.5}
            return {"status": "finished", "error": None, "elapsed_s": 0.5}

        calls.clear()
        monkeypatch.setattr(executors, "execute_notebook_run", fail)
        assert ex.main([*args, "--force"]) == 1
        assert calls == (ran or ["pretrain_teacher"]), failing
        index = json.loads((tmp_path / "smoke" / "index.json").read_text())
        assert index["teacher"]["status"] == "failed"
        error = "FileNotFoundError: x" if ran else "the pretrain_teacher run failed"
        assert index["teacher"]["error"] == error
        assert {r["error"] for e in index["experiments"] for r in e["runs"]} == {
            f"the {failing} run failed"
        }


def test_students_start_costliest_first(tmp_path: Path, monkeypatch) -> None:
    """Longest processing time first: the plan's order among equal costs, a critic's or a
    pool's run and twice the iterations before the rest."""
    plan = ex.load_plan(PLAN)
    runs = ex.build_runs(plan, "quick", runs_root=tmp_path, project_root=REPO)
    students = [s for s in runs if s.experiment is not None]
    cost = {s.experiment: ex.expected_cost(s) for s in students}
    assert cost["baseline"] == 1000 * 8  # iterations x images per step
    assert cost["pi_unl1x"] == 1000 * (8 + 8)  # and the pool's 8 unlabeled images
    assert cost["pi_pa_ho"] == pytest.approx(1000 * 8 * 1.8)  # and the critic's step
    assert cost["pi_pa_ho_unl1x_2x"] == pytest.approx(2000 * 16 * 1.8)
    ordered = ex.longest_first(students)
    assert ordered[0].key == "pi_pa_ho_unl1x_2x/seed0"
    assert [ex.expected_cost(s) for s in ordered] == sorted(cost[s.experiment] for s in ordered)[
        ::-1
    ]
    equal = [s.key for s in ordered if s.experiment in ("baseline", "pi", "pi_pa")]
    assert equal == [s.key for s in students if s.experiment in ("baseline", "pi", "pi_pa")]

    started: list[str] = []
    trained: list[str] = []
    fake = _fake_training(trained)

    def record(notebook, payload, cwd):
        started.append(Path(payload["run_dir"]).relative_to(tmp_path / "smoke").as_posix())
        return fake(notebook, payload, cwd)

    monkeypatch.setattr(executors, "execute_notebook_run", record)
    monkeypatch.setattr(pipeline, "_ensure_data", lambda runs, actions: 8)
    args = ["run", "--profile", "smoke", "--root", str(REPO), "--runs-root", str(tmp_path)]
    args += ["--notebook", str(NOTEBOOK), "--only", "baseline", "pi_pa_ho", "--jobs", "1"]
    assert ex.main([*args, "--fresh-kernels"]) == 0
    assert started[-2:] == ["pi_pa_ho/seed0", "baseline/seed0"]  # the plan has them the other way


def test_a_failed_teacher_fails_only_its_students(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []

    def fake(notebook, payload, cwd):
        key = Path(payload["run_dir"]).relative_to(tmp_path / "smoke").as_posix()
        calls.append(key)
        if key == "teacher_unlabeled":
            return {"status": "failed", "error": "RuntimeError: boom", "elapsed_s": 1.0}
        return {"status": "finished", "error": None, "elapsed_s": 1.0}

    monkeypatch.setattr(executors, "execute_notebook_run", fake)
    monkeypatch.setattr(pipeline, "_ensure_data", lambda runs, actions: 8)
    args = ["run", "--profile", "smoke", "--root", str(REPO), "--runs-root", str(tmp_path)]
    args += ["--notebook", str(NOTEBOOK), "--only", "baseline", "pi_unl1x", "--jobs", "1"]
    assert ex.main([*args, "--fresh-kernels"]) == 1
    assert calls == [
        "pretrain_teacher",
        "teacher",
        "teacher_unlabeled",
        "pretrain",
        "baseline/seed0",
    ]
    index = json.loads((tmp_path / "smoke" / "index.json").read_text())
    runs = {e["name"]: e["runs"][0] for e in index["experiments"]}
    assert runs["baseline"]["status"] == "finished"
    assert runs["pi_unl1x"]["error"] == "the teacher_unlabeled run failed"
    assert index["teachers"]["teacher_unlabeled"]["status"] == "failed"


def test_thread_counts_come_from_the_profile_or_the_command_line(tmp_path, monkeypatch) -> None:
    calls: list[dict] = []

    def fake(notebook, payload, cwd):
        calls.append(payload)
        return {"status": "finished", "error": None, "elapsed_s": 0.0}

    monkeypatch.setattr(executors, "execute_notebook_run", fake)
    monkeypatch.setattr(pipeline, "_ensure_data", lambda runs, actions: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # never read: the profile decides
    quick = ex.load_plan(PLAN).profile("quick")
    assert (quick.jobs, quick.threads, quick.teacher_threads) == (2, 1, 2)
    # A copy of the project: the quick profile keeps its teacher in the project (kept/quick).
    root = _copy_project(tmp_path / "project", None)
    args = ["run", "--profile", "quick", "--root", str(root), "--runs-root", str(tmp_path)]
    args += ["--notebook", str(NOTEBOOK), "--only", "baseline", "--jobs", "1", "--fresh-kernels"]
    ex.main(args)
    # The teacher's pretraining, the teacher, the students' pretraining, then baseline's seeds.
    baseline = next(e for e in ex.load_plan(PLAN).experiments if e.name == "baseline")
    students = len(quick.seeds_of(baseline))
    assert students == 5 and [c["threads"] for c in calls] == [2] * 3 + [1] * students
    calls.clear()
    ex.main([*args, "--force", "--threads", "3", "--teacher-threads", "4"])
    assert [c["threads"] for c in calls] == [4] * 3 + [3] * students
    assert ex.main([*args, "--threads", "0"]) == 2


def test_the_gpu_profile_is_the_quick_recipe_at_gpu_size(tmp_path: Path) -> None:
    """The gpu profile: the quick recipe at twice the scene side and twice the widths, with AMP
    and channels-last on CUDA, its data in its own folders."""
    plan = ex.load_plan(PLAN)
    runs = ex.build_runs(plan, "gpu", runs_root=tmp_path, project_root=REPO, only=["pi_pa_ho"])
    quick = ex.build_runs(plan, "quick", runs_root=tmp_path, project_root=REPO, only=["pi_pa_ho"])
    keys = ["pretrain_teacher", "teacher", "pretrain", *(f"pi_pa_ho/seed{k}" for k in range(5))]
    assert [s.key for s in runs] == [s.key for s in quick] == keys
    for spec, small in zip(runs, quick, strict=True):
        cfg, q = spec.config, small.config
        assert (cfg.train.device, cfg.train.amp, cfg.train.channels_last) == ("cuda", "fp16", True)
        options, q_options = dict(cfg.data.options), dict(q.data.options)
        assert (options["height"], options["width"]) == (
            2 * q_options["height"],
            2 * q_options["width"],
        )
        assert options["num_train"] == q_options["num_train"]
        assert Path(cfg.data.root).name.startswith("embedded_gpu")
        assert cfg.data.crop_size == tuple(2 * c for c in q.data.crop_size)
        width, q_width = cfg.model.student_options["width"], q.model.student_options["width"]
        assert cfg.model.student == q.model.student and width == 2 * q_width
        assert (cfg.train.max_iters, cfg.train.optimizer) == (q.train.max_iters, q.train.optimizer)
    assert runs[keys.index("pi_pa_ho/seed0")].config.data.batch_size == 8


def test_the_local_executor_needs_a_notebook(tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    text = PLAN.read_text()
    plan.write_text(text.replace("\nnotebook: book/training.md\n", "\n"))
    with pytest.raises(ex.PlanError, match="--notebook"):
        ex.run_pipeline("smoke", plan_path=plan, project_root=REPO, runs_root=tmp_path)
    assert not (tmp_path / "smoke").exists()


def test_the_plan_names_its_training_notebook(tmp_path) -> None:
    plan = ex.load_plan(PLAN)
    assert plan.notebook is not None and (REPO / plan.notebook).is_file()
    bad = tmp_path / "plan.yaml"
    bad.write_text(PLAN.read_text().replace("notebook: book/training.md", "notebook: [a]"))
    with pytest.raises(ex.PlanError, match="notebook"):
        ex.load_plan(bad)


# --------------------------------------------------------------------------------------------------
# The smoke profile end to end (real papermill executions of book/training.md)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pipeline")
    # Two scenes (4 with flips): the 6 images a 3-iteration student draws make its teacher's
    # outputs worth a store (the pipeline builds none for fewer draws than it would hold).
    sets = [
        f"data.root={root / 'data'}",
        "data.options={height: 128, width: 128, num_train: 2, num_val: 4}",
    ]
    # Two student runs at a time (worker processes), as `make book` runs them on two cores.
    result = ex.run_pipeline(
        "smoke",
        plan_path=PLAN,
        project_root=REPO,
        notebook=NOTEBOOK,
        runs_root=root / "runs",
        only=["baseline", "pi_pa_ho"],
        jobs=2,
        sets=sets,
    )
    return {
        "root": root / "runs" / "smoke",
        "sets": sets,
        "runs_root": root / "runs",
        "result": result,
    }


def _injected_parameters(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join(
        "".join(c["source"])
        for c in cells
        if "injected-parameters" in c["metadata"].get("tags", [])
    )


@pytest.mark.slow
def test_smoke_pipeline_writes_runs_index_and_notebooks(smoke) -> None:
    root = smoke["root"]
    assert smoke["result"]["failed"] == []
    index = json.loads((root / "index.json").read_text())
    assert index["profile"] == "smoke" and index["num_classes"] == 8
    assert index["data"]["name"] == "embedded"
    assert index["teacher"]["run_dir"] == "teacher" and index["teacher"]["status"] == "finished"
    assert index["teacher"]["config"] == "configs/teacher_smoke.yaml"
    assert [e["name"] for e in index["experiments"]] == ["baseline", "pi_pa_ho"]
    entry = index["experiments"][1]
    assert (entry["name"], entry["groups"], entry["label"]) == (
        "pi_pa_ho",
        ["ablation"],
        "+PI+PA+HO",
    )
    assert entry["config"] == "configs/smoke.yaml"
    assert (entry["teacher"], entry["teacher_dir"]) == ("teacher", "teacher")
    assert list(index["teachers"]) == ["teacher"]  # the one the selected experiments learn from
    (run,) = entry["runs"]
    assert (run["seed"], run["run_dir"], run["status"]) == (0, "pi_pa_ho/seed0", "finished")
    specs = {
        s.key: s
        for s in ex.build_runs(
            ex.load_plan(PLAN),
            "smoke",
            runs_root=smoke["runs_root"],
            sets=smoke["sets"],
            only=["baseline", "pi_pa_ho"],
        )
    }
    for key in ("teacher", "baseline/seed0", "pi_pa_ho/seed0"):
        folder = root / key
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["finished"] and summary["config_hash"] == specs[key].hash
        injected = _injected_parameters(folder / "notebook.ipynb")
        assert f'RUN_DIR = "{folder}"' in injected and 'MODE = "train"' in injected
    assert run["config_hash"] == specs["pi_pa_ho/seed0"].hash
    student = load_checkpoint(root / "pi_pa_ho" / "seed0" / "checkpoints" / "last.pt")
    assert student["critic"] is not None  # the holistic term's critic is kept for Fig. 3
    assert (
        load_checkpoint(root / "baseline" / "seed0" / "checkpoints" / "last.pt")["critic"] is None
    )
    # The student was distilled from the teacher run's weights, whose outputs it read from the
    # store the pipeline built after the teacher (a parameter of its notebook, not its config).
    assert specs["pi_pa_ho/seed0"].config.model.teacher_checkpoint == str(
        root / "teacher" / "checkpoints" / "final.pt"
    )
    stores = json.loads((root / "pi_pa_ho" / "seed0" / "env.json").read_text())["teacher_stores"]
    assert list(stores) == ["augment"]
    assert Path(stores["augment"]).parent == root / "teacher_outputs"
    injected = _injected_parameters(root / "pi_pa_ho" / "seed0" / "notebook.ipynb")
    assert f'TEACHER_STORE = "{root / "teacher_outputs"}"' in injected


@pytest.mark.slow
def test_second_invocation_reuses_every_run(smoke, monkeypatch) -> None:
    root = smoke["root"]
    before = {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.name not in INDEX_FILES
    }

    def refuse(notebook, payload, cwd):
        raise AssertionError(f"no run should execute, got {payload['run_dir']}")

    monkeypatch.setattr(executors, "execute_notebook_run", refuse)
    monkeypatch.setattr(
        kernels.WarmKernel, "run", lambda self, payload: refuse(None, payload, None)
    )
    result = ex.run_pipeline(
        "smoke",
        plan_path=PLAN,
        project_root=REPO,
        notebook=NOTEBOOK,
        runs_root=smoke["runs_root"],
        only=["baseline", "pi_pa_ho"],
        jobs=2,
        sets=smoke["sets"],
    )
    assert result["failed"] == [] and result["actions"] == dict.fromkeys(
        ["pretrain_teacher", "teacher", "pretrain", "baseline/seed0", "pi_pa_ho/seed0"], "reuse"
    )
    after = {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.name not in INDEX_FILES
    }
    assert after == before


@pytest.mark.slow
def test_interrupted_run_is_resumed(smoke) -> None:
    """Rewind a finished run to its state after iteration 1 (as if killed there): the pipeline
    resumes it."""
    folder = smoke["root"] / "pi_pa_ho" / "seed0"
    state = load_checkpoint(folder / "checkpoints" / "last.pt")
    state["iteration"] = 1
    save_checkpoint(folder / "checkpoints" / "last.pt", state)
    (folder / "summary.json").unlink()
    (folder / "checkpoints" / "final.pt").unlink()
    first_record = (folder / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(first_record)["iter"] == 1

    result = ex.run_pipeline(
        "smoke",
        plan_path=PLAN,
        project_root=REPO,
        notebook=NOTEBOOK,
        runs_root=smoke["runs_root"],
        only=["pi_pa_ho"],
        jobs=1,
        sets=smoke["sets"],
    )
    assert (
        result["actions"]
        == {
            "pretrain_teacher": "reuse",
            "teacher": "reuse",
            "pretrain": "reuse",
            "pi_pa_ho/seed0": "resume",
        }
        and result["failed"] == []
    )
    assert "RESUME = True" in _injected_parameters(folder / "notebook.ipynb")
    # --only rewrote the index without losing the experiment it did not name.
    index = json.loads((smoke["root"] / "index.json").read_text())
    assert [e["name"] for e in index["experiments"]] == ["baseline", "pi_pa_ho"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["finished"] and (folder / "checkpoints" / "final.pt").is_file()
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    train_iters = [r["iter"] for r in records if r.get("split") != "val"]
    assert train_iters == [1, 2, 3]  # iteration 1 kept, 2 and 3 trained again, nothing twice
    assert (folder / "metrics.jsonl").read_text().splitlines()[0] == first_record
    assert torch.load(folder / "checkpoints" / "final.pt", weights_only=True)


def _copy_project(root: Path, teacher_dirs: dict[str, str] | None) -> Path:
    """A project folder with the repository's configs and a plan whose smoke profile keeps its
    teachers in ``teacher_dirs`` (by name; None: the plan as it is)."""
    import shutil

    shutil.copytree(REPO / "configs", root / "configs")
    plan = yaml.safe_load(PLAN.read_text())
    for name, folder in (teacher_dirs or {}).items():
        plan["profiles"]["smoke"]["teachers"][name]["dir"] = folder
    (root / "configs" / "experiments.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return root


def test_teachers_kept_in_the_repository_are_reused_in_any_checkout(tmp_path, monkeypatch):
    trained: list[str] = []
    monkeypatch.setattr(executors, "execute_notebook_run", _fake_training(trained))
    monkeypatch.setattr(pipeline, "_ensure_data", lambda runs, actions: 8)
    dirs = {"teacher": "teachers/smoke", "teacher_unlabeled": "teachers/smoke_unlabeled"}
    first = _copy_project(tmp_path / "a", dirs)
    # Two experiments learning from the profile's two teachers.
    args = ["run", "--profile", "smoke", "--notebook", str(NOTEBOOK), "--only", "baseline"]
    args += ["pi_unl1x", "--jobs", "1", "--fresh-kernels"]
    assert ex.main([*args, "--root", str(first)]) == 0
    # The first teacher's own pretraining, the two teachers, the students' pretraining, students.
    assert trained == ["pretrain_teacher", "smoke", "smoke_unlabeled", "pretrain", "seed0", "seed0"]
    index = json.loads((first / "runs" / "smoke" / "index.json").read_text())
    specs = ex.build_runs(ex.load_plan(first / "configs" / "experiments.yaml"), "smoke",
                          project_root=first, only=["baseline", "pi_unl1x"])  # fmt: skip
    teachers = [s for s in specs if s.is_teacher]
    for spec, name in zip(teachers, dirs, strict=True):
        kept = first / dirs[name]
        summary = json.loads((kept / "summary.json").read_text())
        assert spec.key == name and spec.run_dir == kept.resolve()
        assert summary["portable_config_hash"] and summary["config_hash"] == spec.hash
        entry = index["teachers"][name]
        assert (first / "runs" / "smoke" / entry["run_dir"]).resolve() == kept.resolve()
    assert index["teacher"] == index["teachers"]["teacher"]  # the default one
    experiments = {e["name"]: e for e in index["experiments"]}
    assert experiments["baseline"]["teacher_dir"] == "../../teachers/smoke"
    assert experiments["pi_unl1x"]["teacher"] == "teacher_unlabeled"
    assert experiments["pi_unl1x"]["teacher_dir"] == "../../teachers/smoke_unlabeled"

    # Another checkout (other absolute paths), the kept folders copied with it: reused.
    import shutil

    second = _copy_project(tmp_path / "b", dirs)
    for folder in dirs.values():
        shutil.copytree(first / folder, second / folder)
    trained.clear()
    assert ex.main([*args, "--root", str(second)]) == 0
    # The kept teachers are not trained again (the runs tree's pretraining runs were not copied).
    assert trained == ["pretrain_teacher", "pretrain", "seed0", "seed0"]
    # A teacher configuration that differs: trained again; --teacher-only trains every teacher
    # (the pretraining run, which --set does not reach, is reused) and stops.
    trained.clear()
    assert ex.main([*args, "--root", str(second), "--teacher-only", "--set", "train.lr=0.02"]) == 0
    assert trained == ["smoke", "smoke_unlabeled"]
    trained.clear()
    only_baseline = [*args[: args.index("pi_unl1x")], *args[args.index("pi_unl1x") + 1 :]]
    assert ex.main([*only_baseline, "--root", str(second), "--teacher-only"]) == 0
    assert trained == ["smoke", "smoke_unlabeled"]  # every teacher, whatever --only names


def _fake_training(trained: list[str]):
    """An executor's notebook run that writes a finished run folder without training."""

    def fake(notebook, payload, cwd):
        cfg = load_config(payload["config"], payload["overrides"])
        folder = Path(payload["run_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, folder / "config.yaml")
        summary = {"finished": True, "config_hash": config_hash(cfg)}
        (folder / "summary.json").write_text(json.dumps(summary))
        trained.append(folder.name)
        return {"status": "finished", "error": None, "elapsed_s": 0.0}

    return fake


@pytest.mark.parametrize("runs_inside", [True, False])
def test_a_moved_project_and_runs_tree_reuse_every_run(tmp_path, monkeypatch, runs_inside, capsys):
    """A finished tree, copied with its project to another path (the runs inside the project,
    or beside it as a tree mounted elsewhere): `status` says reuse for every run, and the
    pipeline trains nothing."""
    import shutil

    trained: list[str] = []
    monkeypatch.setattr(executors, "execute_notebook_run", _fake_training(trained))
    monkeypatch.setattr(pipeline, "_ensure_data", lambda runs, actions: 8)
    first = _copy_project(tmp_path / "a" / "project", None)
    runs = "runs" if runs_inside else str(tmp_path / "a" / "runs")
    args = ["--profile", "smoke", "--only", "baseline", "pi_pa_ho"]
    run = ["run", "--notebook", str(NOTEBOOK), "--jobs", "1", "--fresh-kernels"]
    assert ex.main([*run, *args, "--root", str(first), "--runs-root", runs]) == 0
    # The teacher's pretraining, the teacher, the students' pretraining, two students.
    assert trained == ["pretrain_teacher", "teacher", "pretrain", "seed0", "seed0"]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    second = tmp_path / "b" / "project"
    moved = "runs" if runs_inside else str(tmp_path / "b" / "runs")
    capsys.readouterr()
    assert ex.main(["status", *args, "--root", str(second), "--runs-root", moved]) == 0
    lines = capsys.readouterr().out.splitlines()
    unused = [line for line in lines if line.startswith("teacher_unlabeled")]
    assert len(unused) == 1 and "no selected experiment learns from it" in unused[0], unused
    lines = [line for line in lines if line not in unused]  # the teacher these runs never needed
    assert len(lines) == 5 and all(line.split()[1] == "reuse" for line in lines), lines
    trained.clear()
    assert ex.main([*run, *args, "--root", str(second), "--runs-root", moved]) == 0
    assert trained == []
    spec = ex.build_runs(ex.load_plan(second / "configs" / "experiments.yaml"), "smoke",
                         runs_root=moved, project_root=second, only=["pi_pa_ho"])[-1]  # fmt: skip
    summary = json.loads((spec.run_dir / "summary.json").read_text())
    assert summary[PORTABLE_HASH] == spec.reuse_hash and summary["config_hash"] != spec.hash


@pytest.mark.slow
@pytest.mark.parametrize("runs_inside", [True, False])
def test_every_run_has_one_identity_wherever_the_project_lies(tmp_path, runs_inside) -> None:
    """Every run build_runs makes (teachers' own pretraining runs, several teachers, one kept in
    the project, the students' pretraining, students of each teacher) has the same identity in
    two checkouts at two paths, while its config hash (absolute paths) differs; the store's
    folder reaches a student as an execution parameter, never in its configuration."""

    def project(root: Path) -> tuple[Path, str]:
        _copy_project(root, {"teacher_unlabeled": "kept/smoke/teacher_unlabeled"})
        plan = yaml.safe_load((root / "configs" / "experiments.yaml").read_text())
        start = {"config": "configs/pretrain_smoke.yaml", "overrides": ["train.max_iters=2"]}
        plan["profiles"]["smoke"]["teachers"]["teacher"]["pretrain"] = start
        (root / "configs" / "experiments.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
        return root, "runs" if runs_inside else str(root.parent / "runs")

    specs = []
    for side in ("a", "b"):
        root, runs = project(tmp_path / side / "project")
        plan = ex.load_plan(root / "configs" / "experiments.yaml")
        specs.append(ex.build_runs(plan, "smoke", runs_root=runs, project_root=root))
    first, second = ({s.key: s for s in side} for side in specs)
    assert list(first) == list(second)
    assert {"pretrain_teacher", "teacher", "teacher_unlabeled", "pretrain", "pi_unl1x/seed0"} <= {
        *first
    }
    assert first["teacher_unlabeled"].kept and not first["teacher"].kept
    for key, spec in first.items():
        assert spec.reuse_hash == second[key].reuse_hash, key
        if spec.experiment is not None:  # its teacher's and pretraining's paths moved with it
            assert spec.hash != second[key].hash, key
    store = tmp_path / "a" / "runs" / "smoke" / "teacher_outputs"
    res = pipeline._Resources(1, None, 1, 1, 1, None, ex.SlurmOptions())
    student = first["pi_unl1x/seed0"]
    payload = pipeline._payload(student, "train", 1, res, forced=False, progress=False, store=store)
    assert payload["teacher_store"] == str(store) and payload["config_hash"] == student.reuse_hash
    assert "teacher_outputs" not in json.dumps(dataclasses.asdict(student.config), default=str)


def test_the_same_commit_gives_bit_identical_scores(tmp_path) -> None:
    """Two smoke pipelines from scratch (papermill runs, two at a time, thread counts from the
    profile): every run's scores and final weights are identical."""
    only = ["baseline", "pi_pa_ho", "pi_unl1x"]
    trees = []
    for name in ("first", "second"):
        root = tmp_path / name
        result = ex.run_pipeline(
            "smoke",
            plan_path=PLAN,
            project_root=REPO,
            data_base=root,
            notebook=NOTEBOOK,
            runs_root=root / "runs",
            only=only,
            # 3 scenes: a student's 6 draws make a store of their 6 (scene, flip) pairs. Beside
            # the data sets the configs place under the data base (root/data/...), not above them.
            sets=[
                f"data.root={root / 'data' / 'embedded_labelled'}",
                "data.options={height: 128, width: 128, num_train: 3, num_val: 4}",
            ],
        )
        assert result["failed"] == []
        trees.append(root / "runs" / "smoke")
    # Two teachers: pi_unl1x learns from the smoke profile's second one.
    index = json.loads((trees[0] / "index.json").read_text())
    assert list(index["teachers"]) == ["teacher", "teacher_unlabeled"]
    assert {e["name"]: e["teacher_dir"] for e in index["experiments"]} == {
        "baseline": "teacher",
        "pi_pa_ho": "teacher",
        "pi_unl1x": "teacher_unlabeled",
    }
    # Each teacher's store of the labelled scenes is read; the pool's (8 scenes) is not built:
    # the one run that draws from it (3 iterations x 2 images) meets fewer images than it holds.
    for name in ("pi_pa_ho", "pi_unl1x"):
        env = json.loads((trees[0] / name / "seed0" / "env.json").read_text())
        assert list(env["teacher_stores"]) == ["augment"], name
    assert len(list((trees[0] / "teacher_outputs").glob("*/manifest.json"))) == 2
    keys = ["pretrain_teacher", "teacher", "teacher_unlabeled", "pretrain"]
    keys += [f"{name}/seed0" for name in only]
    for key in keys:
        a, b = (json.loads((tree / key / "summary.json").read_text()) for tree in trees)
        for field in ("miou", "pixel_acc", "class_iou"):
            assert a[field] == b[field], (key, field)
        weights = [torch.load(t / key / "checkpoints" / "final.pt") for t in trees]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), key
    env = json.loads((trees[0] / "baseline" / "seed0" / "env.json").read_text())
    assert env["threads"] == ex.load_plan(PLAN).profile("smoke").threads


def test_status_shows_every_teacher(tmp_path: Path, capsys) -> None:
    args = ["status", "--profile", "smoke", "--root", str(REPO), "--runs-root", str(tmp_path)]
    assert ex.main([*args, "--only", "pi"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "pretrain_teacher",
        "teacher",
        "teacher_unlabeled",
        "pretrain",
        "pi/seed0",
    ]
    assert "no selected experiment learns from it" in lines[2]
    assert not any("learns from" in line for line in (*lines[:2], *lines[3:]))


def test_students_start_from_the_pretraining_run_and_follow_it(tmp_path: Path) -> None:
    import dataclasses

    plan = ex.load_plan(PLAN)
    runs = ex.build_runs(plan, "smoke", runs_root=tmp_path, project_root=REPO, only=["pi"])
    assert [s.key for s in runs] == ["pretrain_teacher", "teacher", "pretrain", "pi/seed0"]
    teacher, pre, student = runs[1:]
    assert pre.experiment is None and pre.config.data.options["seed"] == 2  # its own source task
    m = student.config.model
    assert m.student_pretrained == str(pre.run_dir / "checkpoints" / "final.pt")
    assert m.student_pretrained_prefix == "backbone."
    assert (m.teacher_source, m.student_pretrained_source) == (teacher.reuse_hash, pre.reuse_hash)
    # Another pretraining (or teacher) configuration makes other students: they train again.
    prof = plan.profile("smoke")
    changed = dataclasses.replace(prof.pretrain, overrides=("train.max_iters=5",))
    other = dataclasses.replace(
        plan, profiles={**plan.profiles, "smoke": dataclasses.replace(prof, pretrain=changed)}
    )
    again = ex.build_runs(other, "smoke", runs_root=tmp_path, project_root=REPO, only=["pi"])
    assert again[2].hash != pre.hash and again[3].hash != student.hash
    assert again[1].hash == teacher.hash and again[0].hash == runs[0].hash


def test_teachers_start_from_their_own_pretraining_shared_when_equal(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        teachers = data["profiles"]["smoke"]["teachers"]
        start = {"config": "configs/pretrain_smoke.yaml", "overrides": ["train.max_iters=2"]}
        for entry in teachers.values():
            if isinstance(entry, dict):
                entry["pretrain"] = dict(start)

    plan = ex.load_plan(_write_plan(tmp_path, mutate))
    runs = ex.build_runs(
        plan, "smoke", runs_root=tmp_path / "runs", project_root=REPO, all_teachers=True
    )
    keys = [s.key for s in runs if s.experiment is None]
    # one pretraining run for the two teachers (the same one), before them; then the students'
    assert keys == ["pretrain_teacher", "teacher", "teacher_unlabeled", "pretrain"]
    pre = runs[0]
    assert not pre.is_teacher and pre.config.data.options["seed"] == 2
    for spec in runs[1:3]:
        m = spec.config.model
        assert m.student_pretrained == str(pre.run_dir / "checkpoints" / "final.pt")
        assert (m.student_pretrained_source, m.student_pretrained_prefix) == (
            pre.reuse_hash,
            "backbone.",
        )
    # A selection that needs only the second teacher trains the same pretraining folder.
    only = ex.build_runs(
        plan, "smoke", runs_root=tmp_path / "runs", project_root=REPO, only=["pi_unl1x"]
    )
    shared = [s for s in only if s.key.startswith("pretrain_")]
    assert [s.key for s in shared] == ["pretrain_teacher"] and shared[0].run_dir == pre.run_dir
    with pytest.raises(ex.PlanError, match=r"teachers.teacher.pretrain: missing key"):
        ex.load_plan(
            _write_plan(
                tmp_path,
                lambda d: d["profiles"]["smoke"]["teachers"]["teacher"].update(pretrain={}),
            )
        )


def test_experiments_run_their_own_number_of_seeds(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["profiles"]["smoke"].update(seeds=[3, 4, 5, 6], default_seeds=2)
        for exp in data["experiments"]:
            if exp["name"] == "baseline":
                exp["seeds"] = 3
            if exp["name"] == "pi":
                exp["seeds"] = 9  # more than the profile lists: all of them

    plan = ex.load_plan(_write_plan(tmp_path, mutate))
    runs = ex.build_runs(
        plan,
        "smoke",
        runs_root=tmp_path / "runs",
        project_root=REPO,
        only=["baseline", "pi", "cwd"],
    )
    seeds = {}
    for spec in runs:
        if spec.experiment is not None:
            seeds.setdefault(spec.experiment, []).append(spec.seed)
    assert seeds == {"baseline": [3, 4, 5], "pi": [3, 4, 5, 6], "cwd": [3, 4]}
    with pytest.raises(ex.PlanError, match=r"experiments\[0\].seeds: expected an int >= 1"):
        ex.load_plan(_write_plan(tmp_path, lambda d: d["experiments"][0].update(seeds=0)))
