"""skdlib.train.runfolder.RunFolder: reading summary.json, metrics.jsonl and config.yaml from
hand-made run folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from skdlib.train.config import ExperimentConfig, load_config, save_config
from skdlib.train.runfolder import RunFolder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_read_summary_returns_the_object(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"miou": 0.5, "finished": True}))
    folder = RunFolder(tmp_path)
    assert folder.read_summary() == {"miou": 0.5, "finished": True}
    assert folder.is_finished()


def test_read_summary_is_none_without_a_file(tmp_path: Path) -> None:
    assert RunFolder(tmp_path / "absent").read_summary() is None
    assert not RunFolder(tmp_path / "absent").is_finished()


@pytest.mark.parametrize("text", ['{"miou": 0.5, "fin', "[1, 2]", ""])
def test_read_summary_is_none_when_unreadable(tmp_path: Path, text: str, caplog) -> None:
    (tmp_path / "summary.json").write_text(text)
    with caplog.at_level(logging.WARNING, logger="skdlib.train.runfolder"):
        assert RunFolder(tmp_path).read_summary() is None
    assert "summary" in caplog.text
    assert not RunFolder(tmp_path).is_finished()


def test_is_finished_needs_finished_true(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"miou": 0.5}))
    assert not RunFolder(tmp_path).is_finished()


def test_read_metrics_keeps_order_and_skips_torn_lines(tmp_path: Path, caplog) -> None:
    lines = [
        '{"iter": 1, "total": 2.0}',
        "",
        '{"iter": 2, "split": "val", "miou": 0.25}',
        "[3]",
        '{"iter": 3, "tot',
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="skdlib.train.runfolder"):
        records = RunFolder(tmp_path).read_metrics()
    assert records == [{"iter": 1, "total": 2.0}, {"iter": 2, "split": "val", "miou": 0.25}]
    assert "line 4" in caplog.text and "line 5" in caplog.text
    assert "line 2" not in caplog.text  # a blank line is no torn record


def test_read_metrics_reads_what_append_metrics_wrote(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.append_metrics({"iter": 1, "lr": 0.01})
    folder.append_metrics({"iter": 2, "lr": 0.005})
    assert folder.read_metrics() == [{"iter": 1, "lr": 0.01}, {"iter": 2, "lr": 0.005}]


def test_read_metrics_is_empty_without_a_file(tmp_path: Path) -> None:
    assert RunFolder(tmp_path).read_metrics() == []


def test_read_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "smoke.yaml", ["train.max_iters=7"])
    save_config(cfg, tmp_path / "config.yaml")
    read = RunFolder(tmp_path).read_config()
    assert isinstance(read, ExperimentConfig)
    assert read == cfg and read.train.max_iters == 7


def test_read_config_names_the_folder_when_absent(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "run")):
        RunFolder(tmp_path / "run").read_config()
