"""Executors beyond one process: runs on groups of GPUs (--gpus), and runs as jobs through
submitit (--executor slurm), here with submitit's local executor (subprocesses of this machine,
the same submission, pickles and result files as on SLURM) and, under `make test-slurm`, against
the real single-node SLURM cluster (tests/slurm/start_cluster.sh)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest

import skdlib.experiments as ex
from skdlib.experiments.executors import gpu_groups
from skdlib.experiments.plan import SlurmOptions
from skdlib.experiments.slurm import SlurmExecutor

# The jobs' Python cannot import this module (tests/ is not on its path): pickle it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "configs" / "experiments.yaml"
NOTEBOOK = REPO / "book" / "training.md"


def test_gpu_groups_and_the_checks_of_gpu_options(tmp_path: Path) -> None:
    assert gpu_groups(["0", "1", "2", "3"], 1) == ["0", "1", "2", "3"]
    assert gpu_groups(["0", "1", "2", "3", "4"], 2) == ["0,1", "2,3"]  # GPU 4 left over
    assert gpu_groups(["0"], 2) == []
    base = {"plan_path": PLAN, "project_root": REPO, "runs_root": tmp_path}
    with pytest.raises(ex.PlanError, match=r"--gpus: expected at least --nproc-per-run=2"):
        ex.run_pipeline("smoke", executor="inprocess", gpus=["0"], nproc_per_run=2, **base)
    with pytest.raises(ex.PlanError, match="--jobs and --gpus exclude each other"):
        ex.run_pipeline("smoke", executor="inprocess", gpus=["0", "1"], jobs=2, **base)
    assert not (tmp_path / "smoke").exists()


def test_what_a_slurm_job_asks_for() -> None:
    options = SlurmOptions(partition="gpu", gpus_per_run=2, mem_gb=32, time_min=720)
    executor = SlurmExecutor(notebook=None, cwd=REPO, options=options)
    payload = {"run_dir": "/runs/paper/pi/seed1", "threads": 4, "nproc": 2}
    assert executor.parameters(payload) == {
        "name": "skd-pi-seed1",
        "timeout_min": 720,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 8,  # threads x processes
        "gpus_per_node": 2,
        "mem_gb": 32,
        "slurm_partition": "gpu",
    }
    plain = SlurmExecutor(notebook=None, cwd=REPO, options=SlurmOptions(cpus_per_run=3))
    params = plain.parameters(payload)
    assert params["cpus_per_task"] == 3 and "slurm_partition" not in params
    assert "mem_gb" not in params and params["timeout_min"] == SlurmOptions.time_min


def test_the_plans_slurm_keys_are_checked(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(PLAN.read_text())
    data["profiles"]["smoke"]["slurm"] = {"partition": "debug", "gpu_per_run": 1}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ex.PlanError, match=r"profiles.smoke.slurm: unknown key\(s\) \['gpu_per"):
        ex.load_plan(tmp_path / "plan.yaml")
    data["profiles"]["smoke"]["slurm"] = {"partition": "debug", "time_min": 5, "mem_gb": 2}
    data["profiles"]["smoke"]["nproc_per_run"] = 2
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(data))
    smoke = ex.load_plan(tmp_path / "plan.yaml").profile("smoke")
    assert smoke.slurm == SlurmOptions(partition="debug", time_min=5, mem_gb=2.0)
    assert smoke.nproc_per_run == 2


@pytest.mark.slow
def test_one_run_per_free_gpu_group(tmp_path: Path) -> None:
    """--gpus 0,1 on this CPU machine (the runs train on the CPU, as smoke.yaml says): two runs
    at a time, each in a fresh process that sees one GPU; env.json records which."""
    result = ex.run_pipeline(
        "smoke",
        plan_path=PLAN,
        project_root=REPO,
        runs_root=tmp_path / "runs",
        executor="inprocess",
        only=["baseline", "pi"],
        sets=[f"data.root={tmp_path / 'data'}"],
        gpus=["0", "1"],
        threads=1,
        teacher_threads=1,
    )
    assert result["failed"] == []
    root = tmp_path / "runs" / "smoke"

    def shown(key: str) -> str | None:
        return json.loads((root / key / "env.json").read_text())["cuda_visible_devices"]

    assert shown("teacher") == "0"
    assert {shown("baseline/seed0"), shown("pi/seed0")} == {"0", "1"}  # both at once


def train_then_die(payload: dict) -> dict:
    """A job that trains its run to the end, then dies before it writes its result (as a job
    killed by SLURM does): the run folder keeps checkpoints/last.pt. The teacher's own
    pretraining run, before it, trains to the end."""
    import skdlib.train.loop as loop
    from skdlib.experiments.executors import execute_inprocess_run

    def die(state):
        os.kill(os.getpid(), signal.SIGKILL)

    if Path(payload["run_dir"]).name != "pretrain_teacher":
        loop._finish = die
    return execute_inprocess_run(payload)


def _slurm_pipeline(tmp_path: Path, runner: SlurmExecutor | None, **options) -> dict:
    return ex.run_pipeline(
        "smoke",
        plan_path=PLAN,
        project_root=REPO,
        runs_root=tmp_path / "runs",
        executor="slurm",
        only=["baseline"],
        sets=[f"data.root={tmp_path / 'data'}", "train.checkpoint_every=1"],
        poll_s=0.5,
        runner=runner,
        **options,
    )


def _check_jobs_die_and_resume(tmp_path: Path, cluster: str) -> None:
    options = SlurmOptions(partition="debug" if cluster == "slurm" else None, time_min=5)
    common = {"cwd": REPO, "options": options, "poll_s": 0.5, "cluster": cluster}
    dying = SlurmExecutor(notebook=None, job_function=train_then_die, result_grace_s=1.0, **common)
    result = _slurm_pipeline(tmp_path, dying)
    root = tmp_path / "runs" / "smoke"
    assert result["failed"] == ["teacher", "pretrain", "baseline/seed0"]
    index = json.loads((root / "index.json").read_text())
    assert "without a result" in index["teacher"]["error"]
    assert str(root / "teacher" / "slurm") in index["teacher"]["error"]  # its log is named
    assert (root / "teacher" / "checkpoints" / "last.pt").is_file()
    # Running the pipeline again resumes the run the dead job left, with the notebook.
    again = _slurm_pipeline(tmp_path, SlurmExecutor(notebook=NOTEBOOK, **common))
    assert again["failed"] == [] and again["actions"]["teacher"] == "resume"
    assert again["actions"]["pretrain_teacher"] == "reuse"
    records = [json.loads(line) for line in (root / "teacher" / "metrics.jsonl").open()]
    assert [r["iter"] for r in records if "split" not in r] == [1, 2, 3]  # 3 trained again
    assert (root / "teacher" / "notebook.ipynb").is_file()
    logs = sorted(p.name for p in (root / "baseline" / "seed0" / "slurm").iterdir())
    assert any(name.endswith("_log.out") for name in logs), logs
    index = json.loads((root / "index.json").read_text())
    assert index["experiments"][0]["runs"][0]["status"] == "finished"


@pytest.mark.slow
def test_submitit_local_jobs_that_die_are_reported_and_resumed(tmp_path: Path) -> None:
    _check_jobs_die_and_resume(tmp_path, "local")


@pytest.mark.slurm
def test_slurm_jobs_that_die_are_reported_and_resumed(tmp_path: Path) -> None:
    _skip_without_slurm()
    _check_jobs_die_and_resume(tmp_path, "slurm")


def _skip_without_slurm() -> None:
    if os.environ.get("SKD_SLURM") != "1" or shutil.which("sbatch") is None:
        pytest.skip("needs a running SLURM cluster and SKD_SLURM=1 (`make test-slurm` does both)")


@pytest.mark.slurm
def test_slurm_executor_from_the_command_line(tmp_path: Path, capsys) -> None:
    """`--executor slurm` as a user types it: the notebook in SLURM jobs, then every run
    reused."""
    _skip_without_slurm()
    args = ["run", "--profile", "smoke", "--root", str(REPO), "--runs-root", str(tmp_path)]
    args += ["--set", f"data.root={tmp_path / 'data'}", "--only", "pi", "--notebook", str(NOTEBOOK)]
    args += ["--executor", "slurm", "--partition", "debug", "--cpus-per-run", "1"]
    args += ["--mem-gb", "2", "--time-min", "5", "--poll-s", "0.5"]
    assert ex.main(args) == 0
    root = tmp_path / "smoke"
    for key in ("teacher", "pi/seed0"):
        summary = json.loads((root / key / "summary.json").read_text())
        assert summary["finished"] and (root / key / "notebook.ipynb").is_file()
        job_ids = {p.name.split("_")[0] for p in (root / key / "slurm").glob("*_log.out")}
        assert len(job_ids) == 1, job_ids
    assert ex.main(args) == 0  # every run reused: no new job
    assert len(list((root / "teacher" / "slurm").glob("*_log.out"))) == 1


class _Watcher:
    """submitit's sacct watcher on a cluster whose accounting says nothing."""

    def __init__(self) -> None:
        self.updates = 0

    def update(self) -> None:
        self.updates += 1

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        assert mode == "cache"  # states come from the one update per poll
        return "UNKNOWN"


