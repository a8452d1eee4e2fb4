"""The chapters' helpers: the training chapter's run tables, the data chapter's profile data and
class shares, the networks a profile trains, Fig. 3's tables and verdict, the paper-vs-code
tables and a network's layer table, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from skdlib.analysis.datasets import class_shares, probe_table, profile_data
from skdlib.analysis.fig3 import score_summary, verdict
from skdlib.analysis.paper_vs_code import ablation_both, preset_pair
from skdlib.analysis.training import loss_terms, run_tables, trained_networks
from skdlib.models.complexity import layer_table
from skdlib.train.runfolder import RunFolder

REPO = Path(__file__).resolve().parents[1]


def _run(folder: Path) -> RunFolder:
    folder.mkdir(parents=True)
    records = [
        {"iter": 1, "lr": 0.1, "task": 2.0, "pixel": 0.5},
        {"iter": 2, "lr": 0.1, "task": 1.5, "pixel": 0.4, "critic": -0.1, "skipped_critic": 0},
        {"iter": 2, "split": "val", "miou": 0.25, "pixel_acc": 0.5},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {
        "finished": True,
        "miou": 0.2512,
        "pixel_acc": 0.5,
        "iterations": 8000,
        "wall_time_s": 334.4,
        "params": 1_014_632,
        "flops": 271_400_000,
        "config_hash": "abc",
        "class_names": ["road", "car"],
        "class_iou": [0.5, None],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return RunFolder(folder)


def test_loss_terms_and_run_tables_read_a_run_folder(tmp_path: Path) -> None:
    folder = _run(tmp_path / "teacher")
    terms = loss_terms(folder)
    assert list(terms.columns) == ["iter", "task", "pixel", "critic"]  # no lr, skip counts, val
    assert terms["critic"].isna().tolist() == [True, False]
    quantities, classes = run_tables(folder, name="teacher", where="kept/quick/teacher")
    values = dict(quantities.values.tolist())
    assert values["folder"] == "kept/quick/teacher" and values["val mIoU"] == "25.12 %"
    assert values["iterations"] == "8,000" and values["wall time"] == "5 m 34 s"
    assert (
        values["parameters"] == "1.015 M"
        and values["GFLOPs, one image at the crop size"] == "0.271"
    )
    assert classes.values.tolist() == [["road", "50.0"], ["car", "n/a"]]
    with pytest.raises(ValueError, match="no finished run"):
        run_tables(RunFolder(tmp_path / "nothing"), name="x", where="nothing")


def test_profile_data_and_the_networks_come_from_the_configs() -> None:
    from skdlib.experiments import load_plan
    from skdlib.train.config import load_config

    data = profile_data("quick", repo=REPO)
    table = data.table().set_index("what")
    assert table.loc["image size (pixels)"].tolist() == ["64 x 128", "64 x 128"]
    # The teacher's column is the plan's default teacher's (not the unlabeled chapter's).
    quick = load_plan(REPO / "configs" / "experiments.yaml").profile("quick")
    teacher = load_config(REPO / quick.teacher_of(None).config)
    scenes = str(teacher.data.options["num_train"])
    assert table.loc["labelled training scenes"].tolist() == ["100", scenes]
    assert table.loc["small objects' scale"].tolist() == ["2", "2"]
    assert table.loc["folder", "students"] == "data/embedded_quick"
    assert data.generator_options["num_train"] == 100
    networks = trained_networks(data).set_index("role")
    # The sixteenth-width student of configs/quick.yaml (65 k parameters).
    assert networks.loc["students", "network"] == "pspnet_resnet18 width 0.0625"
    assert networks.loc["students", "params (M)"] == pytest.approx(0.065, abs=1e-3)
    assert networks.loc["teacher", "params (M)"] == pytest.approx(1.015, abs=1e-3)


def test_profile_data_shows_the_teacher_not_its_pretraining_run(tmp_path: Path) -> None:
    """A teacher that starts from its own pretraining run (trained before it, on its own source
    task): the data chapter shows the teacher's data set, the students' teacher."""
    import shutil

    import yaml

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    plan_path = tmp_path / "configs" / "experiments.yaml"
    plan = yaml.safe_load(plan_path.read_text())
    start = {"config": "configs/pretrain_smoke.yaml", "overrides": ["train.max_iters=2"]}
    plan["profiles"]["smoke"]["teachers"]["teacher"]["pretrain"] = start
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    data = profile_data("smoke", repo=tmp_path)
    assert data.teacher.data.options.get("seed") != 2  # the pretraining run's source task's is 2
    assert data.teacher.model.student_pretrained.endswith("pretrain_teacher/checkpoints/final.pt")
    assert data.teacher.data.root == data.student.data.root


class _Labels:
    """A data set of label maps only (what class_shares reads)."""

    class_names = ("a", "b", "c")
    num_classes = 3
    ignore_index = 255

    def __init__(self, *labels: list[list[int]]) -> None:
        self.labels = [torch.tensor(label) for label in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"label": self.labels[index]}


def test_class_shares_by_hand() -> None:
    train = _Labels([[0, 0], [1, 255]], [[0, 2], [2, 2]])  # 7 labelled pixels: 3 a, 1 b, 3 c
    val = _Labels([[1, 1], [1, 1]])
    shares = class_shares({"train": train, "val": val})
    assert shares["train"].tolist() == pytest.approx([300 / 7, 100 / 7, 300 / 7])
    assert shares["val"].tolist() == [0.0, 100.0, 0.0] and list(shares.index) == ["a", "b", "c"]
    probe = {
        "class_names": ["a", "b"],
        "class_iou": {"pixel_linear": [10.04, 0.0], "context": [50.0, 20.06]},
        "pixel_linear_miou": 5.02,
        "pixel_mlp_miou": None,
        "context_miou": 35.03,
    }
    assert probe_table(probe).values.tolist() == [
        ["per-pixel logistic regression", 5.0, 10.0, 0.0],
        ["dilated conv net (context)", 35.0, 50.0, 20.1],
    ]


def test_fig3_summary_and_verdict_by_hand() -> None:
    scores = pd.DataFrame(
        {
            "teacher": [1.0, 2.0, 3.0],
            "w/o HO": [0.0, 1.0, 1.5],
            "w/ HO": [0.9, 2.1, 2.8],
        }
    )
    for name in ("w/o HO", "w/ HO"):
        scores[f"diff/{name}"] = scores[name] - scores["teacher"]
    summary = score_summary(scores, {"w/o HO": None, "w/ HO": None})
    assert summary.loc["w/o HO", "mean difference"] == pytest.approx(-3.5 / 3)
    assert summary.loc["w/ HO", "images above the teacher"] == "1/3"
    # |diff w/o| - |diff w/| = 1 - 0.1, 1 - 0.1, 1.5 - 0.2: the HO student is closer each time.
    judges = {"own": scores, "fair": scores}
    text = verdict(judges, own="own", fair="fair")
    assert "On 3 of 3 images the HO student's score is closer" in text
    assert text.endswith("the direction of the paper's Fig. 3a.")


def test_paper_vs_code_tables() -> None:
    table = pd.DataFrame(
        {"miou_mean": [0.5, 0.6], "miou_std": [0.01, 0.02], "n_finished": [3, 3], "n_runs": [3, 3]},
        index=["baseline", "pi"],
    )
    both = ablation_both(table)
    assert both["setting"].tolist() == ["baseline", "+PI", "+PI+PA", "+PI+PA+HO"]
    assert both.iloc[0, 1] == both.iloc[0, 2]  # the shared baseline
    configs = dict.fromkeys(
        ("pi", "pi_pa", "pi_pa_ho", "official_pi", "official_pi_pa", "official_pi_pa_ho")
    )
    assert preset_pair(configs) is None
    configs.update(pi="a", official_pi="b", pi_pa="c")
    assert preset_pair(configs) == {"pi": "a", "official_pi": "b"}


def test_layer_table_names_layers_in_place_of_a_repr() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    )
    rows = layer_table(net)
    assert rows == [
        {"layer": "0", "type": "Conv2d", "shape": "3 -> 4, 3x3 / 2", "parameters": 3 * 4 * 9 + 4},
        {"layer": "2", "type": "Linear", "shape": "4 -> 2", "parameters": 10},
        {"layer": "total", "type": "", "shape": "", "parameters": 122},
    ]
