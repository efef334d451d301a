"""A member's search record, ``members/<id>/trial.json``: its result at each rung and its state.

Written only by the member's own PRE and POST scripts (:mod:`condorml.sweep.steps`), which
DAGMan runs one at a time for a member, atomically; read by every member's PRE script (the
halving decision), by ``collect`` (the leaderboard), ``watch`` and ``report``. Imports nothing
heavy.

States: ``running`` (a rung is running or about to), ``waiting`` (its PRE script waits for other
members' results before the next rung), ``stopped`` (halving stopped it: its later rungs are
skipped; a pause, its checkpoint is kept), ``complete`` (its last rung finished), ``failed``
(a rung's job failed for good).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.fileio import atomic_write_text
from condorml.sweep.rundir import TRIAL_FILE

STATES = ("running", "waiting", "stopped", "complete", "failed")
FINISHED = ("stopped", "complete", "failed")


@dataclass
class Trial:
    """One member's search record."""

    member: str
    state: str = "running"
    rung: int = 1  # the rung it runs or waits for, failed at, or (stopped) the last it finished
    results: dict[int, dict[str, float]] = field(default_factory=dict)  # rung -> epoch, metrics
    params: dict[str, Any] | None = None  # the hyperparameters searched (TPE: chosen at start)
    recorded: bool = False  # told to the study (condorml.sweep.study) once finished

    def value(self, rung: int, metric: str) -> float | None:
        """Its metric at the end of ``rung`` (None if not reported or not a number)."""
        result = self.results.get(rung)
        value = None if result is None else result.get(metric)
        return float(value) if value is not None and math.isfinite(value) else None

    @property
    def rungs_done(self) -> int:
        """How many rungs it finished."""
        return len(self.results)

    @property
    def epochs_done(self) -> int:
        """Epochs trained, as reported at its last finished rung (0 before the first)."""
        return int(max((r["epoch"] for r in self.results.values()), default=0))

    @property
    def finished(self) -> bool:
        """Whether it will run no further rung (stopped, complete or failed)."""
        return self.state in FINISHED

    def to_json(self) -> str:
        record = asdict(self)
        record["results"] = {str(k): v for k, v in self.results.items()}
        return json.dumps(record, indent=1, sort_keys=True) + "\n"


def trial_path(member_dir: Path) -> Path:
    """``members/<id>/trial.json``."""
    return member_dir / TRIAL_FILE


def read_trial(member_dir: Path) -> Trial | None:
    """The member's record (None before its first script ran).

    Raises
    ------
    CondormlError
        If the file is there but unreadable.
    """
    path = trial_path(member_dir)
    try:
        record = json.loads(path.read_text())
        record["results"] = {int(k): v for k, v in record.get("results", {}).items()}
        trial = Trial(**record)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise CondormlError(
            f"unreadable {path} ({err}); delete it to start the member's search record again"
        ) from None
    if trial.state not in STATES:
        raise CondormlError(f"{path}: unknown state {trial.state!r}")
    return trial


def write_trial(member_dir: Path, trial: Trial) -> None:
    """Write the member's record atomically."""
    atomic_write_text(trial_path(member_dir), trial.to_json())


def read_trials(run_dir: Path, members: list[str]) -> dict[str, Trial]:
    """Every member's record that exists, by member id (unreadable ones left out)."""
    from condorml.sweep.rundir import member_folder

    trials = {}
    for member in members:
        try:
            trial = read_trial(member_folder(run_dir, member))
        except CondormlError:
            continue  # being replaced right now, or damaged: its own scripts report it
        if trial is not None:
            trials[member] = trial
    return trials
