"""A run folder, finished or not, read into the frames a report shows (:class:`ReportData`).

:func:`gather` reads the leaderboard, every member's per-epoch metrics, the HTCondor accounting of
the training jobs from their event logs (:func:`condorml.monitor.accounting.member_accounting`, the
same that the collect step's leaderboard uses), every member's probabilities of each class and,
when labels are known, the members' and the ensemble's test scores (with
:func:`condorml.results.evaluate.score`, as ``condorml evaluate`` computes them), the per-class
scores, the ensemble's confusion matrix and mistakes, the ensemble-size curve and the calibration
table. Whatever cannot be produced is named in ``ReportData.missing`` instead of failing.

The classes are the members' predictions': cat and dog for ``dog_probs.csv`` (the probability of
cat being 1 - that of dog), the class columns of ``probs.csv`` otherwise.

pandas and numpy are imported inside the functions, so that importing this module (and
``condorml --help``) stays fast.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError
from condorml.job.files import METRICS_FILE, PREDICTIONS_FILE
from condorml.monitor.accounting import (
    LEADERBOARD_COLUMNS,
    leaderboard_counts,
    member_accounting,
    no_predictions_reasons,
)
from condorml.monitor.scoring import (
    calibration_table,
    confidence_table,
    confused_pairs,
    confusion_frame,
    ensemble_curve,
    mean_probs,
    member_scores,
    mistakes,
    per_class_table,
    score_table,
)
from condorml.monitor.searchview import SearchData, current_search_columns, gather_search
from condorml.results.evaluate import Scores, read_labels
from condorml.results.predictions import CAT_DOG
from condorml.sweep.rundir import CHECKPOINT_FOLDER, MemberDir, RunDir

if TYPE_CHECKING:
    import pandas as pd


MISCLASSIFIED_IMAGES = 16


@dataclass
class ReportData:
    """Everything a report shows, as plain pandas frames (None where it could not be produced).

    The members' probabilities are kept per class: ``probs[member]`` is a frame with one row per
    image id that any member predicted (sorted as :func:`~condorml.results.predictions.sort_ids`
    sorts them; the same index in every member's frame, all NaN where that member has no
    prediction) and one column per class of ``classes``; for cat/dog the columns ``cat`` and
    ``dog``. The ensemble (:attr:`ensemble`) is the per-class mean over the members that
    predicted an image, as the collect step writes it; its predicted class is the one of the
    highest probability (:attr:`predicted`). ``labels`` are indices into ``classes``.
    """

    run_dir: Path
    members: pd.DataFrame  # the leaderboard: one row per member
    epochs: pd.DataFrame  # one row per member and epoch (members without metrics: one empty row)
    swept: list[str]  # the swept hyperparameters (columns of ``members``)
    condor: pd.DataFrame | None = None  # per member: training jobs' runs, evictions, time
    classes: tuple[str, ...] | None = None  # the members' class list (None: no predictions)
    probs: dict[str, pd.DataFrame] | None = None  # member -> images x classes (see above)
    labels: pd.Series | None = None  # the true class per image id, an index into ``classes``
    scored: list[str] | None = None  # the ids scored: labelled, predicted by every member
    # per member and "ensemble": accuracy, log_loss, macro_f1, top5_accuracy (more than 5
    # classes), roc_auc (2 classes), images
    scores: pd.DataFrame | None = None
    ensemble_scores: Scores | None = None  # the ensemble's, in full (confusion, per class)
    per_class: pd.DataFrame | None = None  # member (and "ensemble"), class: precision, recall, ...
    confusion: pd.DataFrame | None = None  # the ensemble's: rows true class, columns predicted
    confused_pairs: pd.DataFrame | None = None  # true, predicted, images, fraction_of_true
    mistakes: pd.DataFrame | None = None  # the ensemble's: fileid, true, predicted, probability
    ensemble_curve: pd.DataFrame | None = None  # k, member added, accuracy, log loss
    # 2 classes: per bin of the probability of the second class, that class's fraction;
    # more: per bin of the predicted class's probability (confidence), the fraction correct
    calibration: pd.DataFrame | None = None
    images: Path | None = None  # test images for the sample grid and the misclassified ones
    leaderboard_source: str = ""  # where the leaderboard came from
    missing: list[str] = field(default_factory=list)
    search: SearchData | None = None  # with [search]: every member's search record, importance

    @property
    def ensemble(self) -> pd.DataFrame | None:
        """The ensemble's probability per image (rows) and class (columns): the mean over the
        members that predicted the image."""
        import pandas as pd

        if self.probs is None:
            return None
        first = next(iter(self.probs.values()))
        mean = mean_probs([frame.to_numpy() for frame in self.probs.values()], self.classes)
        return pd.DataFrame(mean, index=first.index, columns=first.columns)

    @property
    def predicted(self) -> pd.Series | None:
        """The ensemble's predicted class name per image (the first of a tie, as ``score``)."""
        ensemble = self.ensemble
        if ensemble is None:
            return None
        return ensemble.idxmax(axis=1).rename("predicted")

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (cat/dog without predictions)."""
        return (self.classes or CAT_DOG)[int(index)]

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
            for m in self.probs
        }
        return sorted(self.probs, key=lambda m: key[m])


def _number(value: Any) -> float:
    """A float for sorting; missing values sort last."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(number) else number


