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

import csv
import io
import math
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError
from condorml.monitor.accounting import (
    LEADERBOARD_COLUMNS,
    leaderboard_counts,
    member_accounting,
    no_predictions_reasons,
)
from condorml.results.evaluate import Scores, read_labels, score

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


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a sweep's run folder (``condorml sweep`` writes ``members.csv``)."""
    return (path / "members.csv").is_file()


def default_inputs(
    run_dir: Path, member: str | None = None
) -> tuple[Path | None, Path | None, list[str]]:
    """The labels and test images the run itself uses, and notes on what could not be found.

    The run folder's ``spec.toml`` is a copy whose relative paths were relative to the original
    spec, so they are read from the generated submit files instead: ``collect.sub``'s
    ``--labels`` (relative to the run folder) and ``infer.sub``'s transferred images (relative to
    a member's folder, its ``initialdir``: ``members/<member>``, the first member by default).
    """
    from condorml.htcondor.quoting import split_condor_arguments

    notes: list[str] = []
    labels = images = None
    collect = _submit_values(run_dir / "collect.sub")
    if collect is not None:
        args = _split(split_condor_arguments, collect.get("arguments", ""))
        if "--labels" in args[:-1]:
            labels = _local(args[args.index("--labels") + 1], run_dir)
            if labels is None:
                notes.append("the run's labels are not a local file: give --labels")
    infer = _submit_values(run_dir / "infer.sub")
    if member is None and is_run_dir(run_dir):
        with open(run_dir / "members.csv", newline="") as handle:
            member = next((row.get("member") for row in csv.DictReader(handle)), None)
    if infer is not None and member:
        args = _split(split_condor_arguments, infer.get("arguments", ""))
        name = args[args.index("--images") + 1] if "--images" in args[:-1] else None
        entries = [e.strip() for e in infer.get("transfer_input_files", "").split(",")]
        entry = next((e for e in entries if name and PurePosixPath(e).name == name), None)
        if entry is not None:
            images = _local(entry, run_dir / "members" / member)
            if images is None:
                notes.append(f"the test images are at {entry}: give --images to show samples")
    return labels, images, notes


def _submit_values(path: Path) -> dict[str, str] | None:
    """A submit file's commands (HTCondor's own parser), or None if absent or unreadable."""
    if not path.is_file():
        return None
    import htcondor2

    try:
        description = htcondor2.Submit(path.read_text())
        return {key: str(description[key]) for key in description}
    except Exception:  # htcondor2 raises plain exceptions for bad text; defaults are optional
        return None


def _split(splitter: Any, text: str) -> list[str]:
    try:
        return splitter(text) if text else []
    except ValueError:
        return []


