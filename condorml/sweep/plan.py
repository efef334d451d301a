"""``condorml sweep``: a spec becomes a run folder with a DAG, and the DAG goes to a backend.

The side-effect half of sweeps (:mod:`condorml.sweep.spec` and :mod:`condorml.sweep.dag` are
pure). A run folder holds::

    RUN_DIR/spec.toml            the spec, copied (a changed spec is refused unless --force), with
                                 relative_to: run on the copy, sweep reads the same files
    RUN_DIR/members.csv          every member's id, seed and hyperparameters
    RUN_DIR/sweep.dag            the DAG; train.sub, infer.sub, collect.sub and their wrappers
    RUN_DIR/members/<id>/        each member's initialdir: ckpt/ (checkpoints), out/ (predictions)
    RUN_DIR/run.json             what the readers of the folder need (:class:`RunInfo`), last

The names are :mod:`condorml.sweep.rundir`'s.

Running ``condorml sweep`` again with the same spec rewrites the same files and leaves the
members' folders alone, so a resubmitted DAG continues from its rescue file and its members
from their checkpoints.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml.backends.daglock import holder
from condorml.config import TrainConfig
from condorml.errors import CondormlError
from condorml.fileio import atomic_write, atomic_write_text
from condorml.htcondor.inputs import local_path
from condorml.htcondor.submit import write_job
from condorml.job.files import CHECKPOINT_FOLDER
from condorml.sweep.dag import SweepWorkflow, sweep_workflow
from condorml.sweep.members import Member, expand
from condorml.sweep.rundir import (
    DAG_FILE,
    MEMBERS_CSV,
    RUN_JSON,
    SPEC_COPY,
    DataPath,
    RunInfo,
    member_folder,
    submit_file_name,
    write_run_info,
)
from condorml.sweep.spec import HYPERPARAMETERS, SweepSpec, load_spec, spec_copy_text
from condorml.sweep.spec import same_spec as _same_spec

log = logging.getLogger(__name__)


@dataclass
class SweepPlan:
    """A spec expanded for a run folder: everything ``condorml sweep`` would write."""

    spec: SweepSpec
    run_dir: Path
    members: list[Member]
    workflow: SweepWorkflow

    @property
    def dag_file(self) -> Path:
        return self.run_dir / DAG_FILE

    def files(self) -> list[Path]:
        """The files written into the run folder (member folders aside)."""
        names = [SPEC_COPY, MEMBERS_CSV, DAG_FILE]
        for kind, job in self.workflow.jobs.items():
            names += [submit_file_name(kind), job.wrapper_name]
        return [self.run_dir / name for name in [*names, RUN_JSON]]

    def run_info(self) -> RunInfo:
        """``run.json``: the spec's digest, the data paths, the members, the inference shards."""
        copy = spec_copy_text(self.spec, self.run_dir)
        first = member_folder(self.run_dir, self.members[0].member)
        data = {}
        for key, value in self.spec.data.items():
            if "://" in value:  # a URL: fetched by the job, no local path
                data[key] = DataPath(value, None)
                continue
            # as dag.py writes them: labels for the collect job (the run folder), the rest for
            # a member's jobs (its folder)
            folder = self.run_dir if key == "labels" else first
            job = local_path(value, folder, f"[data] {key}", transferred=False)
            data[key] = DataPath(job, os.path.abspath(value))
        return RunInfo(
            spec_sha256=hashlib.sha256(copy.encode()).hexdigest(),
            members=tuple(m.member for m in self.members),
            shards=int(self.spec.inference.get("shards", 1)),
            data=data,
        )

    def member_rows(self) -> list[dict[str, Any]]:
        """``members.csv``: id, seed, and every hyperparameter's effective value."""
        defaults = TrainConfig(Path("."), Path("."))
        search = self.spec.search
        chosen_later = self.spec.swept if search is not None and search.method == "tpe" else ()
        rows = []
        for member in self.members:
            options = member.options(self.spec.train)
            row = {"member": member.member, "seed": member.seed}
            row.update(
                {name: options.get(name, getattr(defaults, name)) for name in HYPERPARAMETERS}
            )
            row.update(dict.fromkeys(chosen_later, ""))  # chosen by TPE when the member starts
            rows.append(row)
        return rows

    def node_counts(self) -> dict[str, int]:
        """Nodes per type (inference counts jobs, which differ from nodes when sharded)."""
        shards = int(self.workflow.jobs["infer"].submit.getQArgs() or 1)  # type: ignore[attr-defined]
        n = len(self.members)
        rungs = len(self.spec.search.rungs(self.spec.epochs)) if self.spec.search else 1
        return {"train": n * rungs, "infer": n, "infer jobs": n * shards, "collect (FINAL)": 1}

    def search_lines(self) -> list[str]:
        """What the dry run says of a ``[search]``: method, rungs, jobs and epochs at most."""
        search, epochs, n = self.spec.search, self.spec.epochs, len(self.members)
        if search is None:
            return []
        lines = [
            f"search: {search.method}, {n} member(s), ranked by {search.metric} ({search.direction})"
        ]
        if search.method == "tpe":
            rounds = -(-n // search.parallel)
            lines.append(
                f"TPE: {rounds} round(s) of {search.parallel}; round 0 at random, each later one from the first-rung results of those before"
            )
        jobs, worst = search.worst_case(n, epochs)
        if search.halving is None:
            lines.append(f"training: {jobs} job(s), {worst} epoch(s)")
            return lines
        expected_jobs, expected = search.expected(n, epochs)
        survivors = search.survivors(n, epochs)
        lines.append(
            "rungs (epochs done: members): "
            + ", ".join(
                f"r{k} {end}: {count}"
                for k, (end, count) in enumerate(
                    zip(search.rungs(epochs), survivors, strict=True), 1
                )
            )
        )
        lines.append(
            f"training: {expected_jobs} job(s), {expected} epoch(s) as planned; worst case (no member stopped) {jobs} job(s), {worst} epoch(s)"
        )
        return lines

    def training_hours(self, epoch_minutes: float) -> tuple[float, float]:
        """Estimated (job hours, GPU hours) of training: members x epochs x minutes per epoch."""
        gpus = int(self.workflow.jobs["train"].submit.get("request_gpus", 0))  # type: ignore[attr-defined]
        default = TrainConfig(Path("."), Path(".")).epochs
        epochs = sum(m.options(self.spec.train).get("epochs", default) for m in self.members)
        if self.spec.search is not None and self.spec.search.halving is not None:
            epochs = self.spec.search.expected(len(self.members), self.spec.epochs)[1]
        hours = epochs * epoch_minutes / 60
        return hours, hours * gpus


def plan_sweep(spec_path: Path, run_dir: Path) -> SweepPlan:
    """Read, validate and expand a spec for ``run_dir``; writes nothing.

    Raises
    ------
    CondormlError
        For any problem with the spec (naming the key) or a value that cannot be written safely.
    """
    spec = load_spec(spec_path)
    members = expand(spec)
    return SweepPlan(spec, run_dir, members, sweep_workflow(spec, members, run_dir))


def write_sweep(plan: SweepPlan, force: bool = False) -> list[Path]:
    """Write the run folder; refuse (or, with ``force``, set aside) one made from another spec.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    CondormlError
        If the run folder runs now (DAGMan or the local backend holds its DAG's lock: its files
        are not rewritten under it, nor moved with ``force``), if it holds another spec's run
        and ``force`` is not set, or if a file cannot be written.
    """
    run_dir = plan.run_dir
    copy = run_dir / SPEC_COPY
    differs = copy.exists() and not _same_spec(copy, plan.spec)
    running = holder(plan.dag_file)
    if running is not None:
        doing = (
            "--force would move it into a previous-N folder while it runs"
            if differs and force
            else "condorml sweep would rewrite its files under it"
        )
        raise CondormlError(
            f"{run_dir} is a live run ({running.what}): {doing}; stop it first: {running.stop}"
        )
    if differs:
        if not force:
            raise CondormlError(
                f"{run_dir} holds a run of another spec ({copy} differs from {plan.spec.path}); "
                "use another --out, or --force to start over (the old run is kept in a previous-N folder)"
            )
        kept = _set_aside(run_dir)
        log.warning("--force: moved the previous run to %s", kept)
    elif copy.exists():
        log.info("%s: same spec, continuing: members keep their folders and checkpoints", run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for member in plan.members:
            # ckpt/ exists from the start: it is an input of the training job (resume after a
            # RETRY or a rescue DAG), and a missing input would hold the job.
            (member_folder(run_dir, member.member) / CHECKPOINT_FOLDER).mkdir(
                parents=True, exist_ok=True
            )
        for kind, job in plan.workflow.jobs.items():
            write_job(job, run_dir / submit_file_name(kind))
        _write_members_csv(run_dir / MEMBERS_CSV, plan.member_rows())
        atomic_write_text(plan.dag_file, "\n".join(plan.workflow.dag_lines) + "\n")
        atomic_write_text(copy, spec_copy_text(plan.spec, run_dir))
        write_run_info(run_dir, plan.run_info())  # last: once the rest is written
    except OSError as err:
        raise CondormlError(
            f"{run_dir}: cannot write the run folder ({err.strerror or err})"
        ) from err
    return plan.files()


def _write_members_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    with atomic_write(path, "w") as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)


def _set_aside(run_dir: Path) -> Path:
    """Move everything in ``run_dir`` into a new ``previous-N`` folder inside it."""
    n = 1
    while (run_dir / f"previous-{n}").exists():
        n += 1
    kept = run_dir / f"previous-{n}"
    kept.mkdir()
    for entry in run_dir.iterdir():
        if entry != kept and not entry.name.startswith("previous-"):
            entry.rename(kept / entry.name)
    return kept
