"""A run folder, finished or not, read into the frames a report shows (:class:`ReportData`).

:func:`gather` reads the leaderboard, every member's per-epoch metrics, the HTCondor accounting of
the training jobs from their event logs (:func:`condorml.monitor.accounting.member_accounting`, the
same that the collect step's leaderboard uses) and, when labels are known, the members' and the
ensemble's test scores, the ensemble-size curve and the calibration table. Whatever cannot be
produced is named in ``ReportData.missing`` instead of failing.

pandas and numpy are imported inside the functions, so that importing this module (and
``condorml --help``) stays fast.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError
from condorml.job.files import METRICS_FILE, PREDICTIONS_FILE
from condorml.monitor.accounting import (
    LEADERBOARD_COLUMNS,
    leaderboard_counts,
    member_accounting,
    no_predictions_reasons,
)
from condorml.monitor.searchview import SearchData, current_search_columns, gather_search
from condorml.results.evaluate import Scores, read_labels, score
from condorml.sweep.rundir import CHECKPOINT_FOLDER, MemberDir, RunDir

if TYPE_CHECKING:
    import pandas as pd


SAMPLE_IMAGES = 16
CALIBRATION_BINS = 10
# The image types `condorml infer` reads (condorml.job.infer imports torch, so not imported from it)
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass
class ReportData:
    """Everything a report shows, as plain pandas frames (None where it could not be produced)."""

    run_dir: Path
    members: pd.DataFrame  # the leaderboard: one row per member
    epochs: pd.DataFrame  # one row per member and epoch (members without metrics: one empty row)
    swept: list[str]  # the swept hyperparameters (columns of ``members``)
    condor: pd.DataFrame | None = None  # per member: training jobs' runs, evictions, time
    probs: pd.DataFrame | None = None  # probability of dog per image (index) and member (columns)
    labels: pd.Series | None = None  # is_dog per image id
    scores: pd.DataFrame | None = None  # test accuracy/log loss per member and "ensemble"
    ensemble_curve: pd.DataFrame | None = None  # k, member added, accuracy, log loss
    calibration: pd.DataFrame | None = None  # per probability bin: mean prob, fraction of dogs
    images: Path | None = None  # test images for the sample grid
    leaderboard_source: str = ""  # where the leaderboard came from
    missing: list[str] = field(default_factory=list)
    search: SearchData | None = None  # with [search]: every member's search record, importance

    @property
    def ensemble(self) -> pd.Series | None:
        """The ensemble's probability per image: the mean over the members that predicted it."""
        return None if self.probs is None else self.probs.mean(axis=1)

    def ranked(self) -> list[str]:
        """Members with predictions, best final validation accuracy first (then lowest loss)."""
        if self.probs is None:
            return []
        table = self.members.set_index("member")
        key = {
            m: (
                -_number(table.at[m, "val_acc"]) if "val_acc" in table else math.inf,
                _number(table.at[m, "val_loss"]) if "val_loss" in table else math.inf,
                m,
            )
            for m in self.probs.columns
        }
        return sorted(self.probs.columns, key=lambda m: key[m])


