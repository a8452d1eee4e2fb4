"""Tests of skdlib.train.config: presets, round trips, overrides, inheritance, errors, hashing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from skdlib.train.config import (
    KNOWN_MODELS,
    ExperimentConfig,
    FrozenDict,
    apply_overrides,
    config_from_dict,
    config_hash,
    config_to_dict,
    describe_fields,
    load_config,
    save_config,
    validate_with_model,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# configs/experiments.yaml is the pipeline's plan (skdlib.experiments), not a preset.
PRESETS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.stem != "experiments")
EXPECTED_PRESETS = {"paper", "official_code", "quick", "smoke", "teacher_quick", "teacher_paper"}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------
def test_all_expected_presets_exist() -> None:
    assert {p.stem for p in PRESETS} >= EXPECTED_PRESETS


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads_validates_and_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.student in KNOWN_MODELS
    out = tmp_path / "saved.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)


def test_paper_preset_has_the_papers_values() -> None:
    cfg = load_config(CONFIG_DIR / "paper.yaml")
    assert (cfg.model.student, cfg.model.teacher) == ("pspnet_resnet18", "pspnet_resnet101")
    assert cfg.data.name == "cityscapes"
    assert cfg.data.crop_size == (512, 512) and cfg.data.scale_range == (0.5, 2.1)
    assert cfg.data.batch_size == 8 and cfg.train.max_iters == 40000 and cfg.train.lr == 0.01
    assert (cfg.distill.lambda_pi, cfg.distill.lambda_pa, cfg.distill.lambda_ho) == (
        10.0,
        10.0,
        0.1,
    )
    assert (
        cfg.distill.gan_kind == "wgan"
        and cfg.distill.disc_use_image
        and cfg.distill.disc_input == "softmax"
    )
    # The preset states the library defaults explicitly: the dataclass defaults are the paper's.
    defaults = config_to_dict(ExperimentConfig())
    stated = config_to_dict(cfg)
    for section in ("distill", "train", "eval"):
        assert stated[section] == defaults[section], section


def test_official_code_preset_inherits_paper_and_changes_only_the_departures() -> None:
    paper = config_to_dict(load_config(CONFIG_DIR / "paper.yaml"))
    code = config_to_dict(load_config(CONFIG_DIR / "official_code.yaml"))
    changed = {
        (section, key)
        for section in ("model", "data", "distill", "train", "eval")
        for key in paper[section]
        if paper[section][key] != code[section][key]
    }
    assert changed == {
        ("data", "scale_range"),
        ("distill", "lambda_pa"),
        ("distill", "node_size"),
        ("distill", "pool"),
        ("distill", "node_fraction"),
        ("distill", "detach_norm"),
        ("distill", "disc_use_image"),
        ("distill", "disc_input"),
        ("distill", "disc_input_batchnorm"),
        ("distill", "disc_loss_scale"),
    }
    assert code["distill"]["lambda_pa"] == 0.5 and code["distill"]["disc_loss_scale"] == 0.1
    assert code["name"] != paper["name"]


def test_teacher_presets_train_without_distillation() -> None:
    for stem, arch in (("teacher_paper", "pspnet_resnet101"), ("teacher_quick", "pspnet_resnet18")):
        cfg = load_config(CONFIG_DIR / f"{stem}.yaml")
        assert not cfg.distill.enabled
        assert cfg.model.teacher is None
        assert cfg.model.student == arch


def test_quick_teacher_is_wider_than_the_student_and_smoke_is_tiny() -> None:
    quick = load_config(CONFIG_DIR / "quick.yaml")
    teacher = load_config(CONFIG_DIR / "teacher_quick.yaml")
    assert quick.model.teacher == teacher.model.student
    assert quick.model.student_options["width"] < teacher.model.student_options["width"]
    smoke = load_config(CONFIG_DIR / "smoke.yaml")
    assert (
        smoke.train.max_iters <= 5
        and smoke.data.crop_size[0] * smoke.data.crop_size[1] <= 128 * 128
    )
    assert smoke.data.name == quick.data.name  # inherited from quick.yaml


# ---------------------------------------------------------------------------------------------
# Defaults, frozen, dicts
# ---------------------------------------------------------------------------------------------
def test_defaults_and_documentation() -> None:
    cfg = config_from_dict({})
    assert cfg == ExperimentConfig()
    assert cfg.distill.node_size == 2 and cfg.distill.pair_feature == "head"
    assert cfg.eval.stride_rate == pytest.approx(2 / 3)
    rows = describe_fields()
    keys = [row[0] for row in rows]
    assert "train.max_iters" in keys and "distill.disc_betas" in keys and "name" in keys
    assert all(row[3] for row in rows), [row[0] for row in rows if not row[3]]


def test_frozen_everywhere() -> None:
    cfg = config_from_dict({"model": {"student_options": {"width": 0.5, "extra": [1, 2]}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.max_iters = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.model.student_options["width"] = 1.0  # type: ignore[index]
    assert isinstance(cfg.model.student_options, FrozenDict)
    assert cfg.model.student_options == {"width": 0.5, "extra": (1, 2)}
    assert isinstance(hash(cfg), int)


def test_types_are_canonicalised() -> None:
    cfg = config_from_dict(
        {"train": {"lr": 1, "weight_decay": "1e-4"}, "data": {"crop_size": [64, 96]}}
    )
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 1e-4  # PyYAML reads 1e-4 as text; accepted for floats
    assert cfg.data.crop_size == (64, 96)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError, match=r"train.max_iters: must be >= 1, got 0"):
        dataclasses.replace(ExperimentConfig().train, max_iters=0)


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------
def test_overrides_dotted_nested_lists_bools_and_null() -> None:
    base = load_config(CONFIG_DIR / "quick.yaml")
    cfg = load_config(
        CONFIG_DIR / "quick.yaml",
        [
            "train.max_iters=100",
            "distill.pairwise=false",
            "data.crop_size=[64,128]",
            "model.student_options.width=0.25",
            "model.teacher_checkpoint=null",
            "distill.disc_betas=[0.5, 0.9]",
            "name=renamed",
        ],
    )
    assert cfg.train.max_iters == 100
    assert cfg.distill.pairwise is False
    assert cfg.data.crop_size == (64, 128)
    assert cfg.model.student_options == {"width": 0.25}
    assert cfg.model.teacher_checkpoint is None
    assert cfg.distill.disc_betas == (0.5, 0.9)
    assert cfg.name == "renamed"
    # Everything else is untouched.
    assert cfg.train.lr == base.train.lr and cfg.distill.holistic == base.distill.holistic


def test_apply_overrides_returns_a_new_validated_config() -> None:
    cfg = ExperimentConfig()
    new = apply_overrides(cfg, ["train.seed=3", "eval.mode=sliding", "eval.crop_size=[256,256]"])
    assert (new.train.seed, new.eval.mode, new.eval.crop_size) == (3, "sliding", (256, 256))
    assert cfg.train.seed == 0
    assert apply_overrides(cfg, []) == cfg


def test_later_override_wins() -> None:
    cfg = apply_overrides(ExperimentConfig(), ["train.seed=1", "train.seed=2"])
    assert cfg.train.seed == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_iters", r"override 'train.max_iters' must look like key=value"),
        ("train..lr=1", r"the key must be dotted names"),
        ("train.lr.x=3", r"'train.lr' is a value, not a section"),
        ("train.lr=[1", r"value is not valid YAML"),
    ],
)
def test_malformed_overrides(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_overrides(ExperimentConfig(), [override])


def test_overrides_must_be_a_sequence_of_strings() -> None:
    with pytest.raises(ValueError, match="sequence of 'key=value' strings"):
        apply_overrides(ExperimentConfig(), "train.seed=1")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Inheritance
# ---------------------------------------------------------------------------------------------
def test_inheritance_deep_merge_relative_paths_and_names(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    _write(
        tmp_path / "root.yaml",
        {
            "name": "root_name",
            "model": {"student_options": {"width": 0.5, "depth": 18}},
            "train": {"max_iters": 10, "seed": 4},
            "data": {"crop_size": [32, 32]},
        },
    )
    _write(sub / "mid.yaml", {"base": "../root.yaml", "train": {"max_iters": 20}})
    _write(
        sub / "leaf.yaml",
        {
            "base": "mid.yaml",
            "model": {"student_options": {"width": 0.25}},
            "data": {"crop_size": [16, 48]},
        },
    )
    cfg = load_config(sub / "leaf.yaml")
    assert cfg.train.max_iters == 20  # from mid
    assert cfg.train.seed == 4  # from root, kept by the deep merge
    assert cfg.model.student_options == {"width": 0.25, "depth": 18}  # mappings merge key by key
    assert cfg.data.crop_size == (16, 48)  # lists are replaced, not merged
    assert cfg.name == "leaf"  # names are never inherited: the file stem
    assert load_config(tmp_path / "root.yaml").name == "root_name"


def test_overrides_apply_after_inheritance(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", {"train": {"max_iters": 10}})
    _write(tmp_path / "b.yaml", {"base": "a.yaml", "train": {"max_iters": 20}})
    assert load_config(tmp_path / "b.yaml", ["train.max_iters=30"]).train.max_iters == 30


def test_circular_and_missing_bases(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", {"base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ValueError, match="circular inheritance"):
        load_config(tmp_path / "a.yaml")
    _write(tmp_path / "c.yaml", {"base": "nowhere.yaml"})
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(FileNotFoundError, match=r"absent\.yaml"):
        load_config(tmp_path / "absent.yaml")
    _write(tmp_path / "d.yaml", {"base": 3})
    with pytest.raises(ValueError, match="base: expected a file path, got int 3"):
        load_config(tmp_path / "d.yaml")


def test_top_level_must_be_a_mapping_and_base_is_loader_only(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping at the top level"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="only load_config understands 'base'"):
        config_from_dict({"base": "paper.yaml"})


# ---------------------------------------------------------------------------------------------
# Errors: unknown keys, wrong types, impossible values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # unknown keys, with a close match or the valid keys
        (
            ["train.max_iter=10"],
            r"unknown key 'train.max_iter' \(did you mean 'train.max_iters'\?\)",
        ),
        (
            ["distill.lambda_p=1"],
            r"unknown key 'distill.lambda_p' \(did you mean 'distill.lambda_p",
        ),
        (["zzz=1"], r"unknown key 'zzz' \(valid keys: name, description, model"),
        # wrong types
        (["train.max_iters=ten"], r"train.max_iters: expected int, got str 'ten'"),
        (["train.max_iters=10.5"], r"train.max_iters: expected int, got float 10.5"),
        (["train.max_iters=true"], r"train.max_iters: expected int, got bool True"),
        (["train.lr=fast"], r"train.lr: expected float, got str 'fast'"),
        (["data.flip=1"], r"data.flip: expected bool \(true/false\), got int 1"),
        (["data.name=3"], r"data.name: expected str, got int 3"),
        (
            ["data.crop_size=512"],
            r"data.crop_size: expected a list for tuple\[int, int\], got int 512",
        ),
        (["data.crop_size=[1,2,3]"], r"data.crop_size: expected 2 values, got 3"),
        (["data.crop_size=[64,x]"], r"data.crop_size\[1\]: expected int, got str 'x'"),
        (["data.num_workers=two"], r"data.num_workers: expected int, got str 'two'"),
        (["model.student_options=3"], r"model.student_options: expected a mapping, got int 3"),
        (["train=3"], r"train: expected a mapping, got int 3"),
        (["model.student=null"], r"model.student: expected .*got None"),
        # choices
        (["train.amp=fp32"], r"train.amp: expected one of 'none', 'bf16', 'fp16', got str 'fp32'"),
        (["distill.pool=mean"], r"distill.pool: expected one of 'avg', 'max', got str 'mean'"),
        (["distill.gan_kind=wgan_gp"], r"distill.gan_kind: .*\(did you mean 'wgan'\?\)"),
        (
            ["model.student=resnet18"],
            r"model.student: expected one of 'pspnet_resnet101', .*'resnet18'",
        ),
        (["model.teacher=pspnet_resnet152"], r"model.teacher: expected one of"),
        (
            ["model.student=my nets:build"],
            r"model.student: .*import path 'package.module:function'",
        ),
        (["model.student=nets.build"], r"model.student: expected one of .*got str 'nets.build'"),
        (["model.student='nets:'"], r"model.student: expected one of"),
        (["distill.align=both"], r"distill.align: expected one of 'student', 'teacher'"),
        (["model.student_taps={logits: out}"], r"model.student_taps: taps are for a network of"),
        (
            ["model.teacher_taps={logits: out}"],
            r"model.teacher_taps: taps are for a network of one's own; model.teacher "
            "'pspnet_resnet101'",
        ),
        (
            ["model.student=nets:build", "model.student_taps={logitz: out}"],
            r"model.student_taps: unknown option\(s\) \['logitz'\]; valid: \['logits'",
        ),
        (["eval.mode=tiles"], r"eval.mode: expected one of 'whole', 'sliding'"),
        (["train.optimizer=adam"], r"train.optimizer: expected one of 'sgd', 'adamw'"),
        # impossible values
        (["distill.lambda_pa=-1"], r"distill.lambda_pa: must be >= 0.0, got -1.0"),
        (["distill.lambda_ho=-0.1"], r"distill.lambda_ho: must be >= 0.0"),
        (["distill.temperature=0"], r"distill.temperature: must be > 0, got 0.0"),
        (["train.max_iters=0"], r"train.max_iters: must be >= 1, got 0"),
        (["train.lr=0"], r"train.lr: must be > 0, got 0.0"),
        (["train.lr=-0.01"], r"train.lr: must be > 0"),
        (["train.lr=.nan"], r"train.lr: must be finite"),
        (["train.momentum=1.0"], r"train.momentum: must lie in \[0, 1\)"),
        (["train.log_every=0"], r"train.log_every: must be >= 1"),
        (
            ["train.device=gpu"],
            r"train.device: must be one of auto, cpu, cuda, cuda:N, mps, got 'gpu'",
        ),
        (
            ["data.scale_range=[2.0,1.0]"],
            r"data.scale_range: must satisfy 0 < min <= max, got \(2.0, 1.0\)",
        ),
        (["data.scale_range=[0,1.0]"], r"data.scale_range: must satisfy 0 < min <= max"),
        (["data.crop_size=[0,64]"], r"data.crop_size: sides must be positive, got \(0, 64\)"),
        (["data.crop_size=[64,5000]"], r"data.crop_size: sides must be <= MAX_CROP_SIZE=4096"),
        (["eval.crop_size=[64,-1]"], r"eval.crop_size: sides must be positive"),
        (["eval.stride_rate=0"], r"eval.stride_rate: must lie in \(0, 1\]"),
        (["data.batch_size=0"], r"data.batch_size: must be >= 1, got 0"),
        (["data.train_limit=0"], r"data.train_limit: must be >= 1, got 0"),
        (
            ["data.name=images"],
            r"data.name: 'images' reads images without labels: it can feed the unlabeled stream",
        ),
        (["distill.node_size=0"], r"distill.node_size: must be >= 1, got 0"),
        (
            ["distill.node_fraction=1.5", "distill.node_size=1"],
            r"distill.node_fraction: must lie in \(0, 1\]",
        ),
        (
            ["distill.node_fraction=0.5"],
            r"distill.node_size: must be 1 when distill.node_fraction is set",
        ),
        (["distill.disc_widths=[64,128,256]"], r"distill.disc_widths: expected 4 values, got 3"),
        (["distill.disc_widths=[64,0,256,512]"], r"distill.disc_widths: must be positive ints"),
        (["distill.disc_lr=0"], r"distill.disc_lr: must be > 0"),
        (["distill.disc_betas=[0.9,1.0]"], r"distill.disc_betas: must lie in \[0, 1\)"),
        (["distill.disc_loss_scale=0"], r"distill.disc_loss_scale: must be > 0"),
        (["distill.disc_downsample=0"], r"distill.disc_downsample: must lie in \[1, 4\]"),
        (["distill.disc_downsample=5"], r"distill.disc_downsample: must lie in \[1, 4\]"),
        (["model.num_classes=0"], r"model.num_classes: must be >= 1, got 0"),
        (["model.teacher_checkpoint="], None),  # empty value = null: accepted
        (["model.student_pretrained=''"], r"model.student_pretrained: must be a file path or null"),
        (["name=has space"], r"name: must be a folder-safe name"),
        (
            ["model.teacher=null"],
            r"model.teacher: distillation terms are on, so a teacher is needed",
        ),
    ],
)
def test_error_messages(overrides: list[str], message: str | None) -> None:
    if message is None:
        apply_overrides(ExperimentConfig(), overrides)
        return
    with pytest.raises(ValueError, match=message):
        apply_overrides(ExperimentConfig(), overrides)


def test_errors_from_files_name_the_dotted_key(tmp_path: Path) -> None:
    _write(
        tmp_path / "bad.yaml", {"base": str(CONFIG_DIR / "paper.yaml"), "distill": {"nodesize": 2}}
    )
    with pytest.raises(
        ValueError, match=r"unknown key 'distill.nodesize' \(did you mean 'distill.node_size'\?\)"
    ):
        load_config(tmp_path / "bad.yaml")


def test_networks_of_ones_own_by_import_path_with_taps() -> None:
    cfg = apply_overrides(
        ExperimentConfig(),
        [
            "model.student=my_networks.unet:build",
            "model.student_options={width: 16}",
            "model.student_taps={logits: out, features: {head: decoder.block3}, "
            "probe_size: [32, 64]}",
            "model.teacher=my_networks:Teacher",
            "distill.align=teacher",
        ],
    )
    assert cfg.model.student == "my_networks.unet:build"
    assert cfg.model.student_taps["features"]["head"] == "decoder.block3"
    assert cfg.model.student_taps["probe_size"] == (32, 64)
    assert cfg.distill.align == "teacher"
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg and config_hash(again) == config_hash(cfg)


def test_a_registered_name_is_a_model_name_in_this_process() -> None:
    from skdlib.models import register_model, unregister_model

    with pytest.raises(ValueError, match=r"model.student: expected one of"):
        apply_overrides(ExperimentConfig(), ["model.student=my_own_net"])
    register_model("my_own_net", lambda num_classes: None)
    try:
        cfg = apply_overrides(ExperimentConfig(), ["model.student=my_own_net"])
        assert cfg.model.student == "my_own_net"
    finally:
        unregister_model("my_own_net")


def test_teacher_none_is_fine_without_distillation() -> None:
    cfg = apply_overrides(
        ExperimentConfig(),
        [
            "model.teacher=null",
            "distill.pixelwise=false",
            "distill.pairwise=false",
            "distill.holistic=false",
        ],
    )
    assert cfg.model.teacher is None and not cfg.distill.enabled


# ---------------------------------------------------------------------------------------------
# Hash
# ---------------------------------------------------------------------------------------------
def test_config_hash_golden_and_key_order(tmp_path: Path) -> None:
    cfg = ExperimentConfig()
    assert config_hash(cfg) == config_hash(ExperimentConfig())
    # Golden value: changes only if a default (or the canonical form) changes; update deliberately.
    assert (
        config_hash(cfg) == "6697b90422b66864"
    )  # updated when model.student_pretrained_prefix was added; the released-network fields
    # (variants, layouts, data.normalize) and the own-network fields (model.student_taps,
    # model.teacher_taps, distill.align) are left out of the hash at their defaults
    # Same content written with a different key order hashes the same.
    as_dict = config_to_dict(cfg)
    reordered = {key: as_dict[key] for key in reversed(list(as_dict))}
    reordered["train"] = {key: as_dict["train"][key] for key in reversed(list(as_dict["train"]))}
    assert config_hash(config_from_dict(reordered)) == config_hash(cfg)
    # int vs float spelling of the same float value hashes the same.
    assert config_hash(apply_overrides(cfg, ["train.lr=1"])) == config_hash(
        apply_overrides(cfg, ["train.lr=1.0"])
    )


def test_fields_added_with_a_neutral_default_keep_earlier_hashes() -> None:
    """The released-network fields (variants, layouts, data.normalize) and the own-network fields
    (taps, distill.align) are left out of the hash at their defaults: a config written before
    they existed hashes as before, and so do the runs kept in the repository; set to anything
    else, they count."""
    import json

    import skdlib.experiments as ex

    cfg = ExperimentConfig()
    as_dict = config_to_dict(cfg)
    for section, key in (
        ("model", "student_variant"),
        ("model", "teacher_variant"),
        ("model", "teacher_checkpoint_layout"),
        ("model", "student_pretrained_layout"),
        ("data", "normalize"),
        ("model", "student_taps"),
        ("model", "teacher_taps"),
        ("distill", "align"),
    ):
        del as_dict[section][key]  # a config.yaml written before the field existed
    assert config_hash(config_from_dict(as_dict)) == config_hash(cfg)
    for changed in (
        ["data.normalize=caffe_bgr"],
        ["distill.align=teacher"],
        ["model.student=nets:build", "model.student_taps={logits: out}"],
        ["model.teacher=nets:build", "model.teacher_taps={logits: out}"],
    ):
        assert config_hash(apply_overrides(cfg, changed)) != config_hash(cfg), changed
    repo = CONFIG_DIR.parent
    plan = ex.load_plan(CONFIG_DIR / "experiments.yaml")
    runs = ex.build_runs(plan, "quick", runs_root=repo / "runs", project_root=repo, only=[])
    for spec in runs[:2]:  # the kept teacher and pretraining run
        summary = json.loads((spec.run_dir / "summary.json").read_text())
        assert spec.reuse_hash == summary["portable_config_hash"], spec.key


def test_variants_layouts_and_normalisation_are_checked_early() -> None:
    cfg = ExperimentConfig()
    cases = [
        (["data.normalize=bgr"], r"data.normalize: expected one of 'imagenet', 'caffe_bgr'"),
        (["model.student_variant=mine"], r"model.student_variant: expected one of 'default'"),
        (
            ["model.student=pspnet_resnet34", "model.student_variant=authors"],
            r"model.student_variant: pspnet_resnet34 has the variants \['default'\]",
        ),
        (
            ["model.student=my_networks.unet:build", "model.student_variant=authors"],
            r"model.student_variant: variants are for the book's networks; "
            r"'my_networks.unet:build' is a network of one's own",
        ),
        (
            ["model.teacher=nets:Teacher", "model.teacher_variant=cirkd"],
            r"model.teacher_variant: variants are for the book's networks",
        ),
        (
            ["model.teacher=deeplabv3_resnet101", "model.teacher_variant=authors"],
            r"model.teacher_variant: deeplabv3_resnet101 has the variants \['default', 'cirkd'\]",
        ),
        (
            ["model.teacher=nets:Teacher", "model.teacher_checkpoint_layout=cirkd"],
            r"model.teacher_checkpoint_layout: 'cirkd' files fit the variant\(s\) \['cirkd'\]",
        ),
        (
            ["model.teacher_checkpoint_layout=skd_authors"],
            r"model.teacher_checkpoint_layout: 'skd_authors' files fit the variant\(s\) "
            r"\['authors'\] \(model.teacher_variant\), got model.teacher_variant='default'",
        ),
        (
            ["model.teacher_variant=cirkd", "model.teacher_checkpoint_layout=skd_authors"],
            r"fit the variant\(s\) \['authors'\]",
        ),
        (
            ["model.student_pretrained_layout=csail_imagenet"],
            r"model.student_pretrained_layout: 'csail_imagenet' files fit the variant\(s\) "
            r"\['authors', 'cirkd'\]",
        ),
        (
            [
                "model.student_variant=authors",
                "model.student_pretrained_layout=csail_imagenet",
                "model.student_pretrained_prefix=backbone.",
            ],
            r"model.student_pretrained_prefix: is read with student_pretrained_layout 'skdlib'",
        ),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            apply_overrides(cfg, overrides)
    ok = apply_overrides(
        cfg,
        [
            "model.teacher=deeplabv3_resnet101",
            "model.teacher_variant=cirkd",
            "model.teacher_checkpoint_layout=cirkd",
            "model.student_variant=authors",
            "model.student_pretrained_layout=csail_imagenet",
            "data.normalize=caffe_bgr",
        ],
    )
    assert (ok.model.teacher_variant, ok.data.normalize) == ("cirkd", "caffe_bgr")


def test_config_choices_follow_the_library() -> None:
    """The Literal choices of the config are the library's own lists."""
    from typing import get_args

    from skdlib.data.transforms import NORMALIZATIONS
    from skdlib.models import LAYOUTS, VARIANTS
    from skdlib.train import config

    assert get_args(config.NormalizeName) == tuple(NORMALIZATIONS)
    assert get_args(config.VariantName) == VARIANTS
    teacher, student = get_args(config.TeacherLayout), get_args(config.StudentLayout)
    assert teacher[0] == student[0] == "skdlib"
    assert set(teacher[1:]) | set(student[1:]) == set(LAYOUTS)