def default_inputs(
    run: RunDir, labelled: bool = False
) -> tuple[Path | None, Path | None, list[str]]:
    """The labels and test images the run itself uses (its ``run.json``), and notes on what
    could not be found.

    Without a labels file, the test set is its own labels when the members' predictions say it
    carries them (``labelled``: their sidecars' ``images.labelled``, a test set laid out like
    training data), as the collect step scores it.

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
    if labels is None and "labels" not in info.data and labelled:
        labels = images
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
        Labels to score the members and the ensemble: a ``fileid,label`` CSV (a class name or
        index), ``fileid,is_dog`` for cat/dog, or a labelled test set (see
        :func:`~condorml.results.evaluate.read_labels`).
    images : Path, optional
        Test images (zip or folder) for the sample grid and the misclassified images.
    use_defaults : bool
        Take labels and images the run itself uses (see :func:`default_inputs`) when not given.
    now : float, optional
        The time up to which a running job's work counts as uncommitted (default: now).

    Raises
    ------
    CondormlError
        If ``run_dir`` is not a run folder, or given labels or images cannot be read.
    """
    run = RunDir(run_dir)
    run_dir = run.path
    table = run.member_table()
    missing: list[str] = []
    explicit_labels = labels is not None
    if images is not None and not Path(images).exists():
        raise CondormlError(f"--images {images}: no such file or folder")
    if labels is not None and not Path(labels).exists():
        raise CondormlError(f"--labels {labels}: no such file or folder")
    members = table["member"].tolist()
    condor, condor_notes = member_accounting(run_dir, members, now)
    counts, why_none = leaderboard_counts(condor), no_predictions_reasons(condor)

    epochs, leaderboard_rows, predictions = [], [], {}
    classes: tuple[str, ...] | None = None
    labelled = False
    for record in table.to_dict("records"):
        member = record["member"]
        found = _member(run.member(member), why_none, missing)
        status, probs = found.status, found.probs
        if probs is not None and classes is not None and tuple(probs.columns) != classes:
            reason = (f"predicts the classes {_listed(probs.columns)}, not those of the other "
                      f"members ({_listed(classes)}): left out")  # fmt: skip
            missing.append(f"{member}: {reason}")
            status, probs = f"missing: {reason}", None
        state = {} if found.state is None else {**found.state, **counts.get(member, {})}
        leaderboard_rows.append({"member": member, "status": status, **record, **state})
        if found.metrics is not None:
            epochs.append(found.metrics)
        if probs is not None:
            predictions[member] = probs
            classes = tuple(probs.columns)
            labelled = labelled or found.labelled

    labels_what = "--labels" if explicit_labels else "the run's labels"
    if use_defaults and (labels is None or images is None):
        default_labels, default_images, notes = default_inputs(run, labelled)
        if labels is None and default_labels is not None:
            labels = default_labels
            if default_labels == default_images:
                labels_what = "the run's test set"
        images = images if images is not None else default_images
        missing[:0] = notes  # about the whole run: before the members' notes
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
        data.classes = classes
        data.probs = _aligned(predictions)
    else:
        missing.append("no member has predictions: ensemble, calibration and scores skipped")
    _labels_and_scores(data, labels, explicit_labels, labels_what)
    if images is None:
        missing.append(
            "no test images known: sample grid and misclassified images skipped (give --images)"
        )
    elif not Path(images).exists():
        missing.append(
            f"the run's test images {images}: no such file or folder; sample grid and "
            "misclassified images skipped (give --images)"
        )
    else:
        data.images = Path(images)
    return data


@dataclass
class _Member:
    """What :func:`gather` reads of one member's folder."""

    status: str
    state: dict[str, Any] | None = None  # training progress (None: no folder yet)
    metrics: pd.DataFrame | None = None  # per epoch
    probs: pd.DataFrame | None = None  # images x classes
    labelled: bool = False  # its predictions' test set carries labels


