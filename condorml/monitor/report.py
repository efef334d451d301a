"""``condorml report``: what a sweep produced, as tables, plots and one self-contained HTML page.

:func:`make_report` gathers a run folder (:mod:`condorml.monitor.gather`), draws the plots
(:mod:`condorml.monitor.plots`, and :mod:`condorml.monitor.search_plots` for a run with
``[search]``) and :func:`write_report` writes them, the tables and
``report.html`` into the output folder, every plot embedded as a base64 PNG, so that the page needs
no network access.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml import __version__
from condorml.errors import CondormlError
from condorml.fileio import atomic_write, atomic_write_text
from condorml.monitor.gather import ReportData, gather
from condorml.monitor.plots import PLOTS, Plot, make_plots
from condorml.monitor.search_plots import SEARCH_PLOTS
from condorml.monitor.searchview import SEARCH_COLUMNS, SearchData
from condorml.sweep.accounting import LEADERBOARD_COLUMNS, LOST_CAUSES, counts_line, lost_column
from condorml.sweep.rundir import REPORT_FOLDER
from condorml.sweep.search import METRICS
from condorml.sweep.trials import STATES as SEARCH_STATES

if TYPE_CHECKING:
    import pandas as pd

HTML_NAME = "report.html"


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
    hyperparameters and per-epoch metrics, one row per epoch), and when they exist
    ``htcondor.csv``, ``scores.csv``, ``ensemble_size.csv``, ``calibration.csv``,
    ``per_class.csv`` (precision, recall, F1 and support of every class, per member and for the
    ensemble), ``confusion.csv`` (the ensemble's: a row per true class, a column per predicted
    class), ``confused_pairs.csv`` (the most frequent mistakes) and ``misclassified.csv`` (every
    image the ensemble got wrong); one PNG per plot.

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
            "per_class.csv": data.per_class,
            "confusion.csv": data.confusion,
            "confused_pairs.csv": data.confused_pairs,
            "misclassified.csv": data.mistakes,
        }
        for name, frame in tables.items():
            if frame is not None:
                with atomic_write(output / name, "w") as handle:
                    # the confusion matrix's index is the true class
                    frame.to_csv(handle, index=frame is data.confusion)
                files.append(output / name)
        for plot in plots:
            with atomic_write(output / f"{plot.name}.png", "wb") as handle:
                handle.write(plot.png)
            files.append(output / f"{plot.name}.png")
        for stale in {*PLOTS, *SEARCH_PLOTS} - {plot.name for plot in plots}:  # an earlier report's
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
_SHOWN = ("search_state", "rungs_done", "epochs_trained", "epochs_done", "val_acc", "val_loss",
          "test_accuracy", "test_log_loss", "test_macro_f1", "test_roc_auc", "runs", "checkpoints",
          "wall_seconds")  # fmt: skip
_CONDOR_SHOWN = ("evictions", "lost_seconds", "goodput")


def _leaderboard_view(data: ReportData) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The leaderboard's informative columns (with the HTCondor view's evictions and goodput),
    and the settings every member shares."""
    frame = data.members
    first = ["member", "status", "seed", *data.swept]
    shown = [c for c in first if c in frame] + [c for c in _SHOWN if c in frame]
    shown = [c for c in shown if c not in SEARCH_COLUMNS or frame[c].notna().any()]
    view = frame[shown]
    if data.condor is not None:
        extra = [c for c in _CONDOR_SHOWN if c not in view]
        view = view.merge(data.condor[["member", *extra]], on="member", how="left")
    settings = [c for c in data.epochs.columns if c in frame and c not in first]
    fixed = {c: frame[c].iloc[0] for c in settings if frame[c].nunique(dropna=False) == 1}
    return view, fixed


def _summary(data: ReportData) -> list[str]:
    members = data.members
    predicted = 0 if data.probs is None else len(data.probs)
    lines = [_partial_summary(data)] if _unfinished(data) else []
    lines.append(f"{len(members)} member(s); {predicted} with predictions.")
    if data.classes is not None:
        shown = ", ".join(data.classes[:10]) + (", ..." if len(data.classes) > 10 else "")
        lines.append(f"{len(data.classes)} classes: {shown}.")
    metric = data.metric
    if metric in members and members[metric].notna().any():
        values = members[metric].astype(float)
        best = members.loc[values.idxmin() if METRICS[metric] == "minimize" else values.idxmax()]
        lines.append(
            f"Best by {metric} (the last epoch's): {best['member']} ({float(best[metric]):.4f})."
        )
    if data.search is not None:
        lines.append(_search_summary(data.search))
    if data.scores is not None:
        lines.append(_ensemble_summary(data.scores))
    if data.mistakes is not None:
        lines.append(_mistakes_summary(data))
    if data.condor is not None:
        lines.append(_condor_summary(data.condor))
    return lines