def test_config_hash_changes_with_any_value() -> None:
    base = ExperimentConfig()
    reference = config_hash(base)
    rows = describe_fields()
    seen = {reference}
    for key, _type, default, _doc in rows:
        changed = _changed_value(key, default)
        cfg = apply_overrides(base, [f"{key}={changed}", *_companions(key)])
        digest = config_hash(cfg)
        assert digest not in seen, key
        seen.add(digest)
    assert len(seen) == len(rows) + 1


def _changed_value(key: str, default: object) -> str:
    """A valid value different from ``default`` for the field ``key``, as override text."""
    special = {
        "model.teacher_source": "0123456789abcdef",
        "model.student_pretrained_source": "0123456789abcdef",
        "model.student": "espnet_c",
        "model.teacher": "mobilenetv2plus",
        "model.student_taps": "{logits: out}",
        "model.teacher_taps": "{features: {head: decoder}}",
        "distill.align": "teacher",
        "distill.pool": "max",
        "distill.gan_kind": "hinge",
        "distill.disc_input": "logits",
        "distill.disc_optimizer": "adam",
        "train.amp": "bf16",
        "train.optimizer": "adamw",
        "train.device": "cpu",
        "eval.mode": "sliding",
        "distill.node_fraction": "0.5",
        "distill.disc_betas": "[0.5, 0.9]",
        "distill.disc_widths": "[8, 16, 32, 64]",
        "distill.disc_downsample": "3",
        "data.crop_size": "[64, 64]",
        "data.scale_range": "[1.0, 1.5]",
        "eval.crop_size": "[64, 64]",
        "model.student_options": "{width: 0.5}",
        "model.teacher_options": "{width: 0.5}",
        "data.options": "{seed: 1}",
        "model.teacher_checkpoint": "teacher.pt",
        "model.student_pretrained": "backbone.pt",
        "model.num_classes": "7",
        "data.num_workers": "2",
        "data.train_limit": "16",
        "train.momentum": "0.8",
        "distill.disc_momentum": "0.5",
        "eval.stride_rate": "0.5",
        "data.unlabeled.name": "images",
        "data.unlabeled.root": "extra",
        "data.unlabeled.options": "{skip_bad: true}",
        "model.student_variant": "authors",
        "model.teacher_variant": "authors",
        "model.teacher_checkpoint_layout": "skd_authors",
        "model.student_pretrained_layout": "csail_imagenet",
        "data.normalize": "caffe_bgr",
    }
    if key in special:
        return special[key]
    if isinstance(default, bool):
        return "false" if default else "true"
    if isinstance(default, int):
        return str(default + 3)
    if isinstance(default, float):
        return repr(default * 0.5 + 0.25)
    assert isinstance(default, str), key
    return default + "x"


