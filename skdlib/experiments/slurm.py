"""``--executor slurm``: each run a SLURM job, submitted and watched with ``submitit``.

One job per run: the job runs :func:`~skdlib.experiments.executors.execute_notebook_run` (the
training notebook under papermill; the MyST source is converted inside the job) or, without a
notebook, :func:`~skdlib.experiments.executors.execute_inprocess_run`: the same functions as on
one machine, so the job takes the run's lock (:mod:`skdlib.experiments.locks`) and decides under
it whether to train, resume or reuse. With ``nproc_per_run > 1`` the job is one task that starts
the run's processes itself (torch's elastic launcher), on the job's ``gpus_per_run`` GPUs.

What a job asks for comes from :class:`~skdlib.experiments.plan.SlurmOptions` (the profile's
``slurm`` keys, replaced by command-line options): partition, GPUs, CPUs, memory, time limit.
Its logs (``<job id>_0_log.out``, ``_log.err``, submitit's pickles) go to ``<run_dir>/slurm/``.

Waiting: every ``poll_s`` seconds the pipeline looks for each job's result file and asks SLURM
(``sacct``, one call for all jobs) for the states; submitit's own back-off (up to 10 minutes
between calls) would leave a dead job unseen for that long. Where ``sacct`` says nothing of a
job (a cluster without accounting, a database that is down), a job that ``squeue`` no longer
lists has ended: submitit alone would wait for it forever. A job that ended without a result
(killed, out of memory, cancelled, past its time limit) is reported failed, naming its state and
log, after ``result_grace_s`` (the result file may reach a shared file system late). Its run
folder keeps the last checkpoint: running the pipeline again resumes it. Interrupting the
pipeline leaves its jobs running (named ``skd-<experiment>-<seed>``; ``scancel --name`` them):
a pipeline started again waits for the runs they hold and reuses them. Two pipelines may both
submit a job for one run; the second job to start finds the run held (``busy``) or finished
(reused) and ends at once. The executor needs the
runs tree, the project and the Python environment at the same paths on the compute nodes (a
shared file system), as every SLURM workflow does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from skdlib.experiments.executors import (
    Payload,
    Result,
    execute_inprocess_run,
    execute_notebook_run,
    short_error,
)
from skdlib.experiments.plan import SlurmOptions

__all__ = ["SLURM_LOG_DIR", "SlurmExecutor"]

logger = logging.getLogger(__name__)

#: The folder of a run's SLURM logs, inside its run folder.
SLURM_LOG_DIR = "slurm"
#: Seconds a job that ended without a result file is given for the file to appear (submitit's
#: own wait: ``Job._results_timeout_s``).
RESULT_GRACE_S = 15.0


@dataclasses.dataclass
class _Submitted:
    job: Any  #: submitit.Job
    key: str
    submitted: float
    ended: float | None = None  #: when the job was first seen ended without a result
    gone: bool = False  #: squeue no longer lists it (for clusters whose sacct says nothing)


class SlurmExecutor:
    """Runs as SLURM jobs (``cluster="slurm"``) or as submitit's local jobs (``cluster="local"``:
    subprocesses of this machine, the same submission and pickles; for tests).

    Args:
        notebook: the training notebook (a MyST ``.md`` or ``.ipynb``), or None to call
            ``train()`` in the job.
        cwd: the notebook's working directory (the project root).
        options: what each job asks for.
        jobs: jobs in flight at most (None: every run at once; SLURM queues them).
        poll_s: seconds between two looks at the jobs.
        job_function: what a job runs (default: the executors' functions; a test swaps it).
    """

    def __init__(
        self,
        *,
        notebook: str | Path | None,
        cwd: str | Path,
        options: SlurmOptions,
        jobs: int | None = None,
        poll_s: float = 10.0,
        cluster: str = "slurm",
        result_grace_s: float = RESULT_GRACE_S,
        job_function: Callable[..., Result] | None = None,
    ) -> None:
        if jobs is not None and jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.notebook = str(Path(notebook).resolve()) if notebook is not None else None
        self.cwd, self.options, self.jobs = str(cwd), options, jobs
        self.poll_s, self.cluster, self.result_grace_s = poll_s, cluster, result_grace_s
        self.job_function = job_function

    def __enter__(self) -> SlurmExecutor:
        import submitit  # noqa: F401  (fail now, with its name, when it is not installed)

        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def parameters(self, payload: Payload) -> dict[str, Any]:
        """The submitit parameters of one run's job."""
        opts = self.options
        nproc, threads = int(payload.get("nproc", 1)), int(payload.get("threads", 1))
        params: dict[str, Any] = {
            "name": f"skd-{Path(payload['run_dir']).parent.name}-{Path(payload['run_dir']).name}",
            "timeout_min": opts.time_min,
            "nodes": 1,
            "tasks_per_node": 1,  # the job starts the run's processes itself
            "cpus_per_task": opts.cpus_per_run or threads * nproc,
            "gpus_per_node": opts.gpus_per_run,
        }
        if opts.mem_gb is not None:
            params["mem_gb"] = opts.mem_gb
        if opts.partition is not None:
            params["slurm_partition"] = opts.partition
        return params

    def _submit(self, payload: Payload) -> Any:
        import submitit

        folder = Path(payload["run_dir"]) / SLURM_LOG_DIR
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        executor.update_parameters(**self.parameters(payload))
        if self.job_function is not None:
            return executor.submit(self.job_function, dict(payload))
        if self.notebook is None:
            return executor.submit(execute_inprocess_run, {**payload, "devices": None})
        return executor.submit(
            execute_notebook_run, self.notebook, {**payload, "devices": None}, self.cwd
        )

    def run_one(self, payload: Payload) -> Result:
        """One run as one job; waits for it."""
        results: list[Result] = []
        self.run_many(
            [("run", payload)], started=lambda key: None, finished=lambda k, r: results.append(r)
        )
        return results[0]

    def run_many(
        self,
        payloads: Sequence[tuple[str, Payload]],
        *,
        started: Callable[[str], None],
        finished: Callable[[str, Result], None],
    ) -> None:
        """Submit every ``(key, payload)`` (``jobs`` in flight at most) and wait for them;
        ``started(key)`` at submission, ``finished(key, result)`` when a job ends."""
        queue = list(payloads)
        running: list[_Submitted] = []
        while queue or running:
            while queue and (self.jobs is None or len(running) < self.jobs):
                key, payload = queue.pop(0)
                started(key)
                try:
                    job = self._submit(payload)
                except Exception as exc:  # sbatch refused it (partition, limits, ...)
                    finished(key, {"status": "failed", "error": short_error(exc), "elapsed_s": 0})
                    continue
                logger.info(
                    "%s: SLURM job %s, log %s", key, job.job_id, Path(job.paths.stdout).parent
                )
                running.append(_Submitted(job=job, key=key, submitted=time.perf_counter()))
            if not running:
                continue
            time.sleep(self.poll_s)
            self._refresh(running)
            for sub in list(running):
                result = self._outcome(sub)
                if result is not None:
                    running.remove(sub)
                    finished(sub.key, result)

    def _refresh(self, running: Sequence[_Submitted]) -> None:
        """For the jobs without a result yet (SLURM only): one ``sacct`` call for their states,
        and one ``squeue`` call for those sacct says nothing about."""
        waiting = [s for s in running if not s.job.paths.result_pickle.exists()]
        if not waiting or self.cluster != "slurm":
            return
        waiting[0].job.watcher.update()
        unknown = [s for s in waiting if _sacct_state(s.job) == "UNKNOWN"]
        if unknown:
            queued = _in_queue([s.job.job_id for s in unknown])
            for sub in unknown:
                sub.gone = queued is not None and sub.job.job_id not in queued

    def _ended(self, sub: _Submitted) -> bool:
        if self.cluster != "slurm":
            return bool(sub.job.done())
        state = _sacct_state(sub.job)
        if state == "UNKNOWN":  # no accounting (or not yet): ended when squeue lost it
            return sub.gone
        return state not in _SLURM_ACTIVE

    def _outcome(self, sub: _Submitted) -> Result | None:
        """The job's result when it has ended, else None."""
        job = sub.job
        if job.paths.result_pickle.exists():
            try:
                return job.result()
            except Exception as exc:  # the job raised outside the run (an import, a pickle)
                return {"status": "failed", "error": _job_error(exc), "elapsed_s": 0.0}
        if not self._ended(sub):
            return None
        now = time.perf_counter()
        if sub.ended is None:
            sub.ended = now
        if now - sub.ended < self.result_grace_s:
            return None
        state = job.state if self.cluster != "slurm" else _sacct_state(job)
        return {
            "status": "failed",
            "error": f"{self.cluster} job {job.job_id} ended ({state}) without a result; "
            f"its log: {job.paths.stdout}",
            "elapsed_s": now - sub.submitted,
        }


#: SLURM job states of a job that may still write its result (submitit's list).
_SLURM_ACTIVE = frozenset(
    {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING"}
)


def _sacct_state(job: Any) -> str:
    """The job's state from the last ``sacct`` call (no new call); ``UNKNOWN`` without one."""
    return str(job.watcher.get_state(job.job_id, mode="cache")).split()[0].upper()


def _in_queue(job_ids: Sequence[str]) -> set[str] | None:
    """The ids among ``job_ids`` that ``squeue`` still lists (pending, running, completing);
    None when squeue does not answer."""
    import subprocess

    command = ["squeue", "--noheader", "--format=%i", "--jobs", ",".join(job_ids)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        return None
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _job_error(exc: BaseException) -> str:
    """The last error line of the traceback that submitit's FailedJobError carries."""
    lines = [line for line in str(exc).splitlines() if line and not line.startswith((" ", "-"))]
    errors = [line for line in lines if "Error" in line.partition(":")[0]]
    return errors[-1] if errors else short_error(exc)
