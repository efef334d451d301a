"""The collect step of a sweep: the ensemble's predictions, a leaderboard, failed members.

It is the DAG's FINAL node, so it runs whatever happened to the members, and its result is the
DAG's. The rule: every member with complete predictions (``members/<id>/out/dog_probs.csv`` or
``probs.csv``, or all its shard parts) joins the ensemble, whose probability of each class per
image is the mean over those members (written as ``dog_probs.csv`` for cat/dog, ``probs.csv``
otherwise); the others are listed as failed with the reason. The step succeeds when at least
``min_members`` members joined, and fails (exit 1) otherwise. Scores come from a labels file,
or from the test set itself when it is laid out with its labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml import __version__
from condorml.errors import CondormlError
from condorml.fileio import atomic_write
from condorml.job.files import PREDICTION_FILES
from condorml.results import ensemble
from condorml.results.ensemble import choose_members
from condorml.results.evaluate import evaluate_file
from condorml.results.predictions import (
    is_cat_dog,
    prediction_classes,
    predictions_name,
    read_predictions,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from condorml.sweep.accounting import (
    LEADERBOARD_COLUMNS,
    leaderboard_counts,
    member_accounting,
    no_predictions_reasons,
)
from condorml.sweep.rundir import (
    MemberDir,
    RunDir,
)
from condorml.sweep.search import METRICS
from condorml.sweep.trials import Trial, read_trials

if TYPE_CHECKING:
    import pandas as pd

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
    test_images: Path | None = None,
) -> CollectResult:
    """Average the members' predictions into the ensemble CSV and write the leaderboard.

    Parameters
    ----------
    run_dir : Path
        The sweep's run folder (``members.csv``, ``members/<id>/``).
    min_members : int
        How many members must join the ensemble for the step to succeed.
    labels : Path, optional
        ``fileid,label`` (or ``fileid,is_dog``) CSV: score every member and the ensemble
        (``metrics.json``).
    with_stats : bool
        Add ``prob_std,n_models`` to the ensemble CSV.
    top_k : int, optional
        Only the ``top_k`` members with predictions that rank best by ``metric`` (their last
        epoch's, from ``ckpt/metrics.csv``) join the ensemble.
    metric : str
        A validation metric of :data:`~condorml.sweep.search.METRICS` (``val_loss`` lowest
        first, the others highest first): ranks the leaderboard.
    test_images : Path, optional
        The test set the members predicted: without ``labels``, its own labels score them when
        the members' predictions say it carries labels (laid out like training data).

    Raises
    ------
    CondormlError
        If ``run_dir`` is not a sweep's run folder, or members predict different classes.
    """
    if metric not in METRICS:
        raise CondormlError(f"--metric {metric}: one of {', '.join(METRICS)}")
    run = RunDir(run_dir)
    members = run.member_table()
    ids = list(members["member"])
    accounting = member_accounting(run_dir, ids)[0]
    counts, why_none = leaderboard_counts(accounting), no_predictions_reasons(accounting)
    trials = read_trials(run_dir, ids)
    rows, result = [], CollectResult(None, run.leaderboard)
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
    chosen = set(choose_members({m: row.get(metric) for m, (row, _) in candidates.items()},
                                top_k, metric))  # fmt: skip
    labels = labels or _labelled_test_set(test_images, [csv for _, csv in candidates.values()])
    classes: tuple[str, ...] | None = None
    frames: dict[str, Any] = {}
    for member, (row, csv) in candidates.items():
        if member not in chosen:
            result.left_out.append(member)
            row["status"] = f"outside the top {top_k}"
        else:
            frame = read_predictions(csv)
            classes = _same_classes(classes, prediction_classes(frame), member, result.joined)
            frames[member] = frame
            result.joined.append(member)
            row["status"] = "ok"
        if labels is not None:
            scores = evaluate_file(csv, labels)
            row.update(
                test_accuracy=scores.accuracy,
                test_log_loss=scores.log_loss,
                test_macro_f1=scores.macro_f1,
                test_roc_auc=scores.roc_auc,
            )
    written: list[Path] = []
    if frames:
        assert classes is not None
        result.ensemble = _write_ensemble(run, frames, result, with_stats, classes)
        written.append(result.ensemble)
        if labels is not None:
            result.scores = evaluate_file(result.ensemble, labels, run.metrics_json).to_dict()
            written.append(run.metrics_json)
    _remove_stale_results(run, written)
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


def _training_row(files: MemberDir) -> dict[str, Any]:
    """The member's training progress; a damaged file is a warning, not the step's failure."""
    try:
        return files.training_row()
    except CondormlError as err:
        log.warning("member %s: %s", files.member, err)
        return {}


def _same_classes(known: tuple[str, ...] | None, classes: tuple[str, ...], member: str,
                  joined: list[str]) -> tuple[str, ...]:  # fmt: skip
    if known is not None and classes != known:
        raise CondormlError(
            f"member {member} predicts the classes {', '.join(classes)}, member {joined[0]} "
            f"{', '.join(known)}: an ensemble's members need the same classes (the same training data)"
        )
    return classes


def _labelled_test_set(test_images: Path | None, csvs: list[Path]) -> Path | None:
    """The test set, if the members' predictions say it carries its own labels."""
    if test_images is None or not csvs:
        return None
    sidecar = read_sidecar(csvs[0]) or {}
    return Path(test_images) if sidecar.get("images", {}).get("labelled") else None


def _write_ensemble(run: RunDir, frames: dict[str, Any], result: CollectResult, with_stats: bool,
                    classes: tuple[str, ...]) -> Path:  # fmt: skip
    """The ensemble's CSV (:func:`condorml.results.ensemble.average` of the members that joined)
    and its sidecar."""
    output = run.path / predictions_name(classes)
    ensemble.write(ensemble.average(frames, classes), output, classes, with_stats)
    sidecars = [read_sidecar(run.member(m).predictions_csv) or {} for m in result.joined]
    meaning = "probability of dog" if is_cat_dog(classes) else "probability of each class"
    write_sidecar(output, {
        "condorml_version": __version__,
        "prob": f"{meaning}: mean over the members that produced predictions",
        "classes": list(classes),
        "members": result.joined,
        "failed_members": result.failed,
        "images": {k: v for k, v in sidecars[0].get("images", {}).items() if k in ("source", "fingerprint", "in_source", "layout", "labelled")},
        "models": [m for sidecar in sidecars for m in sidecar.get("models", [])],
    })  # fmt: skip
    return output


def _remove_stale_results(run: RunDir, written: list[Path]) -> None:
    """Remove an earlier collect step's ensemble and scores that this one did not write again
    (no member joined, no labels, other classes): nothing may present them as this run's."""
    for path in [run.path / name for name in PREDICTION_FILES] + [run.metrics_json]:
        if path in written:
            continue
        for stale in (path, sidecar_path(path)):
            if stale.exists():
                stale.unlink()
                log.warning("removed %s: an earlier collect step's, not this run's", stale)


def _write_leaderboard(path: Path, rows: list[dict[str, Any]], metric: str = "val_loss") -> None:
    frame = leaderboard_frame(rows, metric)
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, index=False)


def leaderboard_frame(rows: list[dict[str, Any]], metric: str = "val_loss") -> pd.DataFrame:
    """``leaderboard.csv``'s table of member rows: the members with predictions (status ok)
    by ``metric``, best first, then the others; member and status first; HTCondor's counts as
    whole numbers, empty where unknown. The report builds a live run's table with it too."""
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
    return frame.reset_index(drop=True)
