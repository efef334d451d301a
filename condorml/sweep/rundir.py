"""A sweep's run folder: every name in it, and the one reader of what the sweep and jobs left.

``condorml sweep`` writes, the jobs fill, and ``collect``, ``watch`` and ``report`` read::

    RUN_DIR/run.json                   what the sweep wrote (:class:`RunInfo`), written last
    RUN_DIR/spec.toml                  the spec, copied
    RUN_DIR/members.csv                every member's id, seed and hyperparameters
    RUN_DIR/sweep.dag                  the DAG; train.sub, infer.sub, collect.sub and wrappers
    RUN_DIR/sweep.dag.nodes.log        DAGMan's log of every node job (no file transfers)
    RUN_DIR/collect.log                the collect job's own event log
    RUN_DIR/dog_probs.csv              the ensemble (probs.csv for classes other than cat, dog);
                                       leaderboard.csv, metrics.json beside it
    RUN_DIR/report/                    condorml report's default output
    RUN_DIR/members/<id>/              a member's initialdir:
        train.log, infer.log           its training and inference jobs' own event logs (040
                                       transfers: the checkpoints)
        ckpt/                          model.pth, state.json, metrics.csv (the training job's)
        out/                           dog_probs.csv (or probs.csv), or .part<N>.csv per shard
        trial.json                     with [search]: its rung results and state (sweep.trials)
        params.json                    with TPE: the hyperparameters chosen for it (a job input)
    RUN_DIR/search/study.journal       with [search]: the Optuna study (finished members)
    RUN_DIR/search/decisions.log       with [search]: each PRE script's decision and why

The names of the files a job writes come from :mod:`condorml.job.files` (no torch); this module
imports nothing heavy, so that ``watch`` and ``report`` stay quick to start.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml import __version__
from condorml.errors import CondormlError
from condorml.fileio import atomic_write_text
from condorml.htcondor.events import NODES_LOG_SUFFIX
from condorml.hyperparameters import HYPERPARAMETERS_FILE
from condorml.job.files import (
    CHECKPOINT_FOLDER,
    METRICS_FILE,
    PREDICTION_FILES,
    PREDICTIONS_FILE,
    RESULTS_FOLDER,
    STATE_FILE,
    job_log_name,
    shard_part_name,
)
from condorml.sweep.search import METRICS

if TYPE_CHECKING:
    import pandas as pd

RUN_JSON = "run.json"
RUN_FORMAT = "condorml.run"
RUN_FORMAT_VERSION = 1
SPEC_COPY = "spec.toml"
MEMBERS_CSV = "members.csv"
DAG_FILE = "sweep.dag"
# The local backend's own folder beside a DAG it runs: sandboxes (execute/) and spooled checkpoints
LOCAL_FOLDER = ".condorml-local"
MEMBERS_FOLDER = "members"
LEADERBOARD_CSV = "leaderboard.csv"
METRICS_JSON = "metrics.json"
REPORT_FOLDER = "report"
TRIAL_FILE = "trial.json"  # a member's search record, in its folder
PARAMS_FILE = HYPERPARAMETERS_FILE  # TPE's choice for a member, in its folder (a job input)
STUDY_FILE = "search/study.journal"  # the Optuna study, in the run folder
DECISIONS_LOG = "search/decisions.log"  # every PRE script's decision, a line each
JOB_KINDS = ("train", "infer", "collect")
MEMBER_JOB_KINDS = ("train", "infer")  # the jobs that run in a member's folder
DATA_KEYS = ("train", "test", "labels", "train_labels")
# where a data path as the jobs see it is relative to: a member's folder (its initialdir), or
# the run folder (the collect job's)
_RUN_FOLDER_DATA = frozenset({"labels"})


@dataclass(frozen=True)
class NodeName:
    """A node of a sweep's DAG: ``<kind>_<member>``, or ``train_<member>_r<rung>`` for a rung."""

    kind: str  # train, infer
    member: str
    rung: int | None = None  # 1-based; None: the member's only training node

    def __str__(self) -> str:
        rung = f"_r{self.rung}" if self.rung is not None else ""
        return f"{self.kind}_{self.member}{rung}"

    @classmethod
    def parse(cls, name: str) -> NodeName | None:
        """The node name's parts, or None for a name no sweep writes (``collect``, ...).

        Example
        -------
        >>> NodeName.parse("train_m007_r2"), NodeName.parse("infer_m007")
        (NodeName(kind='train', member='m007', rung=2), NodeName(kind='infer', member='m007', rung=None))
        """
        parts = name.split("_")
        if len(parts) == 3 and parts[2][:1] == "r" and parts[2][1:].isdigit():
            return cls(parts[0], parts[1], int(parts[2][1:]))
        if len(parts) == 2 and parts[0] in MEMBER_JOB_KINDS:
            return cls(parts[0], parts[1])
        return None