def test_a_job_squeue_lost_has_ended_when_sacct_says_nothing(tmp_path: Path, monkeypatch):
    """Without accounting (or with its database down) sacct knows no job: submitit would wait
    for a dead job forever. The executor asks squeue: a job it no longer lists has ended."""
    import types

    import skdlib.experiments.slurm as slurm

    paths = types.SimpleNamespace(
        result_pickle=tmp_path / "7_0_result.pkl", stdout=tmp_path / "7_0_log.out"
    )
    job = types.SimpleNamespace(job_id="7", paths=paths, watcher=_Watcher())
    executor = SlurmExecutor(notebook=None, cwd=REPO, options=SlurmOptions(), result_grace_s=0)
    sub = slurm._Submitted(job=job, key="pi/seed0", submitted=0.0)
    monkeypatch.setattr(slurm, "_in_queue", lambda ids: {"7"})
    executor._refresh([sub])
    assert executor._outcome(sub) is None and job.watcher.updates == 1  # still queued
    monkeypatch.setattr(slurm, "_in_queue", lambda ids: None)  # squeue did not answer
    executor._refresh([sub])
    assert executor._outcome(sub) is None
    monkeypatch.setattr(slurm, "_in_queue", lambda ids: set())
    executor._refresh([sub])
    result = executor._outcome(sub)
    assert (
        result["status"] == "failed"
        and "slurm job 7 ended (UNKNOWN) without a result" in (result["error"])
    )
    assert str(paths.stdout) in result["error"]
