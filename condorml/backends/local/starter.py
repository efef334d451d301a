"""Running one job the way an HTCondor execute point does, on this machine: process control.

The sandbox and its file transfers are in :mod:`.sandbox`; here, the executable is started,
waited for, signalled, restarted after a checkpoint and evicted at random when asked.

* Each execution gets a fresh scratch folder (the sandbox): the executable and the inputs are
  copied in (``file://`` URLs too; another URL scheme holds the job), plus the spooled
  checkpoint when the job ran before.
* The executable runs there with its arguments and a job's environment (not the submitting
  shell's, see :func:`job_environment`): ``_CONDOR_SCRATCH_DIR``, ``OMP_NUM_THREADS`` =
  ``request_cpus``, ``getenv`` and ``environment``; CPU affinity to that many cores.
* Exit with ``checkpoint_exit_code``: ``transfer_checkpoint_files`` (and stdout/stderr) go to
  the job's spool folder and the executable starts again in the *same* sandbox, as HTCondor's
  starter does; the event log shows a pair of 040 output-transfer events.
* An eviction (injected at random, if asked): SIGTERM, SIGKILL after a grace period, event 004,
  then a *fresh* sandbox with the inputs plus the spooled checkpoint and a new 001, exactly
  what a move to another execute point looks like.
* Any other exit: outputs go back to ``initialdir`` (``preserve_relative_paths`` and
  ``transfer_output_remaps`` honoured); a listed output that does not exist holds the job
  (event 012), which fails the DAG node with the reason.
* ``want_io_proxy = true`` (not in the local universe, as on a pool): a Chirp proxy for the
  job's whole life (:mod:`.chirp`), its ``.chirp.config`` in every sandbox and
  ``_CONDOR_CHIRP_CONFIG`` pointing at it; what the job sets in its ad goes to ``job_ad``.
* A ``container`` or ``docker`` universe job with a Docker image runs in it where Docker
  answers (:mod:`.container`: pulled, created and started as the starter does, stopped with
  ``docker stop`` when evicted); elsewhere in this machine's environment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from condorml.backends.local import container
from condorml.backends.local.chirp import ChirpProxy, JobAttributes
from condorml.backends.local.container import DockerRun, container_environment, memory_hold
from condorml.backends.local.eventlog import EventLog
from condorml.backends.local.jobspec import JobSpec
from condorml.backends.local.sandbox import (
    CHIRP_CONFIG,
    STDERR,
    STDOUT,
    Held,
    prepare_sandbox,
    spool_checkpoint,
    transfer_output,
)

_POLL_S = 0.05
_BUSY_RETRIES = 8  # starts refused with ETXTBSY tried again, 10 ms doubling (2.5 s in all)


@dataclass
class Evictions:
    """Injected evictions: each start of the executable is evicted with ``probability``,
    after a delay drawn uniformly from ``window`` seconds; SIGKILL follows SIGTERM after ``grace``."""

    probability: float = 0.0
    window: tuple[float, float] = (1.0, 20.0)
    grace: float = 5.0
    seed: int = 0

    def rng(self, job: JobSpec) -> random.Random:
        """A generator per job, so that what happens to a job does not depend on the others."""
        return random.Random(f"{self.seed}:{job.cluster}:{job.proc}")


@dataclass
class JobOutcome:
    """How a job ended."""

    status: str  # "exited", "held", "removed"
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    starts: int = 0
    checkpoints: int = 0
    evictions: int = 0

    @property
    def return_value(self) -> int:
        """DAGMan's view: the exit code, or -signal, or 1 for a held or removed job."""
        if self.status != "exited":
            return 1
        return self.exit_code if self.signal is None else -self.signal