def _companions(key: str) -> list[str]:
    """Overrides needed so that the changed value is valid on its own."""
    companions = {
        "distill.node_fraction": ["distill.node_size=1"],
        "data.unlabeled.name": ["data.unlabeled.root=other"],
        "data.unlabeled.root": ["data.unlabeled.name=images"],
        "train.teacher_cache": ["data.scale_range=[1.0,1.0]"],
        "model.student_taps": ["model.student=my_networks:build_student"],
        "model.teacher_taps": ["model.teacher=my_networks.segmentation:Teacher"],
        "data.unlabeled.batch_size": ["data.unlabeled.name=images", "data.unlabeled.root=third"],
        "model.teacher_checkpoint_layout": ["model.teacher_variant=authors"],
        "model.student_pretrained_layout": ["model.student_variant=authors"],
    }
    return companions.get(key, [])


# ---------------------------------------------------------------------------------------------
# Checks against a built model
# ---------------------------------------------------------------------------------------------
class _FakeModel:
    def __init__(self, channels: dict[str, int], num_classes: int | None = None) -> None:
        self.feature_channels = channels
        if num_classes is not None:
            self.num_classes = num_classes


def test_known_models_match_the_model_registry_and_real_models_validate() -> None:
    models = pytest.importorskip("skdlib.models")
    assert set(KNOWN_MODELS) == set(models.builtin_models())
    cfg = load_config(CONFIG_DIR / "smoke.yaml")
    student = models.build_model(cfg.model.student, 8, **cfg.model.student_options)
    validate_with_model(cfg, student)
    with pytest.raises(
        ValueError, match=r"distill.pair_feature: 'nowhere' is not a feature of model.student"
    ):
        validate_with_model(apply_overrides(cfg, ["distill.pair_feature=nowhere"]), student)


