"""``condorml report``: what a sweep produced, as tables, plots and one self-contained HTML page.

Two layers. :func:`gather` reads a run folder (finished or not) into a :class:`ReportData` of plain
pandas frames: the leaderboard, every member's per-epoch metrics, the HTCondor accounting of the
training jobs from their event logs, and, when labels are known, the members' and the ensemble's
test scores, the ensemble-size curve and the calibration table. Whatever cannot be produced is
named in ``ReportData.missing`` instead of failing. The ``plot_*`` functions each draw one
matplotlib figure from those frames, and :func:`write_report` renders the plots and tables into
the output folder and ``report.html``, every plot embedded as a base64 PNG, so the page needs
no network access.

The HTCondor view (runs, checkpoints, evictions, committed and lost time per member) is
:func:`condorml.monitor.accounting.member_accounting`, the same that the collect step's leaderboard uses.

matplotlib, pandas and numpy are imported inside the functions, so that importing this module
(and ``condorml --help``) stays fast.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import tempfile
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from condorml import __version__
from condorml.errors import CondormlError
from condorml.fileio import atomic_write, atomic_write_text
from condorml.monitor.accounting import (
    LEADERBOARD_COLUMNS,
    LOST_CAUSES,
    counts_line,
    leaderboard_counts,
    lost_column,
    member_accounting,
    no_predictions_reasons,
)
from condorml.results.evaluate import THRESHOLD, Scores, read_labels, score

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


REPORT_FOLDER = "report"
HTML_NAME = "report.html"
SAMPLE_IMAGES = 16
CALIBRATION_BINS = 10
# The image types `condorml infer` reads (condorml.job.infer imports torch, so not imported from it)
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# Every plot the report can draw, in page order: file stem -> title
PLOTS = {
    "learning_curves": "Learning curves",
    "hyperparameters": "Final validation accuracy against each swept hyperparameter",
    "ensemble_vs_members": "Ensemble against its members (test set)",
    "ensemble_size": "Ensemble size: members added best first",
    "calibration": "Calibration of the ensemble probabilities",
    "sample_images": "Sample test images with the ensemble's probability of dog",
    "goodput": "HTCondor: committed and lost execution time of the training jobs",
}


# --- gathering ---------------------------------------------------------------------------------


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


# --- plots -------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with the Agg canvas; pyplot (and its global state) is never used.
    # Constrained layout keeps titles, labels and legends ("outside" ones too) inside the figure.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # text is measured (to fit it) with the renderer that draws the PNG
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


# Hyperparameters compared by ratio: drawn on a log axis whenever their values are all positive
_LOG_BY_NATURE = frozenset({"lr", "weight_decay"})
_MIN_FONT_SIZE = 7.0  # a title shrinks to this size to fit its axes, not further
_LABEL_GAP = 2.0  # pixels between two tick labels


def log_distributed(spec_file: Path) -> set[str]:
    """The hyperparameters a sweep spec draws from ``log_uniform`` (none if it cannot be read)."""
    from condorml.sweep.spec import load_spec

    try:
        random = load_spec(spec_file, check_paths=False).random
    except (CondormlError, OSError):
        return set()
    return {name for name, d in random.items() if isinstance(d, dict) and "log_uniform" in d}


def _apart(boxes: list[Any], along: str) -> bool:
    """Whether no two of the boxes overlap along ``along`` ("x" or "y")."""
    from itertools import pairwise

    spans = sorted((b.x0, b.x1) if along == "x" else (b.y0, b.y1) for b in boxes)
    return all(a[1] + _LABEL_GAP <= b[0] for a, b in pairwise(spans))


def _tick_labels(axis: Any, along: str) -> list[Any]:
    """The tick labels drawn on one axis (inside its view, not empty)."""
    ticks = axis.xaxis if along == "x" else axis.yaxis
    low, high = sorted(ticks.get_view_interval())
    locations, labels = ticks.get_majorticklocs(), ticks.get_majorticklabels()
    return [label for tick, label in zip(locations, labels, strict=True)
            if low <= tick <= high and label.get_visible() and label.get_text()]  # fmt: skip


def _fit_ticks(fig: Figure, axis: Any, along: str, renderer: Any) -> None:
    """Rotate (x only), then thin, an axis's tick labels until none overlaps the next.

    Thinning keeps the last label (the ensemble, after its members) and every n-th before it.
    """
    from itertools import pairwise

    labels = _tick_labels(axis, along)
    if _apart([t.get_window_extent(renderer) for t in labels], along):
        return
    ticks = axis.xaxis if along == "x" else axis.yaxis
    if along == "x":
        axis.tick_params(axis="x", labelrotation=90)
        fig.draw_without_rendering()
        labels = _tick_labels(axis, along)
    boxes = [t.get_window_extent(renderer) for t in labels]
    if _apart(boxes, along) or len(labels) < 2:
        return
    # every n-th label: n spacings must hold the widest label (across the axis)
    size = max(b.width if along == "x" else b.height for b in boxes) + _LABEL_GAP
    centres = sorted((b.x0 + b.x1) / 2 if along == "x" else (b.y0 + b.y1) / 2 for b in boxes)
    spacing = min(b - a for a, b in pairwise(centres)) or 1.0
    positions = [label.get_position()[0 if along == "x" else 1] for label in labels]
    texts = [label.get_text() for label in labels]
    for every in range(max(2, math.ceil(size / spacing)), len(labels) + 1):
        keep = sorted(range(len(labels) - 1, -1, -every))
        ticks.set_ticks([positions[i] for i in keep], [texts[i] for i in keep])
        ticks.set_minor_locator(_null_locator())
        fig.draw_without_rendering()
        if _apart([t.get_window_extent(renderer) for t in _tick_labels(axis, along)], along):
            return


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _finish(fig: Figure) -> Figure:
    """Lay the figure out so that nothing is clipped or overlaps: titles shrink to their axes'
    width, tick labels that collide are rotated and then thinned."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for axis in fig.axes:
        title = axis.title
        width = axis.get_window_extent(renderer).width
        while title.get_text() and title.get_window_extent(renderer).width > width:
            if title.get_fontsize() <= _MIN_FONT_SIZE:
                break
            title.set_fontsize(title.get_fontsize() - 1)
    fig.draw_without_rendering()
    for axis in fig.axes:
        if axis.axison:
            _fit_ticks(fig, axis, "x", renderer)
            _fit_ticks(fig, axis, "y", renderer)
    return fig