def _member(files: MemberDir, why_none: dict[str, str], missing: list[str]) -> _Member:
    """A member's status, training progress, per-epoch metrics and predictions; what is
    missing is added to ``missing``."""
    member = files.member
    if not files.path.is_dir():  # one note says it all
        reason = "no member folder (nothing came back yet)"
        missing.append(f"{member}: {reason}")
        return _Member(f"missing: {reason}")
    state, note = _state(files)
    metrics, metrics_note = _metrics(files)
    probs, labelled, reason = _member_probs(files, why_none.get(member, ""))
    missing += [f"{member}: {n}" for n in (note, metrics_note, reason) if n]
    status = "ok" if probs is not None else f"missing: {reason}"
    metrics = None if metrics is None else metrics.assign(member=member)
    return _Member(status, state, metrics, probs, labelled)


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


def _member_probs(files: MemberDir, why_none: str = "") -> tuple[pd.DataFrame | None, bool, str]:
    """The member's probability of each class per image id (rows; columns: its classes),
    merging shard parts in memory, and whether its test set carries labels (its sidecar).

    ``why_none``: why the member has no predictions, from its jobs' logs (default: a guess).
    """
    import pandas as pd

    from condorml.results.predictions import (
        prediction_classes,
        probability_matrix,
        read_predictions,
        read_sidecar,
    )

    # shard parts are merged into a temporary folder: a report never writes into the run's folders
    with tempfile.TemporaryDirectory() as tmp:
        predictions = files.predictions(why_none, merge_to=Path(tmp) / PREDICTIONS_FILE)
        if predictions.csv is None:
            return None, False, predictions.reason
        try:
            frame = read_predictions(predictions.csv)
            sidecar = read_sidecar(predictions.csv) or {}
        except CondormlError as err:
            return None, False, f"unusable predictions ({err})"
    repeated = frame["fileid"][frame["fileid"].duplicated()]
    if len(repeated):
        return None, False, f"unusable predictions (fileid {repeated.iloc[0]} more than once)"
    probs = pd.DataFrame(
        probability_matrix(frame),
        index=pd.Index(frame["fileid"], name="fileid"),
        columns=list(prediction_classes(frame)),
    )
    images = sidecar.get("images") if isinstance(sidecar, dict) else None
    return probs, bool(isinstance(images, dict) and images.get("labelled")), ""


def _aligned(predictions: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every member's frame on the same index: every id any member predicted, sorted."""
    from condorml.results.predictions import sort_ids

    ids: dict[str, None] = {}
    for frame in predictions.values():
        ids.update(dict.fromkeys(frame.index))
    index = sort_ids(ids)
    return {member: frame.reindex(index) for member, frame in predictions.items()}


def _listed(names: Sequence[str], most: int = 5) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


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


# --- scores ------------------------------------------------------------------------------------


def _labels_and_scores(data: ReportData, labels: Path | None, explicit: bool, what: str) -> None:
    """The labels; the scores of the members and the ensemble, per class too, the ensemble's
    confusion matrix and mistakes, the ensemble-size curve and the calibration."""
    import numpy as np

    if labels is None:
        data.missing.append(
            "no labels: scores, ensemble-size curve, calibration, confusion matrix, per-class "
            "scores and misclassified images skipped (give --labels)"
        )
        return
    try:
        # without predictions the classes are unknown: cat/dog labels still title the samples
        data.labels = read_labels(Path(labels), what, data.classes)
    except CondormlError as err:
        if explicit and data.classes is not None:
            raise
        skipped = "scores skipped (give --labels)" if data.classes else "not read"
        data.missing.append(f"{err}: {skipped}")
        return
    if data.probs is None or data.classes is None:
        return
    frames = list(data.probs.values())
    predicted = frames[0].index
    everyone = ~np.any([frame.isna().any(axis=1).to_numpy() for frame in frames], axis=0)
    common = predicted[everyone].intersection(data.labels.index, sort=False)
    unlabelled = len(predicted.difference(data.labels.index))
    if unlabelled:
        data.missing.append(f"{unlabelled} predicted image(s) have no label: scored without them")
    if len(common) == 0:
        data.missing.append("no image has a label and every member's prediction: scores skipped")
        return
    y = data.labels.loc[common].to_numpy(dtype=int)
    probs = {member: frame.loc[common].to_numpy() for member, frame in data.probs.items()}
    classes = data.classes
    try:
        every = member_scores(probs, y, classes)
    except CondormlError as err:  # a probability that is none (a damaged file)
        data.missing.append(f"{err}: scores skipped")
        return
    ensemble = mean_probs(list(probs.values()), classes)
    data.scored = list(common)
    data.scores = score_table(every)
    data.ensemble_scores = every["ensemble"]
    data.per_class = per_class_table(every)
    data.confusion = confusion_frame(every["ensemble"])
    data.confused_pairs = confused_pairs(every["ensemble"])
    data.mistakes = mistakes(list(common), y, ensemble, classes)
    data.ensemble_curve = ensemble_curve(probs, y, data.ranked(), classes)
    if len(classes) == 2:
        data.calibration = calibration_table(ensemble[:, 1], y, positive=classes[1])
    else:
        data.calibration = confidence_table(ensemble, y)