def _number(value: Any) -> float:
    """A float for sorting; missing values sort last."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(number) else number


def default_inputs(run: RunDir) -> tuple[Path | None, Path | None, list[str]]:
    """The labels and test images the run itself uses (its ``run.json``), and notes on what
    could not be found.

    A run folder written before ``run.json`` existed gets a note instead: ``condorml sweep`` run
    again with the same spec and ``--out`` writes it and changes nothing else.
    """
    try:
        info = run.info()
    except CondormlError as err:
        return None, None, [f"{err}: the run's labels and test images are unknown"]
    if info is None:
        return None, None, [
            f"no {run.run_json} (written by an older condorml): the run's labels and test images "
            f"are unknown; give --labels and --images, or add it with `condorml sweep "
            f"{run.spec_copy} --out {run.path}` (the same spec: nothing else changes)"
        ]  # fmt: skip
    notes = []
    labels, images = run.data_path(info, "labels"), run.data_path(info, "test")
    if labels is None and "labels" in info.data:
        notes.append("the run's labels are not a local file: give --labels")
    if images is None and "test" in info.data:
        notes.append(f"the test images are at {info.data['test'].job}: give --images to show samples")  # fmt: skip
    return labels, images, notes


def gather(
    run_dir: Path,
    labels: Path | None = None,
    images: Path | None = None,
    *,
    use_defaults: bool = True,
    now: float | None = None,
) -> ReportData:
    """Read a sweep's run folder, finished or not, into a :class:`ReportData`.

    Parameters
    ----------
    run_dir : Path
        The run folder (``members.csv``, ``members/<id>/``).
    labels : Path, optional
        ``fileid,is_dog`` CSV to score the members and the ensemble.
    images : Path, optional
        Test images (zip or folder) for the sample grid.
    use_defaults : bool
        Take labels and images the run itself uses (see :func:`default_inputs`) when not given.
    now : float, optional
        The time up to which a running job's work counts as uncommitted (default: now).

    Raises
    ------
    CondormlError
        If ``run_dir`` is not a run folder, or given labels or images cannot be read.
    """
    import pandas as pd

    run = RunDir(run_dir)
    run_dir = run.path
    table = run.member_table()
    missing: list[str] = []
    explicit_labels = labels is not None
    if images is not None and not Path(images).exists():
        raise CondormlError(f"--images {images}: no such file or folder")
    if use_defaults and (labels is None or images is None):
        default_labels, default_images, notes = default_inputs(run)
        labels = labels if labels is not None else default_labels
        images = images if images is not None else default_images
        missing += notes
    members = table["member"].tolist()
    condor, condor_notes = member_accounting(run_dir, members, now)
    counts, why_none = leaderboard_counts(condor), no_predictions_reasons(condor)

    epochs, leaderboard_rows, predictions = [], [], {}
    for record in table.to_dict("records"):
        member = record["member"]
        status, state, metrics, probs = _member(run.member(member), why_none, missing)
        found = {} if state is None else {**state, **counts.get(member, {})}
        leaderboard_rows.append({"member": member, "status": status, **record, **found})
        if metrics is not None:
            epochs.append(metrics)
        if probs is not None:
            predictions[record["member"]] = probs

    leaderboard, source = _leaderboard(run, leaderboard_rows)
    _current_counts(leaderboard, counts)
    search = gather_search(run, members)
    if search is not None:
        current_search_columns(leaderboard, search)
        missing += search.notes
    data = ReportData(run_dir, leaderboard, _epoch_table(table, epochs), _swept(run, table),
                      leaderboard_source=source, missing=missing, search=search)  # fmt: skip
    if not data.swept:
        missing.append("no swept hyperparameter (the members differ by seed only)")
    data.condor = condor
    missing += condor_notes
    if predictions:
        data.probs = pd.DataFrame(predictions)
        data.probs = data.probs.loc[_sorted_index(data.probs.index)]
    else:
        missing.append("no member has predictions: ensemble, calibration and scores skipped")
    _labels_and_scores(data, labels, explicit_labels)
    if images is None:
        missing.append("no test images known: sample grid skipped (give --images)")
    elif not Path(images).exists():
        missing.append(
            f"the run's test images {images}: no such file or folder; sample grid skipped (give --images)"
        )
    else:
        data.images = Path(images)
    return data


def _member(
    files: MemberDir, why_none: dict[str, str], missing: list[str]
) -> tuple[str, dict[str, Any] | None, pd.DataFrame | None, pd.Series | None]:
    """A member's status, training progress (None: no folder yet), per-epoch metrics and
    predictions; what is missing is added to ``missing``."""
    member = files.member
    if not files.path.is_dir():  # one note says it all
        reason = "no member folder (nothing came back yet)"
        missing.append(f"{member}: {reason}")
        return f"missing: {reason}", None, None, None
    state, note = _state(files)
    metrics, metrics_note = _metrics(files)
    probs, reason = _member_probs(files, why_none.get(member, ""))
    missing += [f"{member}: {n}" for n in (note, metrics_note, reason) if n]
    status = "ok" if probs is not None else f"missing: {reason}"
    return status, state, None if metrics is None else metrics.assign(member=member), probs


def _state(files: MemberDir) -> tuple[dict[str, Any], str]:
    """The member's training counters and final metrics (as the collect step reads them)."""
    try:
        return files.training_row(), ""
    except CondormlError as err:
        return {}, str(err)


