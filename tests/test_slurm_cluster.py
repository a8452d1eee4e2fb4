"""submitit against a real single-node SLURM cluster, and through submitit's LocalExecutor.

The tests marked `slurm` need a running cluster: `make test-slurm` starts one on this machine
(tests/slurm/start_cluster.sh: Debian's munge, slurmctld, slurmd and slurmdbd, partition `debug`)
and runs them with SKD_SLURM=1; without SKD_SLURM=1 and `sinfo` on PATH they are skipped. They
check that a job submitted through submitit.AutoExecutor(cluster="slurm") runs under SLURM and
returns its result, that an exception in the job reaches the caller through job.result(), and that
a job that ends without a result (killed, or cancelled with scancel) is reported instead of waited
on forever (submitit reads the state from sacct: the test cluster has accounting for that).

The LocalExecutor test always runs (about 1 s a job on 2 cores: a subprocess that unpickles the
function; DebugExecutor would be instant, but it runs the function in this process without the
pickle round trip and opens pdb on an exception, so it checks less).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

# The job's Python cannot import this test module (pytest puts tests/ on sys.path, the job does not
# get it): pickle its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PARTITION = "debug"
JOB_TIMEOUT_S = 60  # a tiny job normally ends in 1-3 s here


def add_in_job(a: int, b: int) -> dict:
    """The sum, and the SLURM job it ran as (SLURM_JOB_ID, set by SLURM in a job)."""
    return {"sum": a + b, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def fail_in_job(message: str) -> None:
    raise ValueError(message)


def die_in_job() -> None:
    """End the job's process at once (SIGKILL): no result file, no traceback."""
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_in_job(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


def _wait(job: submitit.Job, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Wait for the job to end; fail (rather than hang) with its state and logs after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not job.done(force_check=True):  # sacct at each poll (submitit's own backs off to 60 s)
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(
                f"job {job.job_id} not done after {timeout_s}s (state {job.state});"
                f"\nstdout: {job.stdout()}\nstderr: {job.stderr()}"
            )
        time.sleep(0.5)


def _final_state(job: submitit.Job, timeout_s: float = JOB_TIMEOUT_S) -> str:
    """The job's state in SLURM (sacct) once it has left RUNNING/COMPLETING: the result file is
    written before the job's process exits, so done() can be true while SLURM still runs it."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = job.watcher.get_state(job.job_id, mode="force")
        if state not in ("UNKNOWN", "PENDING", "RUNNING", "COMPLETING"):
            return state
        assert time.monotonic() < deadline, f"job {job.job_id} still {state} after {timeout_s}s"
        time.sleep(0.5)


@pytest.fixture
def slurm_executor(tmp_path) -> submitit.AutoExecutor:
    if os.environ.get("SKD_SLURM") != "1":
        pytest.skip("needs a running SLURM cluster and SKD_SLURM=1 (`make test-slurm` does both)")
    if shutil.which("sinfo") is None:
        pytest.skip("SKD_SLURM=1 but sinfo is not on PATH (no SLURM client installed)")
    config = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=False
    ).stdout
    if "accounting_storage/none" in config:
        pytest.fail(
            "the SLURM cluster has no accounting, so sacct (which submitit reads job states from) "
            "does not answer: start it with tests/slurm/start_cluster.sh, SKD_SLURM_ACCOUNTING=1"
        )
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    assert executor.cluster == "slurm"
    executor.update_parameters(
        slurm_partition=PARTITION, cpus_per_task=1, mem_gb=1, timeout_min=2, name="skd-test"
    )
    return executor


@pytest.mark.slurm
def test_slurm_job_returns_its_result(slurm_executor):
    job = slurm_executor.submit(add_in_job, 2, 3)
    _wait(job)
    result = job.result()
    assert result["sum"] == 5
    assert result["slurm_job_id"] == job.job_id  # it ran as that SLURM job
    assert _final_state(job) == "COMPLETED"  # sacct answers


@pytest.mark.slurm
def test_slurm_job_error_reaches_the_caller(slurm_executor):
    job = slurm_executor.submit(fail_in_job, "boom from the job")
    _wait(job)
    with pytest.raises(FailedJobError, match=r"ValueError: boom from the job"):
        job.result()
    assert _final_state(job) == "FAILED"


@pytest.mark.slurm
def test_slurm_job_that_dies_is_reported_not_awaited(slurm_executor):
    job = slurm_executor.submit(die_in_job)
    # No result file will come: only sacct's state ends the wait. Then job.result() still waits
    # _results_timeout_s (15 s, for slow shared file systems) for the result file: 1 s here.
    _wait(job)
    job._results_timeout_s = 1
    with pytest.raises(UncompletedJobError, match=r"has not produced any output"):
        job.result()
    assert _final_state(job) == "FAILED"


@pytest.mark.slurm
def test_slurm_cancelled_job_is_reported_not_awaited(slurm_executor):
    job = slurm_executor.submit(sleep_in_job, 300)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job.watcher.get_state(job.job_id, mode="force") != "RUNNING":
        assert time.monotonic() < deadline, f"job {job.job_id} did not start: {job.state}"
        time.sleep(0.5)
    job.cancel()
    _wait(job)
    job._results_timeout_s = 1
    # scancel sends SIGCONT and SIGTERM (submitit ignores both), SIGKILL after KillWait. Sometimes
    # (1 run in 5 here) the job also gets submitit's --signal=USR2 first (its end time, now, is in
    # the 90 s warning window): submitit's handler then writes an error result ("timed-out and not
    # checkpointable", FailedJobError); otherwise no result file comes and the state is reported.
    with pytest.raises((FailedJobError, UncompletedJobError)):
        job.result()
    assert _final_state(job).startswith("CANCELLED")


def test_local_executor_result_and_error(tmp_path):
    executor = submitit.LocalExecutor(folder=tmp_path / "%j")
    executor.update_parameters(timeout_min=2)
    job = executor.submit(add_in_job, 2, 3)
    failing = executor.submit(fail_in_job, "boom from the job")
    _wait(job)
    assert job.result()["sum"] == 5
    _wait(failing)
    with pytest.raises(FailedJobError, match=r"ValueError: boom from the job"):
        failing.result()