def submit_file_name(kind: str) -> str:
    """The submit file of the ``train``, ``infer`` or ``collect`` jobs, in the run folder."""
    return f"{kind}.sub"


def local_spool(dag_folder: Path, job: str) -> Path:
    """Where the local backend keeps job ``CLUSTER.PROC``'s spooled checkpoint (HTCondor's spool)."""
    return dag_folder / LOCAL_FOLDER / "spool" / job


def local_job_ad(dag_folder: Path, job: str) -> Path:
    """Where the local backend keeps job ``CLUSTER.PROC``'s live attributes (what a job sets in
    its ad through Chirp, HTCondor's ``condor_chirp set_job_attr``), as JSON."""
    return dag_folder / LOCAL_FOLDER / "ads" / f"{job}.json"


def member_folder(run_dir: Path, member: str) -> Path:
    """``RUN_DIR/members/<id>``: the member's initialdir."""
    return run_dir / MEMBERS_FOLDER / member


def job_logs(run_dir: Path, members: list[str]) -> list[Path]:
    """Every job's own event log in a sweep's run folder (existing or not yet)."""
    return RunDir(run_dir).job_logs(members)


# --- run.json ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataPath:
    """One ``[data]`` input of a sweep, as its jobs see it and as a path from here.

    ``job`` is written in the submit files: ``train`` and ``test`` relative to a member's folder
    (their jobs' initialdir), ``labels`` relative to the run folder (the collect job's); a URL
    as given. ``local`` is the absolute path when the sweep was written (None for a URL).
    """

    job: str
    local: str | None


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: what ``condorml sweep`` wrote, for the readers of the run folder."""

    spec_sha256: str  # of RUN_DIR/spec.toml as written
    members: tuple[str, ...]
    shards: int  # inference jobs per member
    data: dict[str, DataPath] = field(default_factory=dict)
    condorml_version: str = __version__

    def to_json(self) -> str:
        """The text of ``run.json``."""
        record = {"format": RUN_FORMAT, "version": RUN_FORMAT_VERSION, **asdict(self)}
        record["members"] = list(self.members)
        return json.dumps(record, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> RunInfo:
        """Read ``run.json``'s text.

        Raises
        ------
        CondormlError
            If it is not a run.json of a version this condorml reads.
        """
        try:
            record = json.loads(text)
            if record.get("format") != RUN_FORMAT:
                raise ValueError(f"format {record.get('format')!r}, not {RUN_FORMAT}")
            if record.get("version") != RUN_FORMAT_VERSION:
                raise ValueError(
                    f"version {record.get('version')!r}; this condorml reads version "
                    f"{RUN_FORMAT_VERSION} (run `condorml sweep` on the run folder again)"
                )
            data = {k: DataPath(v["job"], v["local"]) for k, v in record["data"].items()}
            return cls(str(record["spec_sha256"]), tuple(map(str, record["members"])),
                       int(record["shards"]), data, str(record.get("condorml_version", "")))  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CondormlError(f"{where}: not a condorml run.json ({err})") from None


def write_run_info(run_dir: Path, info: RunInfo) -> Path:
    """Write ``RUN_DIR/run.json`` atomically (a reader sees the old file or the new one)."""
    path = run_dir / RUN_JSON
    atomic_write_text(path, info.to_json())
    return path


# --- a member's folder -------------------------------------------------------------------------


def existing_predictions(folder: Path) -> Path:
    """The predictions CSV in ``folder`` (``dog_probs.csv`` for cat/dog, ``probs.csv`` for other
    classes), whichever exists; ``dog_probs.csv`` if neither does (yet)."""
    for name in PREDICTION_FILES:
        if (folder / name).exists():
            return folder / name
    return folder / PREDICTIONS_FILE


@dataclass(frozen=True)
class TrainingState:
    """``ckpt/state.json``: the counters of a member's last checkpoint."""

    epoch: int  # epochs done
    epochs: int | None  # epochs asked for
    finished: bool
    wall_seconds: float | None
    live_off: str = ""  # why the job could not publish live progress (Chirp), as it said