class Starter:
    """Run one job to its end: transfers, restarts after checkpoints, evictions, outputs.

    Parameters
    ----------
    job : JobSpec
        The job.
    events : EventLog
        Where its events go.
    scratch_root, spool : Path
        Parent of the sandboxes; the job's checkpoint spool folder.
    cores : list of int
        CPU cores the job may use (its affinity).
    evictions : Evictions
        Injected evictions (probability 0: none).
    cancel : threading.Event
        Set to remove the job (Ctrl-C, DAG abort).
    job_ad : Path, optional
        The JSON file where the attributes the job sets through Chirp are kept
        (:func:`condorml.sweep.rundir.local_job_ad`); None: in memory only.
    """

    def __init__(self, job: JobSpec, events: EventLog, scratch_root: Path, spool: Path,
                 cores: list[int], evictions: Evictions, cancel: threading.Event,
                 job_ad: Path | None = None) -> None:  # fmt: skip
        self.job, self.events, self.scratch_root, self.spool = job, events, scratch_root, spool
        self.cores, self.evictions, self.cancel, self.job_ad = cores, evictions, cancel, job_ad
        self.rng = evictions.rng(job)
        self.outcome = JobOutcome("exited")
        self.proxy: ChirpProxy | None = None

    def run(self) -> JobOutcome:
        """Run the job (blocking) and return how it ended."""
        self.events.submitted()
        job = self.job
        if job.want_io_proxy and job.universe != "local":  # a pool's local universe has none
            builtin = {"ClusterId": str(job.cluster), "ProcId": str(job.proc)}
            self.proxy = ChirpProxy(self.events, JobAttributes(self.job_ad, builtin)).start()
        try:
            return self._run()
        finally:
            if self.proxy is not None:
                self.proxy.stop()

    def _run(self) -> JobOutcome:
        try:
            if self.job.universe == "local":
                return self._run_local()
            while True:
                sandbox = self._sandbox_folder()
                prepare_sandbox(self.job, self.events, sandbox, self.spool)
                if self.proxy is not None:
                    self.proxy.write_config(sandbox)
                try:
                    result = self._execute(sandbox)
                finally:
                    shutil.rmtree(sandbox, ignore_errors=True)
                if result is not None:
                    return result
        except Held as held:
            self.events.held(str(held), held.code, held.subcode)
            self.outcome.status, self.outcome.reason = "held", str(held)
            return self.outcome

    # --- the local universe: no sandbox, no transfer -------------------------------------------

    def _run_local(self) -> JobOutcome:
        job = self.job
        self.events.executing(job.iwd, job.cpus, job.memory_mb)
        stdout = open(job.iwd / job.stdout, "ab") if job.stdout else subprocess.DEVNULL  # noqa: SIM115
        stderr = open(job.iwd / job.stderr, "ab") if job.stderr else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = self._start([str(job.executable), *job.arguments], job.iwd, stdout, stderr)
            code = self._wait(process, deadline=None)
        finally:
            for handle in (stdout, stderr):
                if handle is not subprocess.DEVNULL:
                    handle.close()
        return self._finish_without_transfer(code)

    def _finish_without_transfer(self, code: int | None) -> JobOutcome:
        if code is None:
            return self._removed()
        self._record_exit(code)
        return self.outcome

    # --- vanilla / container / docker ----------------------------------------------------------

    def _sandbox_folder(self) -> Path:
        """A new folder per execution: an eviction's restart does not reuse the last one."""
        job = self.job
        name = f"dir_{job.cluster}_{job.proc}_{self.outcome.starts}_{os.getpid()}"
        return self.scratch_root / name

    def _docker_run(self) -> DockerRun | None:
        """How this execution runs in the job's image; None: on this machine, without one."""
        image = container.docker_reference(self.job)
        if image is None or not container.docker_available():
            return None
        job = self.job
        return DockerRun(
            image, f"condorml-{job.cluster}.{job.proc}-{self.outcome.starts}-{os.getpid()}"
        )

    def _execute(self, sandbox: Path) -> JobOutcome | None:
        """Run in ``sandbox`` until the job ends (an outcome) or is evicted (None)."""
        job = self.job
        if (docker := self._docker_run()) is not None:
            docker.pull()  # before the job executes, as on a pool: a failed pull holds it
        self.events.executing(sandbox, job.cpus, job.memory_mb)
        executable = sandbox / job.executable.name if job.transfer_executable else job.executable
        while True:
            deadline = None
            if self.evictions.probability and self.rng.random() < self.evictions.probability:
                deadline = time.monotonic() + self.rng.uniform(*self.evictions.window)
            with open(sandbox / STDOUT, "ab") as out, open(sandbox / STDERR, "ab") as err:
                if docker is None:
                    process = self._start([str(executable), *job.arguments], sandbox, out, err)
                    code = self._wait(process, deadline)
                else:
                    code = self._run_container(docker, sandbox, out, err, deadline)
            if code is None:
                if self.cancel.is_set():
                    # a pool logs a running job's removal as 004 (its claim ends), then 009
                    self.events.evicted("Claim deactivated (the job was removed)")
                    return self._removed()
                self.outcome.evictions += 1
                self.events.evicted(
                    "condorml local backend: injected eviction (as if the machine were reclaimed)"
                )
                return None
            if job.checkpoint_exit_code is not None and code == job.checkpoint_exit_code:
                spool_checkpoint(job, self.events, sandbox, self.spool)
                self.outcome.checkpoints += 1
                continue  # HTCondor restarts the executable in the same sandbox
            transfer_output(job, self.events, sandbox)
            self._record_exit(code)
            return self.outcome

    def _run_container(self, docker: DockerRun, sandbox: Path, out, err,
                       deadline: float | None) -> int | None:  # fmt: skip
        """One run of the job in its container: its exit code, or None (evicted or removed)."""
        env = container_environment(job_environment(self.job, sandbox), sandbox)
        docker.create(self.job, sandbox, env, self.cores)
        try:
            process = subprocess.Popen(docker.start_argv(), cwd=sandbox, stdout=out, stderr=err,
                                       stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            self.outcome.starts += 1
            code = self._wait(process, deadline, docker)
            if code is not None and docker.over_memory():
                raise memory_hold(self.job)
            return code
        finally:
            docker.remove()

    def _start(self, argv: list[str], cwd: Path, stdout, stderr) -> subprocess.Popen:
        env = job_environment(self.job, cwd)
        for attempt in range(_BUSY_RETRIES + 1):
            try:
                process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                                           stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
                break
            except OSError as err:
                # "Text file busy": another job's thread forked while this sandbox's copy of the
                # executable was open for writing; its child holds that descriptor until its own
                # exec (a moment), so the copy is runnable again shortly after
                if err.errno == errno.ETXTBSY and attempt < _BUSY_RETRIES:
                    time.sleep(0.01 * 2**attempt)
                    continue
                raise Held(
                    f"Failed to execute '{argv[0]}': {err.strerror or err}", 6, err.errno or 0
                ) from None
        if self.cores and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):  # the process may already be gone
                os.sched_setaffinity(process.pid, self.cores)
        self.outcome.starts += 1
        return process

    def _wait(self, process: subprocess.Popen, deadline: float | None,
              docker: DockerRun | None = None) -> int | None:  # fmt: skip
        """The exit code, or None when the job was evicted or removed (it is then stopped)."""
        while True:
            try:
                return process.wait(timeout=_POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if self.cancel.is_set() or (deadline is not None and time.monotonic() >= deadline):
                if docker is not None:  # the container, not the client attached to it
                    docker.stop(self.evictions.grace)
                self._stop(process)
                return None

    def _stop(self, process: subprocess.Popen) -> None:
        """SIGTERM, then SIGKILL to the whole process group after the grace period."""
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=self.evictions.grace)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _record_exit(self, code: int) -> None:
        if code < 0:
            self.outcome.signal = -code
            self.events.terminated(None, -code)
        else:
            self.outcome.exit_code = code
            self.events.terminated(code)

    def _removed(self) -> JobOutcome:
        self.events.aborted("via condorml run (DAG interrupted or aborted)")
        self.outcome.status, self.outcome.reason = "removed", "removed"
        return self.outcome