def test_validate_with_model() -> None:
    cfg = ExperimentConfig()
    validate_with_model(cfg, _FakeModel({"head": 512, "backbone": 512}))
    with pytest.raises(
        ValueError,
        match=r"distill.pair_feature: 'head' is not a feature of model.student "
        r"\(available: backbone, layer3\)",
    ):
        validate_with_model(cfg, _FakeModel({"backbone": 512, "layer3": 256}))
    with pytest.raises(ValueError, match=r"is not a feature of model.teacher"):
        validate_with_model(cfg, _FakeModel({"head": 1}), teacher=_FakeModel({"backbone": 2}))
    # No term reads the feature: any model is fine.
    off = apply_overrides(cfg, ["distill.pairwise=false"])
    validate_with_model(off, _FakeModel({"backbone": 512}))
    # A term that reads it again requires it.
    mimic = apply_overrides(off, ["distill.mimic=true", "distill.pair_feature=backbone"])
    validate_with_model(mimic, _FakeModel({"backbone": 512}))
    with pytest.raises(ValueError, match="no feature_channels mapping"):
        validate_with_model(cfg, object())
    fixed = apply_overrides(cfg, ["model.num_classes=19"])
    with pytest.raises(
        ValueError, match=r"model.num_classes: config says 19, model.student was built with 8"
    ):
        validate_with_model(fixed, _FakeModel({"head": 1}, num_classes=8))