def _unfinished(data: ReportData) -> list[str]:
    """The members without predictions whose status is no end (not failed, not stopped)."""
    status = data.members.get("status")
    if status is None:
        return []
    open_ = status.astype(str).str.startswith("missing")
    return list(data.members.loc[open_, "member"].astype(str))


def _partial_summary(data: ReportData) -> str:
    """The first line of a report of a run that has not ended: what it shows is so far."""
    waiting = _unfinished(data)
    shown = ", ".join(waiting[:5]) + (", ..." if len(waiting) > 5 else "")
    return (
        f"A partial report: {len(waiting)} of {len(data.members)} member(s) have no predictions "
        f"yet ({shown}); training figures are their newest checkpoints', the ensemble and its "
        "scores those of the members with predictions."
    )


def _search_summary(search: SearchData) -> str:
    """The search's method, rungs, members per state and the epochs it trained."""
    spec, trials = search.search, search.trials
    halving = f", halving with eta {spec.halving.eta}" if spec.halving is not None else ""
    rungs = ", ".join(map(str, search.rungs))
    states = trials["state"].value_counts()
    counts = ", ".join(f"{states[s]} {s}" for s in (*SEARCH_STATES, "not started") if s in states)
    trained = int(trials["epochs_trained"].sum())
    return (
        f"Search: {spec.method} on {spec.metric}{halving} (rungs end at epochs {rungs}); "
        f"members {counts}; {trained} epochs trained of {len(trials) * search.epochs} "
        f"if every member had trained to the end."
    )


def _ensemble_summary(scores: pd.DataFrame) -> str:
    """The ensemble's test scores against its best member's."""
    table = scores.set_index("member")
    ensemble, single = table.loc["ensemble"], table.drop(index="ensemble")
    best = single["accuracy"].idxmax()
    top = single.loc[best]
    if ensemble["accuracy"] == top["accuracy"]:
        verdict = "as good as"
    else:
        verdict = "better than" if ensemble["accuracy"] > top["accuracy"] else "worse than"
    more = "".join(
        f", {label} {ensemble[column]:.4f}"
        for column, label in (("macro_f1", "macro-F1"), ("top5_accuracy", "top-5 accuracy"))
        if column in table and "roc_auc" not in table  # more than two classes
    )
    return (
        f"Ensemble of {len(single)}: test accuracy {ensemble['accuracy']:.4f}, log loss "
        f"{ensemble['log_loss']:.4f}{more}; by accuracy {verdict} its best member {best} "
        f"(accuracy {top['accuracy']:.4f}, log loss {top['log_loss']:.4f}) "
        f"on {int(ensemble['images'])} labelled test images."
    )


def _mistakes_summary(data: ReportData) -> str:
    """How many images the ensemble got wrong, and its most frequent mistake."""
    assert data.mistakes is not None
    wrong, scored = len(data.mistakes), len(data.scored or ())
    if not wrong:
        return f"The ensemble predicted all {scored} scored test images right."
    line = f"The ensemble got {wrong} of {scored} scored test images wrong"
    pairs = data.confused_pairs
    if pairs is not None and not pairs.empty:
        first = pairs.iloc[0]
        line += (f"; most often {first['true']} taken for {first['predicted']} "
                 f"({int(first['images'])} image(s))")  # fmt: skip
    return line + "."


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
    parts = [
        *_head(data),
        '<section id="summary"><h2>Summary</h2><ul>',
        *(f"<li>{esc(line)}</li>" for line in _summary(data)),
        "</ul></section>",
        *_leaderboard_section(data),
        *_missing_section(missing),
        '<section id="plots"><h2>Plots</h2>',
        *(_figure_html(plot) for plot in plots),
        "</section>",
        *_condor_section(data),
        *_scores_section(data),
        *_per_class_section(data),
        '<section id="files"><h2>Files</h2><p>Beside this page: ',
        esc(", ".join(files)),
        "</p></section></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _head(data: ReportData) -> list[str]:
    esc = html.escape
    return [
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
    ]


def _leaderboard_section(data: ReportData) -> list[str]:
    view, fixed = _leaderboard_view(data)
    parts = [
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        _table_html(view, "leaderboard-table"),
    ]
    if fixed:
        shared = ", ".join(f"{k} = {v}" for k, v in fixed.items())
        parts.append(f'<p class="meta">Shared by every member: {html.escape(shared)}</p>')
    return [*parts, "</section>"]


def _missing_section(missing: list[str]) -> list[str]:
    parts = ['<section id="missing" class="missing"><h2>Missing</h2>']
    if missing:
        parts += ["<ul>", *(f"<li>{html.escape(note)}</li>" for note in missing), "</ul>"]
    else:
        parts.append("<p>Nothing: every member finished and every plot was drawn.</p>")
    return [*parts, "</section>"]


def _figure_html(plot: Plot) -> str:
    esc = html.escape
    data_url = "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure id="plot-{plot.name}"><h3>{esc(plot.title)}</h3>'
        f'<img src="{data_url}" alt="{esc(plot.title)}">'
        f"<figcaption>{esc(plot.caption)}</figcaption></figure>"
    )