@dataclass(frozen=True)
class Predictions:
    """A member's complete predictions CSV, or why there is none."""

    csv: Path | None
    reason: str = ""

    @property
    def complete(self) -> bool:
        return self.csv is not None


def read_state(ckpt: Path) -> TrainingState | None:
    """The checkpoint folder's ``state.json`` (None if there is none yet).

    Raises
    ------
    CondormlError
        If it cannot be read or lacks a field (e.g. being replaced at this moment).
    """
    path = ckpt / STATE_FILE
    try:
        record = json.loads(path.read_text())
        wall = record.get("wall_seconds")
        return TrainingState(int(record["epoch"]), record.get("epochs"), bool(record["finished"]),
                             None if wall is None else float(wall),
                             str(record.get("live_off") or ""))  # fmt: skip
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CondormlError(f"unreadable {path} ({err})") from None


def read_metrics(ckpt: Path) -> pd.DataFrame | None:
    """The checkpoint folder's ``metrics.csv``, one row per epoch (None: no epoch finished yet).

    Raises
    ------
    CondormlError
        If it cannot be read as a CSV with an ``epoch`` column.
    """
    import pandas as pd

    path = ckpt / METRICS_FILE
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise CondormlError(f"unreadable {path} ({err})") from None
    if frame.empty:
        return None
    if "epoch" not in frame.columns:
        raise CondormlError(f"{path}: no epoch column")
    return frame