def plot_learning_curves(epochs: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch of every member: train dashed, validation solid."""
    frame = epochs.dropna(subset=["epoch"])
    members = list(dict.fromkeys(frame["member"]))
    fig = _figure(11, 4)
    loss, acc = fig.subplots(1, 2)
    for member, color in zip(members, _colors(len(members)), strict=True):
        rows = frame[frame["member"] == member]
        for axis, metric in ((loss, "loss"), (acc, "acc")):
            axis.plot(rows["epoch"], rows[f"train_{metric}"], "--", color=color, alpha=0.7)
            axis.plot(rows["epoch"], rows[f"val_{metric}"], "-o", color=color, ms=3, label=member)
    for axis, name in ((loss, "loss"), (acc, "accuracy")):
        axis.set(xlabel="epoch", ylabel=name, title=f"{name} (train dashed, validation solid)")
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    if len(members) <= 12:  # beyond that a legend is a wall of names
        fig.legend(*acc.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    return _finish(fig)


def plot_hyperparameters(
    members: pd.DataFrame, swept: list[str], log_scaled: Collection[str] = ()
) -> Figure:
    """Final validation accuracy of every member against each swept hyperparameter.

    A hyperparameter goes on a log axis when its values are all positive and it is in
    ``log_scaled`` (the spec draws it from ``log_uniform``), or a learning rate or weight decay,
    or its values span two decades or more. A few values that members share (a grid) are the ticks.
    """
    import numpy as np
    import pandas as pd

    columns = min(len(swept), 3)
    rows_of_plots = math.ceil(len(swept) / columns)
    fig = _figure(max(4.0 * columns, 5.0), 3.6 * rows_of_plots)
    axes = np.atleast_1d(fig.subplots(rows_of_plots, columns, squeeze=False).ravel())
    for axis in axes[len(swept) :]:
        axis.set_axis_off()
    rows = members.dropna(subset=["val_acc"])
    for axis, name in zip(axes, swept, strict=False):
        values = pd.to_numeric(rows[name], errors="coerce")
        numeric = values.notna().all() and rows[name].dtype != bool
        if numeric:
            axis.scatter(values, rows["val_acc"], alpha=0.8)
            positive = len(values) > 0 and bool((values > 0).all())
            if positive and (name in log_scaled or name in _LOG_BY_NATURE
                             or values.max() / values.min() >= 100):  # fmt: skip
                axis.set_xscale("log")
            distinct = sorted(set(values))
            if len(distinct) <= 8 and len(distinct) < len(values):  # a grid (with seeds)
                axis.set_xticks(distinct, [f"{v:g}" for v in distinct])
                axis.xaxis.set_minor_locator(_null_locator())
        else:
            labels = sorted({str(v) for v in rows[name]})
            axis.scatter([labels.index(str(v)) for v in rows[name]], rows["val_acc"], alpha=0.8)
            axis.set_xticks(range(len(labels)), labels)
            axis.set_xlim(-0.5, len(labels) - 0.5)
        axis.set(xlabel=name, ylabel="final validation accuracy", title=name)
        axis.grid(alpha=0.3)
    return _finish(fig)


def plot_ensemble_vs_members(scores: pd.DataFrame, order: list[str]) -> Figure:
    """Test accuracy and log loss of every member (best validation first) and of the ensemble."""
    table = scores.set_index("member").loc[[*order, "ensemble"]]
    fig = _figure(min(max(8.0, 0.25 * len(table) + 4), 16.0), 4.2)  # 16 in: ~100 bars
    colors = ["tab:blue"] * len(order) + ["tab:orange"]
    for axis, metric, label in zip(
        fig.subplots(1, 2), ("accuracy", "log_loss"), ("accuracy", "log loss"), strict=True
    ):
        axis.bar(range(len(table)), table[metric], color=colors)
        axis.axhline(table.at["ensemble", metric], color="tab:orange", ls="--", lw=1)
        axis.set_xticks(range(len(table)), table.index)
        axis.set_xlim(-0.6, len(table) - 0.4)
        # bars start at 0: a zoomed axis would cut them off at the bottom
        axis.set_ylim(0.0, max(float(table[metric].max()) * 1.05, 1e-3))
        axis.set(ylabel=label, title=f"test {label}")
        axis.grid(alpha=0.3, axis="y")
    return _finish(fig)


def plot_ensemble_size(curve: pd.DataFrame) -> Figure:
    """Ensemble accuracy and log loss against its size, members added best first."""
    fig = _figure(10, 3.8)
    best = curve.iloc[0]
    for axis, metric, label in zip(
        fig.subplots(1, 2), ("accuracy", "log_loss"), ("accuracy", "log loss"), strict=True
    ):
        axis.plot(curve["k"], curve[metric], "-o", color="tab:orange", label="ensemble of k")
        axis.axhline(best[metric], color="tab:blue", ls="--", lw=1, label=f"best-validation member ({best['added']})")  # fmt: skip
        axis.set(xlabel="members (best validation accuracy first)", ylabel=label)
        axis.set_title(f"test {label}")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
    fig.legend(*axis.get_legend_handles_labels(), loc="outside upper center", ncols=2,
               fontsize="small", frameon=False)  # fmt: skip
    return _finish(fig)


def plot_calibration(calibration: pd.DataFrame) -> Figure:
    """Reliability diagram: fraction of dogs against the mean predicted probability per bin."""
    fig = _figure(9, 3.8)
    curve, counts = fig.subplots(1, 2)
    curve.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    curve.plot(calibration["mean_prob"], calibration["fraction_dogs"], "-o", label="ensemble")
    curve.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability of dog",
              ylabel="fraction of dogs", title="calibration")  # fmt: skip
    curve.grid(alpha=0.3)
    curve.legend(fontsize="small")
    width = calibration["bin_high"] - calibration["bin_low"]
    counts.bar(calibration["bin_low"], calibration["images"], width=width, align="edge",
               edgecolor="white")  # fmt: skip
    counts.set(xlim=(0, 1), ylim=(0, max(float(calibration["images"].max()) * 1.05, 1)),
               xlabel="predicted probability of dog", ylabel="images",
               title="images per probability bin")  # fmt: skip
    return _finish(fig)


def plot_sample_images(
    samples: list[tuple[str, Any]], probs: dict[str, float], labels: dict[str, int] | None = None
) -> Figure:
    """A grid of test images titled with the probability of dog, green/red when right/wrong."""
    columns = min(4, len(samples))
    rows = math.ceil(len(samples) / columns)
    fig = _figure(2.4 * columns, 2.7 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes:
        axis.set_axis_off()
    for axis, (fileid, image) in zip(axes, samples, strict=False):
        axis.imshow(image)
        prob = probs.get(fileid)
        lines, color = [fileid, "" if prob is None else f"p(dog) {prob:.3f}"], "black"
        truth = None if labels is None else labels.get(fileid)
        if truth is not None:
            lines[1] += f"{', ' if prob is not None else ''}truth: {'dog' if truth else 'cat'}"
            if prob is not None:
                color = "tab:green" if int(prob > THRESHOLD) == truth else "tab:red"
        axis.set_title("\n".join(line for line in lines if line), color=color, fontsize=11)
    return _finish(fig)


def plot_goodput(condor: pd.DataFrame) -> Figure:
    """Per member: committed, lost (by cause), set-up (and still uncommitted) time, evictions."""
    table = condor.iloc[::-1]  # first member on top
    fig = _figure(9, max(2.8, 0.35 * len(table) + 1.8))
    axis = fig.subplots()
    y = range(len(table))
    axis.barh(y, table["committed_seconds"], color="tab:green", label="committed")
    left = table["committed_seconds"].copy()
    by_cause = all(lost_column(cause) in table for cause in LOST_CAUSES)
    lost = [(lost_column(cause), color, f"lost to {cause}s") for cause, color in
            zip(LOST_CAUSES, ("tab:red", "tab:orange", "tab:purple", "tab:brown"), strict=True)]  # fmt: skip
    always = lost[0][0] if by_cause else "lost_seconds"
    for column, color, label in (
        *(lost if by_cause else [("lost_seconds", "tab:red", "lost")]),
        ("setup_seconds", "tab:blue", "input transfer and set-up"),
        ("uncommitted_seconds", "tab:grey", "running, not yet checkpointed"),
    ):  # the first kind of lost time is always in the legend: "none lost" is news too
        if column == always or table[column].sum() > 0:
            axis.barh(y, table[column], left=left, color=color, label=label)
            left = left + table[column]
    axis.set_yticks(list(y), [f"{m} ({e} eviction{'' if e == 1 else 's'})" for m, e in zip(table["member"], table["evictions"], strict=True)])  # fmt: skip
    axis.set_ylim(-0.6, len(table) - 0.4)
    axis.set_xlim(0, max(float(left.max()) * 1.03, 1.0))
    axis.set(xlabel="execution time of the training jobs (s)")
    axis.grid(alpha=0.3, axis="x")
    handles, names = axis.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper center", ncols=min(len(names), 3),
               fontsize="small", frameon=False)  # fmt: skip
    return _finish(fig)


def png(fig: Figure, dpi: int = 100) -> bytes:
    """A figure as PNG bytes (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


@dataclass
class Plot:
    """One rendered plot of the report."""

    name: str  # file stem and HTML id
    title: str
    png: bytes
    caption: str = ""


def make_plots(data: ReportData) -> tuple[list[Plot], list[str]]:
    """Every plot the data allows, in page order, and notes on the ones it does not."""
    plots, notes = [], []

    def add(name: str, fig: Figure, caption: str = "", dpi: int = 100) -> None:
        plots.append(Plot(name, PLOTS[name], png(fig, dpi), caption))

    if data.epochs["epoch"].notna().any():
        add("learning_curves", plot_learning_curves(data.epochs),
            "Every member's loss and accuracy per epoch: a validation curve that rises again "
            "while the training curve falls is overfitting.")  # fmt: skip
    else:
        notes.append("no member finished an epoch: learning curves skipped")
    if data.swept and "val_acc" in data.members and data.members["val_acc"].notna().any():
        log_scaled = log_distributed(data.run_dir / "spec.toml")
        add("hyperparameters", plot_hyperparameters(data.members, data.swept, log_scaled),
            "One point per member (seeds give the spread).")  # fmt: skip
    elif data.swept:
        notes.append("no final validation accuracy yet: hyperparameter plot skipped")
    if data.scores is not None and data.ensemble_curve is not None:
        add("ensemble_vs_members", plot_ensemble_vs_members(data.scores, data.ranked()),
            "Scored on the test images every member predicted.")  # fmt: skip
        add("ensemble_size", plot_ensemble_size(data.ensemble_curve),
            "The ensemble of the k members with the best validation accuracy.")  # fmt: skip
    if data.calibration is not None and not data.calibration.empty:
        add("calibration", plot_calibration(data.calibration),
            f"The ensemble's probabilities in {CALIBRATION_BINS} equal bins: points on the "
            "diagonal mean that a probability of 0.8 is right 80% of the time.")  # fmt: skip
    if data.images is not None:
        ensemble = data.ensemble
        ids = None if ensemble is None else set(ensemble.index)
        try:
            samples, unreadable = sample_images(data.images, ids)
        except CondormlError as err:
            samples, unreadable = [], [f"sample grid skipped: {err}"]
        notes += unreadable
        if samples:
            probs = {} if ensemble is None else ensemble.to_dict()
            labels = None if data.labels is None else data.labels.to_dict()
            add("sample_images", plot_sample_images(samples, probs, labels),
                f"The first {len(samples)} test images by id, from {data.images}.", dpi=72)  # fmt: skip
        elif not unreadable:
            notes.append(f"no test image with a prediction in {data.images}: sample grid skipped")
    if data.condor is not None and data.condor["execution_seconds"].sum() > 0:
        add("goodput", plot_goodput(data.condor),
            "From the jobs' own event logs: time up to a checkpoint or the job's end is committed; "
            "time since the last checkpoint before an eviction, hold or failure is lost, and a "
            "removal loses all of the job's time (its checkpoints go with it); from a run's input "
            "transfer to its execution is set-up. In all: HTCondor's RemoteWallClockTime.")  # fmt: skip
    return plots, notes


# --- the report --------------------------------------------------------------------------------


@dataclass
class ReportResult:
    """What :func:`write_report` wrote."""

    html: Path
    files: list[Path]
    plots: list[str]
    missing: list[str]


def make_report(
    run_dir: Path,
    output: Path | None = None,
    labels: Path | None = None,
    images: Path | None = None,
) -> ReportResult:
    """Gather a run folder and write its report (see :func:`gather` and :func:`write_report`)."""
    data = gather(run_dir, labels, images)
    return write_report(data, Path(output) if output is not None else run_dir / REPORT_FOLDER)


def write_report(data: ReportData, output: Path) -> ReportResult:
    """Write the tables (CSV), the plots (PNG) and ``report.html`` into ``output``, atomically.

    ``leaderboard.csv`` (the table the page shows), ``members.csv`` (every member's
    hyperparameters and per-epoch metrics, one row per epoch), ``htcondor.csv``, ``scores.csv``,
    ``ensemble_size.csv`` and ``calibration.csv`` when they exist, one PNG per plot.

    Raises
    ------
    CondormlError
        If the output folder cannot be written.
    """
    plots, notes = make_plots(data)
    missing = [*data.missing, *notes]
    files: list[Path] = []
    try:
        output.mkdir(parents=True, exist_ok=True)
        tables = {
            "leaderboard.csv": data.members,
            "members.csv": data.epochs,
            "htcondor.csv": data.condor,
            "scores.csv": data.scores,
            "ensemble_size.csv": data.ensemble_curve,
            "calibration.csv": data.calibration,
        }
        for name, frame in tables.items():
            if frame is not None:
                with atomic_write(output / name, "w") as handle:
                    frame.to_csv(handle, index=False)
                files.append(output / name)
        for plot in plots:
            with atomic_write(output / f"{plot.name}.png", "wb") as handle:
                handle.write(plot.png)
            files.append(output / f"{plot.name}.png")
        for stale in set(PLOTS) - {plot.name for plot in plots}:  # from an earlier report
            (output / f"{stale}.png").unlink(missing_ok=True)
        html_path = output / HTML_NAME
        atomic_write_text(html_path, render_html(data, plots, missing, [f.name for f in files]))
    except OSError as err:
        raise CondormlError(f"{output}: cannot write the report ({err.strerror or err})") from err
    return ReportResult(html_path, [*files, html_path], [p.name for p in plots], missing)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 90em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr.failed td { color: #a00; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.meta { color: #666; font-size: 0.9em; } .missing li { color: #8a4b00; }
.scroll { overflow-x: auto; }
"""


def _table_html(frame: pd.DataFrame, table_id: str) -> str:
    text = frame.to_html(
        index=False, escape=True, na_rep="", table_id=table_id, border=0,
        float_format=lambda v: f"{v:.4g}",
    )  # fmt: skip
    return f'<div class="scroll">{text}</div>'


# Leaderboard columns the page shows (after member, status, seed and the swept hyperparameters);
# leaderboard.csv beside it keeps every column.
_SHOWN = ("epochs_done", "val_acc", "val_loss", "test_accuracy", "test_log_loss", "test_roc_auc",
          "runs", "checkpoints", "wall_seconds")  # fmt: skip
_CONDOR_SHOWN = ("evictions", "lost_seconds", "goodput")


def _leaderboard_view(data: ReportData) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The leaderboard's informative columns (with the HTCondor view's evictions and goodput),
    and the settings every member shares."""
    frame = data.members
    first = ["member", "status", "seed", *data.swept]
    shown = [c for c in first if c in frame] + [c for c in _SHOWN if c in frame]
    view = frame[shown]
    if data.condor is not None:
        extra = [c for c in _CONDOR_SHOWN if c not in view]
        view = view.merge(data.condor[["member", *extra]], on="member", how="left")
    settings = [c for c in data.epochs.columns if c in frame and c not in first]
    fixed = {c: frame[c].iloc[0] for c in settings if frame[c].nunique(dropna=False) == 1}
    return view, fixed


def _summary(data: ReportData) -> list[str]:
    members = data.members
    lines = [f"{len(members)} member(s); {0 if data.probs is None else data.probs.shape[1]} with predictions."]  # fmt: skip
    if "val_acc" in members and members["val_acc"].notna().any():
        best = members.loc[members["val_acc"].astype(float).idxmax()]
        lines.append(f"Best final validation accuracy: {best['member']} ({float(best['val_acc']):.4f}).")  # fmt: skip
    if data.scores is not None:
        table = data.scores.set_index("member")
        ensemble = table.loc["ensemble"]
        single = table.drop(index="ensemble")
        best = single["accuracy"].idxmax()
        verdict = "better than" if ensemble["accuracy"] > single.at[best, "accuracy"] else (
            "as good as" if ensemble["accuracy"] == single.at[best, "accuracy"] else "worse than")  # fmt: skip
        lines.append(
            f"Ensemble of {len(single)}: test accuracy {ensemble['accuracy']:.4f}, log loss "
            f"{ensemble['log_loss']:.4f}; by accuracy {verdict} its best member {best} "
            f"(accuracy {single.at[best, 'accuracy']:.4f}, log loss {single.at[best, 'log_loss']:.4f}) "
            f"on {int(ensemble['images'])} labelled test images."
        )
    if data.condor is not None:
        lines.append(_condor_summary(data.condor))
    return lines


def _condor_summary(c: pd.DataFrame) -> str:
    """The training jobs' counts (summed over the members, as the HTCondor table shows each)
    and their lost time by cause."""
    lost, executed = c["lost_seconds"].sum(), c["execution_seconds"].sum()
    share = f" ({100 * lost / executed:.1f}%)" if executed else ""
    causes = [f"{c[lost_column(cause)].sum():.0f} s to {cause}s" for cause in LOST_CAUSES
              if lost_column(cause) in c and c[lost_column(cause)].sum() >= 0.5]  # fmt: skip
    counts = counts_line(*(int(c[name].sum()) for name in LEADERBOARD_COLUMNS))
    return (
        f"Training jobs of {len(c)} member(s), in all: {counts}; {executed:.0f} s on execute "
        f"points, {lost:.0f} s{share} lost" + (f" ({', '.join(causes)})." if causes else ".")
    )


def render_html(data: ReportData, plots: list[Plot], missing: list[str], files: list[str]) -> str:
    """The report as one self-contained HTML page: plots inline, no external resources."""
    esc = html.escape
    view, fixed = _leaderboard_view(data)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may be fetched: the page must open the same offline, from a job's sandbox.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">",
        '<link rel="icon" href="data:,">',
        f"<title>condorml report: {esc(data.run_dir.name or str(data.run_dir))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Sweep report: {esc(str(data.run_dir))}</h1>",
        f'<p class="meta">condorml {esc(__version__)}, {esc(time.strftime("%Y-%m-%d %H:%M:%S"))}; '
        f"leaderboard from {esc(data.leaderboard_source)}</p>",
        '<section id="summary"><h2>Summary</h2><ul>',
        *(f"<li>{esc(line)}</li>" for line in _summary(data)),
        "</ul></section>",
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        _table_html(view, "leaderboard-table"),
    ]
    if fixed:
        shared = ", ".join(f"{k} = {v}" for k, v in fixed.items())
        parts.append(f'<p class="meta">Shared by every member: {esc(shared)}</p>')
    parts.append("</section>")
    parts.append('<section id="missing" class="missing"><h2>Missing</h2>')
    if missing:
        parts += ["<ul>", *(f"<li>{esc(note)}</li>" for note in missing), "</ul>"]
    else:
        parts.append("<p>Nothing: every member finished and every plot was drawn.</p>")
    parts.append('</section><section id="plots"><h2>Plots</h2>')
    for plot in plots:
        data_url = "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
        parts.append(
            f'<figure id="plot-{plot.name}"><h3>{esc(plot.title)}</h3>'
            f'<img src="{data_url}" alt="{esc(plot.title)}">'
            f"<figcaption>{esc(plot.caption)}</figcaption></figure>"
        )
    parts.append("</section>")
    if data.condor is not None:
        parts += [
            '<section id="htcondor"><h2>HTCondor: training jobs</h2>',
            "<p>Runs are executions on an execute point (a restart after exit 85 in the same "
            "sandbox is not a new run); checkpoints are checkpoint transfers back (040 while the "
            "job runs); evictions are 004 events that announced no hold or removal. Execution is "
            "HTCondor's RemoteWallClockTime; lost time is split by cause: since the last "
            "checkpoint at an eviction, a hold or a failed exit, and at a removal (condor_rm, "
            "Ctrl-C of condorml run) also every checkpoint, which HTCondor deletes with the job. "
            "Committed is the rest after set-up (HTCondor's CommittedTime for jobs that ended "
            "well); goodput = committed / execution. The note says why a member's node is held, "
            "failed or removed.</p>",
            _table_html(data.condor, "htcondor-table"),
            "</section>",
        ]
    if data.scores is not None:
        parts += ['<section id="scores"><h2>Test scores</h2>',
                  _table_html(data.scores, "scores-table")]  # fmt: skip
        if data.ensemble_curve is not None:
            parts.append(_table_html(data.ensemble_curve, "ensemble-size-table"))
        parts.append("</section>")
    parts += [
        '<section id="files"><h2>Files</h2><p>Beside this page: ',
        esc(", ".join(files)),
        "</p></section></body></html>",
    ]
    return "\n".join(parts) + "\n"
