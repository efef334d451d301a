"""Where each member of a condorml sweep resumes from, as the local backend says at a run's start
(and where each stopped, at its end).

A member's training job receives its folder's ``ckpt/`` as an input (RETRY, a rescue DAG, a run
moved between this machine and a pool), so what resumes is what that folder holds: its
``state.json`` counts the epochs done. Only the members whose training still has to run are
listed, in the DAG's order; a DAG that is not a sweep's has none.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from condorml.errors import CondormlError
from condorml.job.files import CHECKPOINT_FILE
from condorml.sweep.rundir import NodeName, RunDir, TrainingState, read_state


@dataclass(frozen=True)
class ResumePoint:
    """A member's checkpoint as its next training job will receive it."""

    member: str
    checkpoint: str  # the model file, relative to the run folder (members/<id>/ckpt/model.pth)
    state: TrainingState | None  # None: no checkpoint yet (or none readable, see ``problem``)
    problem: str = ""

    def describe(self, stopped: bool = False) -> str:
        """``m003: resumes from epoch 4 of 20 (members/m003/ckpt/model.pth)``, ``m003: starts
        from the beginning (no checkpoint yet)``; ``stopped``: how the run leaves it (``m003: stopped at epoch 4 of 20
        ...``)."""
        if self.problem:
            return f"{self.member}: {self.problem}"
        state = self.state
        if state is None or state.epoch == 0:
            if stopped:
                return f"{self.member}: stopped before its first checkpoint"
            return f"{self.member}: starts from the beginning (no checkpoint yet)"
        of = f" of {state.epochs}" if state.epochs else ""
        verb = "stopped at" if stopped else "resumes from"
        return f"{self.member}: {verb} epoch {state.epoch}{of} ({self.checkpoint})"


def resume_points(dag_folder: Path, pending: Iterable[str]) -> list[ResumePoint]:
    """The checkpoint each member with a training node in ``pending`` (node names, the DAG's
    order) resumes from; [] when ``dag_folder`` is not a sweep's run folder."""
    run = RunDir(dag_folder)
    if not run.is_run():
        return []
    points, seen = [], set()
    for name in pending:
        node = NodeName.parse(name)
        if node is None or node.kind != "train" or node.member in seen:
            continue
        seen.add(node.member)
        ckpt = run.member(node.member).ckpt
        shown = os.path.relpath(ckpt / CHECKPOINT_FILE, dag_folder)
        try:
            points.append(ResumePoint(node.member, shown, read_state(ckpt)))
        except CondormlError as err:  # the trainer itself decides what to do with the folder
            points.append(ResumePoint(node.member, shown, None, f"its checkpoint says: {err}"))
    return points


def describe_all(points: list[ResumePoint], stopped: bool = False, names: int = 8) -> list[str]:
    """A line per member that has a checkpoint (or a problem with it), then one line for those
    that have none yet (the first ``names`` of them named), so that a fresh run of 1,000
    members says so in one line."""
    lines, fresh = [], []
    for point in points:
        if point.problem or (point.state is not None and point.state.epoch > 0):
            lines.append(point.describe(stopped))
        else:
            fresh.append(point.member)
    if fresh:
        shown = ", ".join(fresh[:names]) + (", ..." if len(fresh) > names else "")
        what = "stopped before a first checkpoint" if stopped else "start from the beginning"
        lines.append(f"{len(fresh)} member(s) {what} (no checkpoint yet): {shown}")
    return lines