@dataclass(frozen=True)
class MemberDir:
    """``RUN_DIR/members/<id>``: a member's files and what they say."""

    member: str
    path: Path

    @property
    def ckpt(self) -> Path:
        """The training job's checkpoint folder, as it came back."""
        return self.path / CHECKPOINT_FOLDER

    @property
    def out(self) -> Path:
        """Where the inference jobs' predictions come back."""
        return self.path / RESULTS_FOLDER

    @property
    def predictions_csv(self) -> Path:
        """The member's predictions (an unsharded job's, or the shard parts merged):
        ``out/dog_probs.csv`` or ``out/probs.csv``, whichever came back."""
        return existing_predictions(self.out)

    def log(self, kind: str) -> Path:
        """The ``train`` or ``infer`` jobs' own event log."""
        return self.path / job_log_name(kind)

    def shard_parts(self) -> list[Path]:
        """The inference shards' CSVs that came back, in name order."""
        if not self.out.is_dir():
            return []
        return sorted(
            p for name in PREDICTION_FILES for p in self.out.glob(shard_part_name(name, "*"))
        )

    def state(self) -> TrainingState | None:
        """See :func:`read_state`."""
        return read_state(self.ckpt)

    def metrics(self) -> pd.DataFrame | None:
        """See :func:`read_metrics`."""
        return read_metrics(self.ckpt)

    def newest_checkpoint(self, spooled: Sequence[Path] = ()) -> Path:
        """The newest of the member's checkpoint folders: ``ckpt/`` as it came back, or a
        spooled one (``spooled``: the local backend keeps a running job's checkpoints in its
        spool until the job ends, as HTCondor does), by their ``state.json``'s time."""
        folders = [self.ckpt, *spooled]

        def written(folder: Path) -> float:
            try:
                return (folder / STATE_FILE).stat().st_mtime
            except OSError:
                return -1.0

        return max(folders, key=written)

    def training_row(self, ckpt: Path | None = None) -> dict[str, Any]:
        """Progress and final metrics for a leaderboard row: ``epochs_done``, ``finished``,
        ``wall_seconds`` (state.json) and the last epoch's validation metrics
        (:data:`~condorml.sweep.search.METRICS`) and ``train_loss`` (metrics.csv); empty for what
        is not there yet.

        Runs and checkpoints are not taken from the trainer's own counters (which count process
        starts and saves) but from HTCondor's event logs (:mod:`condorml.sweep.accounting`).

        ``ckpt``: another folder of the member's checkpoint (a spooled one: :meth:`newest_checkpoint`).

        Raises
        ------
        CondormlError
            If a file is there but unreadable.
        """
        row: dict[str, Any] = {}
        ckpt = self.ckpt if ckpt is None else ckpt
        state = read_state(ckpt)
        if state is not None:
            wall = None if state.wall_seconds is None else round(state.wall_seconds, 1)
            row.update(epochs_done=state.epoch, finished=state.finished, wall_seconds=wall)
        metrics = read_metrics(ckpt)
        if metrics is not None:
            last = metrics.iloc[-1]
            row.update({k: last[k] for k in (*METRICS, "train_loss") if k in last})
        return row

    def predictions(self, why_none: str = "", merge_to: Path | None = None) -> Predictions:
        """The member's complete predictions, merging shard parts when there is no CSV yet.

        Parameters
        ----------
        why_none : str
            Why the member has no predictions, from its jobs' logs (default: a guess).
        merge_to : Path, optional
            Where to merge shard parts (default: :attr:`predictions_csv`; a report, which never
            writes into a run folder, gives a temporary file).
        """
        from condorml.results.merge import merge_predictions

        if self.predictions_csv.exists():
            return Predictions(self.predictions_csv)
        parts = self.shard_parts()
        if not parts:
            return Predictions(None, f"no predictions ({why_none or 'inference did not finish'})")
        merged_name = (
            parts[0].name.split(".part")[0] + parts[0].suffix
        )  # probs.part0.csv -> probs.csv
        target = merge_to if merge_to is not None else self.out / merged_name
        try:
            merge_predictions(target, parts)
        except CondormlError as err:
            return Predictions(None, f"incomplete inference shards ({err})")
        return Predictions(target)


