"""The collect step of a sweep: the ensemble ``dog_probs.csv``, a leaderboard, failed members.

It is the DAG's FINAL node, so it runs whatever happened to the members, and its result is the
DAG's. The rule: every member with complete predictions (``members/<id>/out/dog_probs.csv``,
or all its shard parts) joins the ensemble, whose probability per image is the mean over those
members; the others are listed as failed with the reason. The step succeeds when at least
``min_members`` members joined, and fails (exit 1) otherwise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condorml import __version__
from condorml.errors import CondormlError
from condorml.fileio import atomic_write
from condorml.monitor.accounting import (
    LEADERBOARD_COLUMNS,
    leaderboard_counts,
    member_accounting,
    no_predictions_reasons,
)
from condorml.results.evaluate import evaluate_file
from condorml.results.predictions import (
    prediction_writer,
    read_predictions,
    read_sidecar,
    sort_ids,
    write_sidecar,
)
from condorml.sweep.rundir import (
    MemberDir,
    RunDir,
)
from condorml.sweep.search import METRICS, rank_key
from condorml.sweep.trials import Trial, read_trials

log = logging.getLogger(__name__)


@dataclass
class CollectResult:
    """What the collect step found and wrote."""

    ensemble: Path | None
    leaderboard: Path
    joined: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # member -> reason
    stopped: list[str] = field(default_factory=list)  # stopped early by the search (not failed)
    left_out: list[str] = field(default_factory=list)  # with predictions, outside the top k
    scores: dict[str, Any] | None = None

    def succeeded(self, min_members: int) -> bool:
        """Whether enough members joined the ensemble."""
        return len(self.joined) >= min_members


def collect(
    run_dir: Path,
    min_members: int = 1,
    labels: Path | None = None,
    with_stats: bool = False,
    top_k: int | None = None,
    metric: str = "val_loss",
) -> CollectResult:
    """Average the members' predictions into ``run_dir/dog_probs.csv`` and write the leaderboard.

    Parameters
    ----------
    run_dir : Path
        The sweep's run folder (``members.csv``, ``members/<id>/``).
    min_members : int
        How many members must join the ensemble for the step to succeed.
    labels : Path, optional
        ``fileid,is_dog`` CSV: score every member and the ensemble (``metrics.json``).
    with_stats : bool
        Add ``prob_std,n_models`` to the ensemble CSV.
    top_k : int, optional
        Only the ``top_k`` members with predictions that rank best by ``metric`` (their last
        epoch's, from ``ckpt/metrics.csv``) join the ensemble.
    metric : str
        ``val_loss`` (lowest first) or ``val_acc`` (highest first): ranks the leaderboard.

    Raises
    ------
    CondormlError
        If ``run_dir`` is not a sweep's run folder.
    """
    if metric not in METRICS:
        raise CondormlError(f"--metric {metric}: one of {', '.join(METRICS)}")
    run = RunDir(run_dir)
    members = run.member_table()
    ids = list(members["member"])
    accounting = member_accounting(run_dir, ids)[0]
    counts, why_none = leaderboard_counts(accounting), no_predictions_reasons(accounting)
    trials = read_trials(run_dir, ids)
    rows, frames, result = [], [], CollectResult(None, run.leaderboard)
    candidates: dict[str, tuple[dict[str, Any], Path]] = {}
    for record in members.to_dict("records"):
        member = record["member"]
        files = run.member(member)
        # HTCondor's counts: empty, not guessed, for a member whose jobs no event log shows
        unknown = dict.fromkeys(LEADERBOARD_COLUMNS)
        row = {**record, **_training_row(files), **unknown, **counts.get(member, {})}
        row.update(_search_columns(trials.get(member)))
        predictions = files.predictions(why_none.get(member, ""))
        if predictions.csv is not None:
            candidates[member] = (row, predictions.csv)
        elif member in trials and trials[member].state == "stopped":
            result.stopped.append(member)
            row["status"] = f"stopped after rung {trials[member].rung}"
        else:
            result.failed[member] = predictions.reason
            row["status"] = f"failed: {predictions.reason}"
        rows.append(row)
    chosen = _best(candidates, top_k, metric)
    for member, (row, csv) in candidates.items():
        if member not in chosen:
            result.left_out.append(member)
            row["status"] = f"outside the top {top_k}"
        else:
            frame = read_predictions(csv)[["fileid", "prob"]]
            frames.append(frame.assign(member=member))
            result.joined.append(member)
            row["status"] = "ok"
        if labels is not None:
            scores = evaluate_file(csv, labels)
            row.update(
                test_accuracy=scores.accuracy,
                test_log_loss=scores.log_loss,
                test_roc_auc=scores.roc_auc,
            )
    if frames:
        result.ensemble = _write_ensemble(run, frames, result, with_stats)
        if labels is not None:
            result.scores = evaluate_file(result.ensemble, labels, run.metrics_json).to_dict()
    _write_leaderboard(result.leaderboard, rows, metric)
    for member, reason in result.failed.items():
        log.warning("member %s failed: %s", member, reason)
    return result


def _search_columns(trial: Trial | None) -> dict[str, Any]:
    """A searched member's state, rungs and epochs, and the values TPE chose for it."""
    if trial is None:
        return {}
    return {**(trial.params or {}), "search_state": trial.state, "rungs_done": trial.rungs_done,
            "epochs_trained": trial.epochs_done}  # fmt: skip


def _best(
    candidates: dict[str, tuple[dict[str, Any], Path]], top_k: int | None, metric: str
) -> set[str]:
    """The members that join the ensemble: all, or the ``top_k`` best by ``metric`` (ties by id;
    a member without the metric ranks last)."""
    if top_k is None:
        return set(candidates)

    def key(member: str) -> tuple[float, str]:
        value = candidates[member][0].get(metric)
        return rank_key(member, value if isinstance(value, int | float) else None, METRICS[metric])

    return set(sorted(candidates, key=key)[:top_k])


def _training_row(files: MemberDir) -> dict[str, Any]:
    """The member's training progress; a damaged file is a warning, not the step's failure."""
    try:
        return files.training_row()
    except CondormlError as err:
        log.warning("member %s: %s", files.member, err)
        return {}


def _write_ensemble(run: RunDir, frames: list, result: CollectResult, with_stats: bool) -> Path:
    import pandas as pd

    table = pd.concat(frames).groupby("fileid")["prob"].agg(["mean", "std", "count"])
    output = run.ensemble_csv
    with prediction_writer(output, with_stats) as write:
        for fileid in sort_ids(table.index):
            mean, count = table.at[fileid, "mean"], int(table.at[fileid, "count"])
            # population standard deviation, like condorml infer's ensembles
            std = table.at[fileid, "std"] * math.sqrt((count - 1) / count) if count > 1 else 0.0
            write(fileid, mean, std, count)
    sidecars = [read_sidecar(run.member(m).predictions_csv) or {} for m in result.joined]
    write_sidecar(output, {
        "condorml_version": __version__,
        "prob": "probability of dog: mean over the members that produced predictions",
        "members": result.joined,
        "failed_members": result.failed,
        "images": {k: v for k, v in sidecars[0].get("images", {}).items() if k in ("source", "fingerprint", "in_source")},
        "models": [m for sidecar in sidecars for m in sidecar.get("models", [])],
    })  # fmt: skip
    return output


def _write_leaderboard(path: Path, rows: list[dict[str, Any]], metric: str = "val_loss") -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if metric in frame:
        ok = frame["status"] == "ok"
        ascending = METRICS[metric] == "minimize"
        frame = pd.concat(
            [frame[ok].sort_values(metric, ascending=ascending, kind="stable"), frame[~ok]]
        )
    first = ["member", "status"]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    counts = [c for c in LEADERBOARD_COLUMNS if c in frame]
    frame[counts] = frame[counts].astype("Int64")  # whole numbers, empty where unknown
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, index=False)