def _local(entry: str, folder: Path) -> Path | None:
    """A submit file's path as a path from here (None for URLs)."""
    if "://" in entry:
        return None if not entry.startswith("file://") else Path(entry[len("file://") :])
    # resolve(): `..` after a symlink means what the OS (and HTCondor's transfer) make of it
    return (Path(folder) / entry).resolve()


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

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CondormlError(f"{run_dir}: no such folder; give a sweep's run folder")
    if not is_run_dir(run_dir):
        raise CondormlError(
            f"{run_dir}: no members.csv; not a sweep run folder (condorml sweep writes one)"
        )
    try:
        table = pd.read_csv(run_dir / "members.csv", dtype={"member": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CondormlError(f"{run_dir / 'members.csv'}: not a CSV file ({err})") from None
    if "member" not in table.columns:
        raise CondormlError(f"{run_dir / 'members.csv'}: no member column")
    missing: list[str] = []
    explicit_labels = labels is not None
    if images is not None and not Path(images).exists():
        raise CondormlError(f"--images {images}: no such file or folder")
    if use_defaults and (labels is None or images is None):
        default_labels, default_images, notes = default_inputs(
            run_dir, table["member"].iloc[0] if len(table) else None
        )
        labels = labels if labels is not None else default_labels
        images = images if images is not None else default_images
        missing += notes
    members = table["member"].tolist()
    condor, condor_notes = member_accounting(run_dir, members, now)
    counts, why_none = leaderboard_counts(condor), no_predictions_reasons(condor)

    epochs, leaderboard_rows, predictions = [], [], {}
    for record in table.to_dict("records"):
        member, folder = record["member"], run_dir / "members" / record["member"]
        if not folder.is_dir():  # one note says it all
            reason = "no member folder (nothing came back yet)"
            missing.append(f"{member}: {reason}")
            leaderboard_rows.append({"member": member, "status": f"missing: {reason}", **record})
            continue
        state, note = _state(folder)
        metrics, metrics_note = _metrics(folder)
        probs, reason = _member_probs(folder, why_none.get(member, ""))
        missing += [f"{member}: {n}" for n in (note, metrics_note, reason) if n]
        if metrics is not None:
            epochs.append(metrics.assign(member=member))
        if probs is not None:
            predictions[member] = probs
        status = "ok" if probs is not None else f"missing: {reason}"
        leaderboard_rows.append(
            {"member": member, "status": status, **record, **state, **counts.get(member, {})}
        )

    leaderboard, source = _leaderboard(run_dir, leaderboard_rows)
    _current_counts(leaderboard, counts)
    data = ReportData(run_dir, leaderboard, _epoch_table(table, epochs), _swept(run_dir, table),
                      leaderboard_source=source, missing=missing)  # fmt: skip
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


def _state(folder: Path) -> tuple[dict[str, Any], str]:
    """The member's training counters and final metrics (as the collect step reads them)."""
    from condorml.sweep.collect import training_state

    try:
        return training_state(folder), ""
    except (OSError, ValueError, KeyError) as err:
        return {}, f"unreadable {folder / 'ckpt'} files ({err})"


def _metrics(folder: Path) -> tuple[pd.DataFrame | None, str]:
    import pandas as pd

    path = folder / "ckpt" / "metrics.csv"
    if not path.exists():
        return None, "no training metrics (ckpt/metrics.csv: no epoch finished yet)"
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        return None, f"unreadable {path} ({err})"
    if "epoch" not in frame.columns or frame.empty:
        return None, f"{path}: no epoch recorded yet"
    return frame, ""


def _member_probs(folder: Path, why_none: str = "") -> tuple[pd.Series | None, str]:
    """The member's probability of dog per image id, merging shard parts in memory.

    ``why_none``: why the member has no predictions, from its jobs' logs (default: a guess).
    """
    from condorml.results.merge import merge_predictions
    from condorml.results.predictions import read_predictions

    out = folder / "out"
    csv = out / "dog_probs.csv"
    try:
        if not csv.exists():
            parts = sorted(out.glob("dog_probs.part*.csv")) if out.is_dir() else []
            if not parts:
                return None, f"no predictions ({why_none or 'inference did not finish'})"
            # merged into a temporary folder: a report never writes into the run's folders
            with tempfile.TemporaryDirectory() as tmp:
                merge_predictions(Path(tmp) / "dog_probs.csv", parts)
                frame = read_predictions(Path(tmp) / "dog_probs.csv")
        else:
            frame = read_predictions(csv)
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


def _swept(run_dir: Path, members: pd.DataFrame) -> list[str]:
    """The spec's swept hyperparameters; without a readable spec, the columns that vary."""
    from condorml.sweep.spec import load_spec

    try:
        swept = list(load_spec(run_dir / "spec.toml", check_paths=False).swept)
    except CondormlError:
        fixed = {"member", "seed"}
        swept = [c for c in members.columns if c not in fixed and members[c].nunique() > 1]
    return [name for name in swept if name in members.columns]


def _leaderboard(run_dir: Path, rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, str]:
    """The collect step's leaderboard when it wrote one, else the same table from the files."""
    import pandas as pd

    path = run_dir / "leaderboard.csv"
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
