"""A run folder, finished or not, read into the frames a report shows (:class:`ReportData`).

:func:`gather` reads the leaderboard, every member's per-epoch metrics, the HTCondor accounting of
the training jobs from their event logs (:func:`condorml.sweep.accounting.member_accounting`, the
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
from condorml.job.files import CHECKPOINT_FOLDER, METRICS_FILE, PREDICTIONS_FILE, STATE_FILE
from condorml.monitor.scoring import (
    calibration_table,
    confidence_table,
    confused_pairs,
    confusion_frame,
    ensemble_curve,
    mistakes,
    per_class_table,
    score_table,
    scores_on_own_images,
)
from condorml.monitor.searchview import SearchData, current_search_columns, gather_search
from condorml.results import ensemble
from condorml.results.ensemble import choose_members
from condorml.results.evaluate import Scores, read_labels
from condorml.results.predictions import CAT_DOG
from condorml.sweep.accounting import (
    LEADERBOARD_COLUMNS,
    leaderboard_counts,
    member_accounting,
    no_predictions_reasons,
)
from condorml.sweep.collect import leaderboard_frame
from condorml.sweep.rundir import (
    MemberDir,
    RunDir,
)

if TYPE_CHECKING:
    import pandas as pd

    from condorml.sweep.spec import SweepSpec


MISCLASSIFIED_IMAGES = 16


@dataclass
class ReportData:
    """Everything a report shows, as plain pandas frames (None where it could not be produced).

    The members' probabilities are kept per class: ``probs[member]`` is a frame with one row per
    image id that any member predicted (sorted as :func:`~condorml.results.predictions.sort_ids`
    sorts them; the same index in every member's frame, all NaN where that member has no
    prediction) and one column per class of ``classes``; for cat/dog the columns ``cat`` and
    ``dog``. The ensemble is the collect step's, computed as it computes it
    (:mod:`condorml.results.ensemble`): the members it chooses (all with predictions, or the
    ``top_k`` best by the run's ``metric``), the per-class mean over those that predicted an
    image (:attr:`ensemble`); its predicted class is the one of the highest probability
    (:attr:`predicted`). Every member and the ensemble are scored over their own labelled
    images, as ``condorml evaluate`` scores their CSVs: the ensemble's row is ``metrics.json``'s.
    ``labels`` are indices into ``classes``.
    """

    run_dir: Path
    members: pd.DataFrame  # the leaderboard: one row per member
    epochs: pd.DataFrame  # one row per member and epoch (members without metrics: one empty row)
    swept: list[str]  # the swept hyperparameters (columns of ``members``)
    condor: pd.DataFrame | None = None  # per member: training jobs' runs, evictions, time
    classes: tuple[str, ...] | None = None  # the members' class list (None: no predictions)
    probs: dict[str, pd.DataFrame] | None = None  # member -> images x classes (see above)
    labels: pd.Series | None = None  # the true class per image id, an index into ``classes``
    scored: list[str] | None = None  # the ensemble's ids scored: labelled, predicted
    metric: str = "val_loss"  # what ranks the members (the search's metric, or val_loss)
    ensemble_members: list[str] = field(default_factory=list)  # who joins, best first
    ensemble_table: pd.DataFrame | None = None  # results.ensemble.average of those members
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
        """The ensemble's probability per image (rows: every id any member predicted, NaN where
        none of its members did) and class (columns)."""
        if self.probs is None or self.ensemble_table is None or self.classes is None:
            return None
        first = next(iter(self.probs.values()))
        return ensemble.probabilities(self.ensemble_table, self.classes).reindex(first.index)

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
        """Members with predictions, best first by the run's metric (ties by id, a member
        without it last), as the collect step ranks them."""
        if self.probs is None:
            return []
        table = self.members.set_index("member")
        values = {
            m: _number(table.at[m, self.metric]) if self.metric in table else None
            for m in self.probs
        }
        return choose_members({m: None if v == math.inf else v for m, v in values.items()},
                              None, self.metric)  # fmt: skip


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

    spec = _spec(run)
    metric = spec.search.metric if spec is not None and spec.search is not None else "val_loss"
    epochs, leaderboard_rows, predictions, frames = [], [], {}, {}
    classes: tuple[str, ...] | None = None
    labelled = False
    spooled = run.spooled_checkpoints()
    for record in table.to_dict("records"):
        member = record["member"]
        found = _member(run.member(member), why_none, missing, spooled.get(member, []))
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
            frames[member] = found.frame
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
    leaderboard, source = _leaderboard(run, leaderboard_rows, metric)
    _current_counts(leaderboard, counts)
    search = gather_search(run, members)
    if search is not None:
        current_search_columns(leaderboard, search)
        missing += search.notes
    data = ReportData(run_dir, leaderboard, _epoch_table(table, epochs), _swept(spec, table),
                      leaderboard_source=source, missing=missing, search=search,
                      metric=metric)  # fmt: skip
    if not data.swept:
        missing.append("no swept hyperparameter (the members differ by seed only)")
    data.condor = condor
    missing += condor_notes
    if predictions:
        assert classes is not None
        data.classes = classes
        data.probs = _aligned(predictions)
        # the collect step's ensemble: its members, its computation
        data.ensemble_members = choose_members(
            {m: _metric_of(leaderboard, m, metric) for m in predictions},
            spec.top_k if spec is not None else None, metric,
        )  # fmt: skip
        data.ensemble_table = ensemble.average(
            {m: frames[m] for m in data.ensemble_members}, classes
        )
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
    frame: pd.DataFrame | None = None  # its predictions, as read_predictions reads them


def _member(files: MemberDir, why_none: dict[str, str], missing: list[str],
            spooled: list[Path]) -> _Member:  # fmt: skip
    """A member's status, training progress, per-epoch metrics and predictions; what is
    missing is added to ``missing``. Training is read from its newest checkpoint, a running
    job's spooled one included (``spooled``), as ``watch`` reads it."""
    member = files.member
    if not files.path.is_dir() and not spooled:  # one note says it all
        reason = "no member folder (nothing came back yet)"
        missing.append(f"{member}: {reason}")
        return _Member(f"missing: {reason}")
    ckpt = files.newest_checkpoint(spooled)
    state, note = _state(files, ckpt)
    metrics, metrics_note = _metrics(ckpt)
    probs, labelled, reason, frame = _member_probs(files, why_none.get(member, ""))
    missing += [f"{member}: {n}" for n in (note, metrics_note, reason) if n]
    status = "ok" if probs is not None else f"missing: {reason}"
    metrics = None if metrics is None else metrics.assign(member=member)
    return _Member(status, state, metrics, probs, labelled, frame)


