"""Several pipelines on one runs tree: run locks (exclusive, crash-safe), the executor's decision
under the lock, the index merged under its lock, and two real pipelines at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import skdlib.experiments as ex
from skdlib.experiments.executors import BUSY, claimed
from skdlib.experiments.index import write_index
from skdlib.experiments.locks import holder_of, run_lock
from skdlib.experiments.runs import PORTABLE_HASH
from skdlib.filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "configs" / "experiments.yaml"


def test_a_lock_excludes_others_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "run" / ".run.lock"
    assert holder_of(path) is None
    mine = FileLock(path)
    assert mine.acquire(timeout=0) and mine.held
    # A second lock object on the same file is another claimant, also in this process.
    other = FileLock(path)
    start = time.monotonic()
    assert not other.acquire(timeout=0.5)
    assert time.monotonic() - start >= 0.5
    holder = holder_of(path)
    assert holder is not None and f"pid {os.getpid()}" in holder
    mine.release()
    assert holder_of(path) is None and other.acquire(timeout=0)
    other.release()


def test_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".run.lock"
    code = (
        "import sys, time; from skdlib.filelock import FileLock; "
        f"FileLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert f"pid {holder.pid}" in (holder_of(path) or "")
        assert not FileLock(path).acquire(timeout=0)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no release, no cleanup
        holder.wait()
    lock = FileLock(path)
    assert lock.acquire(timeout=5)  # the kernel released it with the process
    lock.release()


def _spec(tmp_path: Path, name: str = "pi") -> ex.RunSpec:
    return ex.build_runs(
        ex.load_plan(PLAN), "smoke", runs_root=tmp_path, project_root=REPO, only=[name]
    )[1]


def test_the_executor_decides_again_under_the_lock(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    payload = {"run_dir": str(spec.run_dir), "config_hash": spec.reuse_hash, "forced": False}
    payload |= {"roots": dict(spec.roots)}
    payload |= {"resume": False, "force": False}
    ran: list[dict] = []

    def run(decided):
        ran.append(dict(decided))
        return {"status": "finished", "error": None, "elapsed_s": 1.0}

    with FileLock(run_lock(spec.run_dir)):  # another claimant holds it
        result = claimed(payload, run)
    assert result["status"] == BUSY and f"pid {os.getpid()}" in result["holder"] and not ran
    assert claimed(payload, run)["status"] == "finished" and not ran[-1]["resume"]
    # Another process left a partial run: resumed, though the pipeline planned a new one.
    (spec.run_dir / "checkpoints").mkdir(parents=True)
    (spec.run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    claimed(payload, run)
    assert ran[-1]["resume"] and not ran[-1]["force"]
    # ... and finished it: reused, nothing runs.
    summary = {"finished": True, "config_hash": spec.hash, PORTABLE_HASH: spec.reuse_hash}
    (spec.run_dir / "summary.json").write_text(json.dumps(summary))
    result = claimed(payload, run)
    assert result["status"] == "finished" and result["reused"] and len(ran) == 2
    assert claimed({**payload, "forced": True}, run)["status"] == "finished" and ran[-1]["force"]


def test_index_writers_merge_and_never_lose_entries(tmp_path: Path) -> None:
    plan = ex.load_plan(PLAN)
    prof = plan.profile("smoke")
    index = tmp_path / "smoke" / "index.json"

    def runs(only):
        return ex.build_runs(plan, "smoke", runs_root=tmp_path, project_root=REPO, only=only)

    def write(specs, states):
        write_index(index, plan, prof, specs, states, num_classes=8, project_root=REPO)

    def statuses():
        data = json.loads(index.read_text())
        found = {e["name"]: e["runs"][0]["status"] for e in data["experiments"]}
        return data["teacher"]["status"], found

    a, b = runs(["baseline", "pi"]), runs(["pi", "pi_pa"])
    write(a, {s.key: {"status": "pending"} for s in a})
    write(b, {s.key: {"status": "pending"} for s in b})
    assert statuses() == ("pending", {"baseline": "pending", "pi": "pending", "pi_pa": "pending"})
    # Writer a finished baseline (its state) and writer b's pi is finished on disk: b's next
    # write says so although b still holds "pending" for it; a's failure of pi_pa is kept.
    a_students, b_students = ([s for s in x if s.experiment] for x in (a, b))
    pi = b_students[0].run_dir
    pi.mkdir(parents=True)
    summary = {"finished": True, PORTABLE_HASH: b_students[0].reuse_hash}
    (pi / "summary.json").write_text(json.dumps(summary))
    write(a, {a_students[0].key: {"status": "finished", "elapsed_s": 3.0}})
    write(b, {s.key: {"status": "pending"} for s in b})
    assert statuses()[1] == {"baseline": "finished", "pi": "finished", "pi_pa": "pending"}
    data = json.loads(index.read_text())
    assert data["experiments"][0]["runs"][0]["elapsed_s"] == 3.0  # kept from a's entry
    assert (index.parent / ".index.json.lock").is_file()


def _logged(log: str, word: str) -> list[str]:
    return re.findall(rf"\] {word} (\S+)", log)


@pytest.mark.slow
def test_two_pipelines_on_one_tree_train_each_run_once(tmp_path: Path) -> None:
    """The issue's case: two pipelines on one runs tree at once. Each run trains once, both exit
    0, the index lists every run finished."""
    names = ["baseline", "pi", "pi_pa"]
    command = [sys.executable, "-m", "skdlib.experiments", "run", "--profile", "smoke"]
    command += ["--root", str(REPO), "--runs-root", str(tmp_path / "runs"), "--only", *names]
    command += ["--set", f"data.root={tmp_path / 'data'}", "--executor", "inprocess"]
    command += ["--poll-s", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    # One pipeline trains in worker processes (they hold the locks), the other in itself.
    procs = [
        subprocess.Popen(
            [*command, "--jobs", jobs], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env
        )
        for jobs, log in zip(("2", "1"), logs, strict=True)
    ]
    codes = [proc.wait(timeout=600) for proc in procs]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts
    keys = ["pretrain_teacher", "teacher", "pretrain", *(f"{name}/seed0" for name in names)]
    trained = [key for text in texts for key in _logged(text, "finished")]
    assert sorted(trained) == sorted(keys), texts  # each run trained once, by one of them
    for text in texts:  # each pipeline trained some and took the others' over
        assert sorted(_logged(text, "finished") + _logged(text, "reuse")) == sorted(keys), text
    root = tmp_path / "runs" / "smoke"
    index = json.loads((root / "index.json").read_text())
    assert index["teacher"]["status"] == "finished"
    assert [(e["name"], [r["status"] for r in e["runs"]]) for e in index["experiments"]] == [
        (name, ["finished"]) for name in names
    ]
    for key in keys[2:]:  # three iterations each, none trained twice
        records = [json.loads(line) for line in (root / key / "metrics.jsonl").open()]
        assert [r["iter"] for r in records if "split" not in r] == [1, 2, 3]


class _FakeRunner:
    """An executor that 'trains' a run by writing its finished summary."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def __enter__(self) -> _FakeRunner:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run_one(self, payload: dict) -> dict:
        self.ran.append(payload["run_dir"])
        folder = Path(payload["run_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"finished": True, PORTABLE_HASH: payload["config_hash"]}
        (folder / "summary.json").write_text(json.dumps(summary))
        return {"status": "finished", "error": None, "elapsed_s": 0.1}

    def run_many(self, payloads, *, started, finished) -> None:
        for key, payload in payloads:
            started(key)
            finished(key, self.run_one(payload))


def _finish_by_hand(spec: ex.RunSpec) -> None:
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"finished": True, "config_hash": spec.hash, PORTABLE_HASH: spec.reuse_hash}
    (spec.run_dir / "summary.json").write_text(json.dumps(summary))


def test_the_pipeline_waits_for_a_teacher_and_comes_back_to_held_runs(tmp_path, monkeypatch):
    """Another process holds the teacher and pi/seed0: the pipeline waits for the teacher (the
    students need it), runs baseline, then reuses pi once the other process finished it."""
    import threading

    import skdlib.experiments.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_ensure_data", lambda runs, actions: 8)
    options = {"runs_root": tmp_path, "project_root": REPO, "only": ["baseline", "pi"]}
    specs = {s.key: s for s in ex.build_runs(ex.load_plan(PLAN), "smoke", **options)}
    teacher, baseline, pi = specs["teacher"], specs["baseline/seed0"], specs["pi/seed0"]
    # The pretraining runs (the teacher's own, the students') are done already.
    done = [s for s in specs.values() if s.experiment is None and not s.is_teacher]
    assert [s.key for s in done] == ["pretrain_teacher", "pretrain"]
    for spec in done:
        _finish_by_hand(spec)
    locks = {spec.key: FileLock(run_lock(spec.run_dir)) for spec in (teacher, pi)}
    for lock in locks.values():
        assert lock.acquire(timeout=0)
    runner = _FakeRunner()
    results: list[dict] = []
    thread = threading.Thread(
        target=lambda: results.append(
            ex.run_pipeline(
                "smoke", plan_path=PLAN, executor="inprocess", runner=runner, poll_s=0.05, **options
            )
        )
    )
    thread.start()
    time.sleep(1.0)
    assert runner.ran == [] and thread.is_alive()  # waiting for the teacher
    _finish_by_hand(teacher)
    locks["teacher"].release()
    deadline = time.monotonic() + 30
    while runner.ran != [str(baseline.run_dir)]:
        assert time.monotonic() < deadline, runner.ran
        time.sleep(0.05)
    time.sleep(0.3)
    assert thread.is_alive()  # baseline done, pi still held by the other process
    _finish_by_hand(pi)
    locks["pi/seed0"].release()
    thread.join(timeout=30)
    assert not thread.is_alive() and results[0]["failed"] == []
    assert runner.ran == [str(baseline.run_dir)]  # the teacher and pi were never run here
    index = json.loads((tmp_path / "smoke" / "index.json").read_text())
    assert index["teacher"]["status"] == "finished"
    assert [e["runs"][0]["status"] for e in index["experiments"]] == ["finished", "finished"]