# What an execute point sets to the job's CPU count (seen on a real pool: condor_starter 25.0)
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "NUMEXPR_NUM_THREADS", "PYTHON_CPU_COUNT")  # fmt: skip
# The execute point's own software: this backend's Python first, then the usual system folders
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def job_environment(job: JobSpec, sandbox: Path) -> dict[str, str]:
    """The job's environment, as HTCondor builds it: not the submitting shell's.

    A real pool gives a job only what HTCondor sets (``_CONDOR_SCRATCH_DIR``, ``HOME``, the
    thread counts, ...) plus ``getenv`` and ``environment`` (resolved in :mod:`.jobs`); no
    PATH. Two deliberate additions stand in for the execute point's software: a vanilla job
    (or a container job run without its image, where Docker is missing) finds this backend's
    own condorml first on its PATH, and a local-universe job, which runs on the access point,
    gets no PATH at all, as on a pool. In a container the image's PATH applies
    (:func:`~condorml.backends.local.container.container_environment`).
    """
    env = {"BATCH_SYSTEM": "HTCondor", "_CONDOR_SCRATCH_DIR": str(sandbox)}
    for name in ("HOME", "LANG", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    if job.universe == "local":
        env["_CONDOR_JOB_IWD"] = str(job.iwd)
    else:
        env["_CONDOR_JOB_IWD"] = str(sandbox)
        if job.want_io_proxy:  # the Starter writes the file before the job starts
            env["_CONDOR_CHIRP_CONFIG"] = str(sandbox / CHIRP_CONFIG)
        env.update(dict.fromkeys(_THREAD_VARIABLES, str(job.cpus)))
        env["PATH"] = f"{Path(sys.executable).parent}:{_SYSTEM_PATH}"
    env.update(job.environment)
    return env