# --- the run folder ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDir:
    """A sweep's run folder: its paths, and readers of what the sweep and the jobs wrote there."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def spec_copy(self) -> Path:
        return self.path / SPEC_COPY

    @property
    def members_csv(self) -> Path:
        return self.path / MEMBERS_CSV

    @property
    def dag_file(self) -> Path:
        return self.path / DAG_FILE

    @property
    def nodes_log(self) -> Path:
        """DAGMan's log of every node job."""
        return self.path / (DAG_FILE + NODES_LOG_SUFFIX)

    @property
    def leaderboard(self) -> Path:
        return self.path / LEADERBOARD_CSV

    @property
    def ensemble_csv(self) -> Path:
        """The ensemble's predictions: ``dog_probs.csv`` or ``probs.csv``, whichever is there."""
        return existing_predictions(self.path)

    @property
    def metrics_json(self) -> Path:
        return self.path / METRICS_JSON

    @property
    def report_folder(self) -> Path:
        return self.path / REPORT_FOLDER

    @property
    def local_folder(self) -> Path:
        """The local backend's own folder beside the DAG (spool, sandboxes)."""
        return self.path / LOCAL_FOLDER

    def local_spool(self, job: str) -> Path:
        """Where the local backend keeps job ``CLUSTER.PROC``'s checkpoint while it runs."""
        return local_spool(self.path, job)

    def spooled_checkpoints(self) -> dict[str, list[Path]]:
        """The local backend's spooled checkpoint folders, by the member their ``state.json``
        names (a running job's latest checkpoint is there before it comes back)."""
        found: dict[str, list[Path]] = {}
        for state in sorted((self.local_folder / "spool").glob(f"*/**/{STATE_FILE}")):
            try:
                member = json.loads(state.read_text()).get("member")
            except (OSError, ValueError, AttributeError):
                continue  # being replaced right now
            if isinstance(member, str):
                found.setdefault(member, []).append(state.parent)
        return found

    def submit_file(self, kind: str) -> Path:
        return self.path / submit_file_name(kind)

    def member(self, member: str) -> MemberDir:
        return MemberDir(member, member_folder(self.path, member))

    def job_logs(self, members: list[str]) -> list[Path]:
        """Every job's own event log (existing or not yet)."""
        logs = [self.member(m).log(k) for m in members for k in MEMBER_JOB_KINDS]
        return [*logs, self.path / job_log_name("collect")]

    def is_run(self) -> bool:
        """Whether this is a sweep's run folder (every condorml sweep wrote ``members.csv``)."""
        return self.members_csv.is_file()

    def check(self) -> None:
        """Raise :class:`CondormlError` unless this is a sweep's run folder."""
        if not self.path.is_dir():
            raise CondormlError(f"{self.path}: no such folder; give a sweep's run folder")
        if not self.is_run():
            raise CondormlError(
                f"{self.path}: no {MEMBERS_CSV}; not a sweep run folder (condorml sweep writes one)"
            )

    def member_ids(self) -> list[str]:
        """The members, in ``members.csv`` order (none if there is no readable one)."""
        try:
            with open(self.members_csv, newline="") as handle:
                return [row["member"] for row in csv.DictReader(handle) if row.get("member")]
        except (OSError, UnicodeDecodeError, csv.Error):
            return []

    def member_table(self) -> pd.DataFrame:
        """``members.csv``: id, seed and hyperparameters of every member.

        Raises
        ------
        CondormlError
            If this is not a run folder or its ``members.csv`` is not a member table.
        """
        import pandas as pd

        self.check()
        try:
            table = pd.read_csv(self.members_csv, dtype={"member": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise CondormlError(f"{self.members_csv}: not a CSV file ({err})") from None
        if "member" not in table.columns:
            raise CondormlError(f"{self.members_csv}: no member column")
        return table

    def info(self) -> RunInfo | None:
        """``run.json``, or None for a run folder written before condorml wrote one.

        Raises
        ------
        CondormlError
            If it is there but unreadable, or of a version this condorml does not read.
        """
        try:
            text = self.run_json.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise CondormlError(f"{self.run_json}: unreadable ({err})") from None
        return RunInfo.from_json(text, self.run_json)

    def data_path(self, info: RunInfo, key: str) -> Path | None:
        """A ``[data]`` input of the run as a path from here (None: not given, or a URL).

        The path the jobs see is taken first, from the folder they see it from, so that a run
        folder moved together with its data still finds it; then the absolute path recorded when
        the sweep was written. If neither exists, the first (for the caller to report).
        """
        entry = info.data.get(key)
        if entry is None or entry.local is None:
            return None
        if Path(entry.job).is_absolute():
            return Path(entry.job)
        # every member folder is at the same depth: the first stands for all
        member = info.members[0] if info.members else ""
        folder = self.path if key in _RUN_FOLDER_DATA else member_folder(self.path, member)
        # resolve(): `..` after a symlink means what the OS (and HTCondor's transfer) make of it
        seen = (folder / entry.job).resolve()
        if not seen.exists() and os.path.exists(entry.local):
            return Path(entry.local)
        return seen