def _state(files: MemberDir, ckpt: Path) -> tuple[dict[str, Any], str]:
    """The member's training counters and final metrics (as the collect step reads them)."""
    try:
        return files.training_row(ckpt), ""
    except CondormlError as err:
        return {}, str(err)


def _metrics(ckpt: Path) -> tuple[pd.DataFrame | None, str]:
    from condorml.sweep.rundir import read_metrics

    try:
        frame = read_metrics(ckpt)
    except CondormlError as err:
        return None, str(err)
    if frame is None:
        return None, f"no training metrics ({CHECKPOINT_FOLDER}/{METRICS_FILE}: no epoch finished yet)"  # fmt: skip
    return frame, ""


def _member_probs(
    files: MemberDir, why_none: str = ""
) -> tuple[pd.DataFrame | None, bool, str, pd.DataFrame | None]:
    """The member's probability of each class per image id (rows; columns: its classes),
    merging shard parts in memory, whether its test set carries labels (its sidecar), why it
    has none, and its predictions as read.

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
            return None, False, predictions.reason, None
        try:
            frame = read_predictions(predictions.csv)
            sidecar = read_sidecar(predictions.csv) or {}
        except CondormlError as err:
            return None, False, f"unusable predictions ({err})", None
    repeated = frame["fileid"][frame["fileid"].duplicated()]
    if len(repeated):
        reason = f"unusable predictions (fileid {repeated.iloc[0]} more than once)"
        return None, False, reason, None
    probs = pd.DataFrame(
        probability_matrix(frame),
        index=pd.Index(frame["fileid"], name="fileid"),
        columns=list(prediction_classes(frame)),
    )
    images = sidecar.get("images") if isinstance(sidecar, dict) else None
    return probs, bool(isinstance(images, dict) and images.get("labelled")), "", frame


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


def _spec(run: RunDir) -> SweepSpec | None:
    """The run's spec (its copy in the run folder), or None where it cannot be read."""
    from condorml.sweep.spec import load_spec

    try:
        return load_spec(run.spec_copy, check_paths=False)
    except CondormlError:
        return None