# What the HTCondor table's columns mean, above it on the page
_CONDOR_EXPLAINED = (
    "Runs are executions on an execute point (a restart after exit 85 in the same sandbox is not a "
    "new run); checkpoints are checkpoint transfers back (040 while the job runs); evictions are "
    "004 events that announced no hold or removal. Execution is HTCondor's RemoteWallClockTime; "
    "lost time is split by cause: since the last checkpoint at an eviction, a hold or a failed "
    "exit, and at a removal (condor_rm, Ctrl-C of condorml run) also every checkpoint, which "
    "HTCondor deletes with the job. Committed is the rest after set-up (HTCondor's CommittedTime "
    "for jobs that ended well, which also counts the set-up of a run that ended without a "
    "checkpoint of its own); goodput = committed / execution. The note says why a member's "
    "node is held, failed or removed."
)


def _condor_section(data: ReportData) -> list[str]:
    if data.condor is None:
        return []
    return [
        '<section id="htcondor"><h2>HTCondor: training jobs</h2>',
        f"<p>{_CONDOR_EXPLAINED}</p>",
        _table_html(data.condor, "htcondor-table"),
        "</section>",
    ]


def _scores_section(data: ReportData) -> list[str]:
    if data.scores is None:
        return []
    parts = ['<section id="scores"><h2>Test scores</h2>', _table_html(data.scores, "scores-table")]
    if data.ensemble_curve is not None:
        parts.append(_table_html(data.ensemble_curve, "ensemble-size-table"))
    return [*parts, "</section>"]


# The per-class table shows at most this many classes (the lowest ensemble recall first when
# there are more); per_class.csv beside the page has them all.
_CLASSES_SHOWN = 50


def _per_class_section(data: ReportData) -> list[str]:
    """The recall of every class by the ensemble and each member (with the ensemble's precision,
    F1 and support), and the most confused pairs."""
    if data.per_class is None or data.per_class.empty:
        return []
    view = _per_class_view(data)
    shown = len(view)
    total = data.per_class["class"].nunique()
    cut = f" The {shown} classes of the lowest ensemble recall of {total}." if shown < total else ""
    parts = [
        '<section id="per-class"><h2>Per class</h2>',
        "<p>Recall is the fraction of a class's test images predicted as that class; precision "
        "the fraction of the images predicted as it that are of it. The ensemble's precision, "
        f"recall and F1, then each member's recall.{html.escape(cut)}</p>",
        _table_html(view, "per-class-table"),
    ]
    pairs = data.confused_pairs
    if pairs is not None and not pairs.empty:
        parts += [
            "<h3>Most confused classes</h3><p>The ensemble's most frequent mistakes: images of "
            "the true class predicted as another, and their fraction of the true class.</p>",
            _table_html(pairs, "confused-pairs-table"),
        ]
    return [*parts, "</section>"]


def _per_class_view(data: ReportData) -> pd.DataFrame:
    """Per class: images, the ensemble's precision, recall and F1, each member's recall (best
    validation accuracy first)."""
    assert data.per_class is not None
    table = data.per_class
    ensemble = table[table["member"] == "ensemble"].set_index("class")
    view = ensemble[["support", "precision", "recall", "f1"]].rename(
        columns={
            "support": "images",
            **{c: f"{c} (ensemble)" for c in ("precision", "recall", "f1")},
        }
    )
    members = table[table["member"] != "ensemble"]
    if not members.empty:
        recall = members.pivot(index="class", columns="member", values="recall")
        order = [m for m in data.ranked() if m in recall.columns]
        view = view.join(recall[order].rename(columns=lambda m: f"recall {m}"))
    if len(view) > _CLASSES_SHOWN:
        view = view.sort_values("recall (ensemble)", kind="stable").head(_CLASSES_SHOWN)
    return view.reset_index()