def _metrics(files: MemberDir) -> tuple[pd.DataFrame | None, str]:
    try:
        frame = files.metrics()
    except CondormlError as err:
        return None, str(err)
    if frame is None:
        return None, f"no training metrics ({CHECKPOINT_FOLDER}/{METRICS_FILE}: no epoch finished yet)"  # fmt: skip
    return frame, ""


def _member_probs(files: MemberDir, why_none: str = "") -> tuple[pd.Series | None, str]:
    """The member's probability of dog per image id, merging shard parts in memory.

    ``why_none``: why the member has no predictions, from its jobs' logs (default: a guess).
    """
    from condorml.results.predictions import read_predictions

    # shard parts are merged into a temporary folder: a report never writes into the run's folders
    with tempfile.TemporaryDirectory() as tmp:
        predictions = files.predictions(why_none, merge_to=Path(tmp) / PREDICTIONS_FILE)
        if predictions.csv is None:
            return None, predictions.reason
        try:
            frame = read_predictions(predictions.csv)
        except CondormlError as err:
            return None, f"unusable predictions ({err})"
    return frame.set_index("fileid")["prob"], ""


def _sorted_index(ids: Iterable[str]) -> list[str]:
    from condorml.results.predictions import sort_ids

    return sort_ids(ids)


def _epoch_table(members: pd.DataFrame, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Every member's hyperparameters joined with its per-epoch metrics (one row per epoch)."""
    import pandas as pd

    if not frames:
        return members.assign(epoch=pd.NA)
    metrics = pd.concat(frames, ignore_index=True)
    # metrics.csv's lr is the epoch's (scheduled) learning rate, not the member's setting
    clash = {c: f"{c}_epoch" for c in metrics.columns if c in members.columns and c != "member"}
    metrics = metrics.rename(columns=clash)
    table = members.merge(metrics, on="member", how="left")
    return table.sort_values(["member", "epoch"], kind="stable", ignore_index=True)


def _swept(run: RunDir, members: pd.DataFrame) -> list[str]:
    """The spec's swept hyperparameters; without a readable spec, the columns that vary."""
    from condorml.sweep.spec import load_spec

    try:
        swept = list(load_spec(run.spec_copy, check_paths=False).swept)
    except CondormlError:
        fixed = {"member", "seed"}
        swept = [c for c in members.columns if c not in fixed and members[c].nunique() > 1]
    return [name for name in swept if name in members.columns]


def _leaderboard(run: RunDir, rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, str]:
    """The collect step's leaderboard when it wrote one, else the same table from the files."""
    import pandas as pd

    path = run.leaderboard
    if path.exists():
        try:
            frame = pd.read_csv(path, dtype={"member": str})
            if {"member", "status"} <= set(frame.columns):
                known = set(frame["member"])  # members the collect step did not see yet
                extra = [row for row in rows if row["member"] not in known]
                frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
                return frame, f"{path} (written by the collect step)"
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            pass
    frame = pd.DataFrame(rows)
    if "val_loss" in frame:  # as the collect step orders it: finished members by loss first
        ok = frame["status"] == "ok"
        frame = pd.concat([frame[ok].sort_values("val_loss", kind="stable"), frame[~ok]])
    return frame.reset_index(drop=True), "the members' files (the collect step has not run)"


def _current_counts(leaderboard: pd.DataFrame, counts: dict[str, dict[str, int]]) -> None:
    """Put the event logs' counts now into the leaderboard (in place), so that every table of
    the report says the same: the collect step's copy is as old as its last run."""
    if not counts or "member" not in leaderboard:
        return
    for column in LEADERBOARD_COLUMNS:
        known = leaderboard["member"].map(lambda m, c=column: counts.get(m, {}).get(c))
        previous = leaderboard.get(column)
        leaderboard[column] = known if previous is None else known.where(known.notna(), previous)
        leaderboard[column] = leaderboard[column].astype("Int64")


def _labels_and_scores(data: ReportData, labels: Path | None, explicit: bool) -> None:
    """Scores of the members and the ensemble, the ensemble-size curve and the calibration."""
    if labels is None:
        data.missing.append("no labels: ensemble scores, ensemble-size curve and calibration skipped (give --labels)")  # fmt: skip
        return
    try:
        data.labels = read_labels(Path(labels), "--labels" if explicit else "the run's labels")
    except CondormlError as err:
        if explicit:
            raise
        data.missing.append(f"{err}: scores skipped (give --labels)")
        return
    if data.probs is None:
        return
    common = data.probs.dropna().index.intersection(data.labels.index)
    unlabelled = len(data.probs.index.difference(data.labels.index))
    if unlabelled:
        data.missing.append(f"{unlabelled} predicted image(s) have no label: scored without them")
    if len(common) == 0:
        data.missing.append("no image has a label and every member's prediction: scores skipped")
        return
    y = data.labels.loc[common].to_numpy()
    probs = data.probs.loc[common]
    data.scores = score_table(probs, y)
    data.ensemble_curve = ensemble_curve(probs, y, data.ranked())
    data.calibration = calibration_table(probs.mean(axis=1).to_numpy(), y)


def score_table(probs: pd.DataFrame, y: Any) -> pd.DataFrame:
    """Accuracy, log loss and ROC AUC of every member (column of ``probs``) and of their mean."""
    import pandas as pd

    rows = []
    for name, p in [*probs.items(), ("ensemble", probs.mean(axis=1))]:
        scores = _score(y, p)
        rows.append({"member": name, "accuracy": scores.accuracy, "log_loss": scores.log_loss,
                     "roc_auc": scores.roc_auc, "images": len(p)})  # fmt: skip
    return pd.DataFrame(rows)


def _score(y: Any, p: Any) -> Scores:
    """``condorml evaluate``'s scores of probabilities ``p`` of dog for labels ``y``."""
    return score([int(v) for v in y], [float(v) for v in p])


def ensemble_curve(probs: pd.DataFrame, y: Any, order: list[str]) -> pd.DataFrame:
    """Scores of the mean of the first k members of ``order`` (best first), for k = 1..n."""
    import pandas as pd

    rows = []
    for k in range(1, len(order) + 1):
        scores = _score(y, probs[order[:k]].mean(axis=1))
        rows.append({"k": k, "added": order[k - 1], "accuracy": scores.accuracy,
                     "log_loss": scores.log_loss})  # fmt: skip
    return pd.DataFrame(rows)


def calibration_table(p: Any, y: Any, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Per equal-width probability bin (non-empty ones): images, mean probability, dog fraction."""
    import numpy as np
    import pandas as pd

    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    index = np.minimum((p * bins).astype(int), bins - 1)  # p = 1.0 goes to the last bin
    rows = []
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            rows.append({
                "bin_low": b / bins, "bin_high": (b + 1) / bins, "images": int(chosen.sum()),
                "mean_prob": float(p[chosen].mean()), "fraction_dogs": float(y[chosen].mean()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def sample_images(
    source: Path, ids: Collection[str] | None = None, limit: int = SAMPLE_IMAGES, size: int = 128
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Up to ``limit`` test images as (id, RGB PIL image), the first ids in id order.

    Parameters
    ----------
    source : Path
        A zip or folder of test images.
    ids : list of str, optional
        Show only these image ids (those with a prediction).

    Returns the images and notes on files that could not be read.
    """
    from PIL import Image

    from condorml.job.data import ImageSource
    from condorml.results.predictions import sort_ids

    images = ImageSource(source)  # DataError (a CondormlError) if unreadable
    try:
        by_id = {
            PurePosixPath(f.name).stem: f.name
            for f in images.files()
            if PurePosixPath(f.name).suffix.lower() in _IMAGE_SUFFIXES
        }
        wanted = [i for i in sort_ids(by_id) if ids is None or i in ids][:limit]
        result, notes = [], []
        for fileid in wanted:
            try:
                with Image.open(io.BytesIO(images.read(by_id[fileid]))) as opened:
                    image = opened.convert("RGB")
                image.thumbnail((size, size))
                result.append((fileid, image))
            except (OSError, ValueError, SyntaxError) as err:
                notes.append(f"test image {images.display(by_id[fileid])}: unreadable ({err})")
        return result, notes
    finally:
        images.close()