def _swept(spec: SweepSpec | None, members: pd.DataFrame) -> list[str]:
    """The spec's swept hyperparameters; without a readable spec, the columns that vary."""
    if spec is not None:
        swept = list(spec.swept)
    else:
        fixed = {"member", "seed"}
        swept = [c for c in members.columns if c not in fixed and members[c].nunique() > 1]
    return [name for name in swept if name in members.columns]


def _metric_of(leaderboard: pd.DataFrame, member: str, metric: str) -> float | None:
    """A member's ``metric`` in the leaderboard (its last epoch's), None where it has none."""
    if metric not in leaderboard:
        return None
    value = _number(leaderboard.loc[leaderboard["member"] == member, metric].iloc[0])
    return None if value == math.inf else value


def _leaderboard(
    run: RunDir, rows: list[dict[str, Any]], metric: str = "val_loss"
) -> tuple[pd.DataFrame, str]:
    """The collect step's leaderboard when it is current, else the same table from the files.

    It is current when nothing it summarises changed after it was written: a member's
    checkpoint, metrics or predictions newer than it (a run going on, or run again) make it an
    earlier step's, and the table is built from the files, ordered as the collect step orders
    it (the members with predictions by ``metric``, best first).
    """
    import pandas as pd

    path = run.leaderboard
    if path.exists() and not _newer_than(run, path.stat().st_mtime):
        try:
            frame = pd.read_csv(path, dtype={"member": str})
            if {"member", "status"} <= set(frame.columns):
                known = set(frame["member"])  # members the collect step did not see yet
                extra = [row for row in rows if row["member"] not in known]
                frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
                return frame, f"{path} (written by the collect step)"
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            pass
    source = "the members' files (the collect step has not run)"
    if path.exists():
        source = f"the members' files ({path} is older than them: an earlier collect step's)"
    return leaderboard_frame(rows, metric), source


def _newer_than(run: RunDir, written: float) -> bool:
    """Whether a member's training or predictions changed after ``written`` (a timestamp)."""
    for member in run.member_ids():
        files = run.member(member)
        for path in (files.ckpt / STATE_FILE, files.ckpt / METRICS_FILE, files.predictions_csv):
            try:
                if path.stat().st_mtime > written:
                    return True
            except OSError:
                continue
    return False


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
    ensemble_probs = data.ensemble
    if data.probs is None or data.classes is None or ensemble_probs is None:
        return
    classes = data.classes
    predicted = ensemble_probs.dropna().index
    unlabelled = len(predicted.difference(data.labels.index))
    if unlabelled:
        data.missing.append(f"{unlabelled} predicted image(s) have no label: scored without them")
    scored = predicted.intersection(data.labels.index, sort=False)
    if len(scored) == 0:
        data.missing.append("no predicted image has a label: scores skipped")
        return
    try:  # each over its own labelled images, as condorml evaluate scores its CSV
        every = scores_on_own_images({**data.probs, "ensemble": ensemble_probs}, data.labels,
                                     classes)  # fmt: skip
    except CondormlError as err:  # a probability that is none (a damaged file)
        data.missing.append(f"{err}: scores skipped")
        return
    y = data.labels.loc[scored].to_numpy(dtype=int)
    chosen = ensemble_probs.loc[scored].to_numpy()
    data.scored = list(scored)
    data.scores = score_table(every)
    data.ensemble_scores = every["ensemble"]
    data.per_class = per_class_table(every)
    data.confusion = confusion_frame(every["ensemble"])
    data.confused_pairs = confused_pairs(every["ensemble"])
    data.mistakes = mistakes(list(scored), y, chosen, classes)
    # members added best first, over the ensemble's images: its last point is the ensemble
    members = {m: data.probs[m].loc[scored].to_numpy() for m in data.ensemble_members}
    order = [m for m in data.ranked() if m in members]
    data.ensemble_curve = ensemble_curve(members, y, order, classes)
    if len(classes) == 2:
        data.calibration = calibration_table(chosen[:, 1], y, positive=classes[1])
    else:
        data.calibration = confidence_table(chosen, y)
