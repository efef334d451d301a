"""The report's plots of an adaptive search (``[search]``), drawn like :mod:`condorml.monitor.plots`'
(a bare Agg figure, laid out by its ``_finish``): the search history, the metric per epoch with
the rungs marked, and the hyperparameters' importance. :func:`draw_search` draws those the data
allows; a run without ``[search]`` gets none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from condorml.monitor.plots import Plot, _colors, _figure, _finish, png
from condorml.monitor.searchview import SearchData

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from condorml.monitor.gather import ReportData

# The search's plots, in page order (after the learning curves): file stem -> title
SEARCH_PLOTS = {
    "search_history": "Search history: each member's metric at the last rung it finished",
    "search_curves": "Search: the metric per epoch, members stopped at their rung",
    "search_importance": "Search: importance of each hyperparameter",
}
# How each search state is drawn: colour, line style, marker (of a member's last point)
_STYLE = {
    "complete": ("tab:blue", "-", "o"),
    "stopped": ("tab:grey", "-", "v"),
    "failed": ("tab:red", ":", "X"),
    "running": ("tab:orange", "--", "^"),
    "waiting": ("tab:orange", "--", "^"),
}


def _label(data: SearchData) -> str:
    better = "lower" if data.minimize else "higher"
    return f"{data.search.metric} ({better} is better)"


def plot_search_history(data: SearchData) -> Figure:
    """Members in the order they start against their metric at the last rung they finished:
    coloured by the rung reached, the marker by state, and the best member at the full budget so
    far as a step line."""
    trials = data.trials.sort_values("order").dropna(subset=["value"])
    rungs = data.rungs
    fig = _figure(max(7.0, 0.22 * len(data.trials) + 3), 4.2)
    axis = fig.subplots()
    colors = _colors(len(rungs))
    for state, (_, _, marker) in _STYLE.items():
        rows = trials[trials["state"] == state]
        if rows.empty:
            continue
        reached = [colors[min(max(int(r), 1), len(rungs)) - 1] for r in rows["rungs_done"]]
        axis.scatter(rows["order"], rows["value"], c=reached, marker=marker, s=40,
                     edgecolors="black", linewidths=0.4)  # fmt: skip
    states = [s for s in _STYLE if s in set(trials["state"])]
    handles = [_marker(_STYLE[s][2], s) for s in states]
    full = trials[trials["state"] == "complete"]
    if not full.empty:
        best = (full["value"].cummin() if data.minimize else full["value"].cummax()).tolist()
        until = [*full["order"], len(data.trials) - 1]  # drawn on to the last member
        handles += axis.step(until, [*best, best[-1]], where="post", color="black", lw=1.2,
                             label="best at the full budget so far", zorder=1)  # fmt: skip
    handles += [
        _patch(colors[i], f"rung {i + 1} ({epoch} epoch{'' if epoch == 1 else 's'})")
        for i, epoch in enumerate(rungs)
    ]
    axis.set_xticks(range(len(data.trials)), data.trials.sort_values("order")["member"])
    axis.set_xlim(-0.6, len(data.trials) - 0.4)
    axis.set(xlabel="member (in the order they start)", ylabel=_label(data))
    axis.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return _finish(fig)


def _marker(marker: str, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker=marker, color="white", markeredgecolor="black", label=label)


def _patch(color: Any, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


def plot_search_curves(data: SearchData, epochs: pd.DataFrame) -> Figure:
    """Every member's metric per epoch, by search state; a stopped member's line ends at its
    rung; the rungs' last epochs as dashed vertical lines."""
    from matplotlib.lines import Line2D

    metric = data.search.metric
    frame = epochs.dropna(subset=["epoch", metric])
    states = data.trials.set_index("member")["state"]
    fig = _figure(9, 4.2)
    axis = fig.subplots()
    for member, rows in frame.groupby("member", sort=True):
        color, style, marker = _STYLE.get(states.get(member, ""), ("tab:orange", "--", "^"))
        axis.plot(rows["epoch"], rows[metric], style, color=color, lw=1, alpha=0.8)
        axis.plot(rows["epoch"].iloc[-1:], rows[metric].iloc[-1:], marker, color=color, ms=5)
    for k, epoch in enumerate(data.rungs, start=1):
        axis.axvline(epoch, color="black", ls="--", lw=0.8, alpha=0.5)
        last = k == len(data.rungs)  # its label left of the line, inside the axes
        axis.annotate(f"rung {k}", (epoch, 1), xycoords=("data", "axes fraction"),
                      xytext=(-2 if last else 2, -2), textcoords="offset points", va="top",
                      ha="right" if last else "left", fontsize="small")  # fmt: skip
    axis.set(xlabel="epoch", ylabel=_label(data))
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
    shown = [s for s in _STYLE if s in set(states)]
    handles = [Line2D([], [], color=_STYLE[s][0], ls=_STYLE[s][1], marker=_STYLE[s][2], label=s)
               for s in shown]  # fmt: skip
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return _finish(fig)


def plot_search_importance(importance: pd.Series) -> Figure:
    """Each hyperparameter's importance (they add up to 1), the largest on top."""
    fig = _figure(7, max(2.4, 0.4 * len(importance) + 1.4))
    axis = fig.subplots()
    axis.barh(range(len(importance)), importance.to_numpy(), color="tab:blue")
    axis.set_yticks(range(len(importance)), importance.index)
    axis.set_xlim(0, 1)
    axis.set(xlabel="importance (PED-ANOVA, sums to 1)")
    axis.grid(alpha=0.3, axis="x")
    return _finish(fig)


def _plot(name: str, fig: Figure, caption: str) -> Plot:
    return Plot(name, SEARCH_PLOTS[name], png(fig), caption)


def draw_search(data: ReportData) -> tuple[list[Plot], list[str]]:
    """The search's plots the data allows (none without ``[search]``), and notes on the others."""
    search = data.search
    if search is None or search.trials["state"].eq("not started").all():
        return [], []  # gather_search noted a search without records
    plots, notes = [], []
    metric, rungs = search.search.metric, ", ".join(map(str, search.rungs))
    if search.trials["value"].notna().any():
        caption = (f"One point per member that finished a rung: {metric} at its last finished "
                   f"rung (rungs end at epochs {rungs}); members stopped early by halving were "
                   "compared with the others at that rung.")  # fmt: skip
        plots.append(_plot("search_history", plot_search_history(search), caption))
    else:
        notes.append("no member finished a rung yet: search history skipped")
    if metric in data.epochs and data.epochs[metric].notna().any():
        caption = (f"Validation {metric.removeprefix('val_')} per epoch; dashed lines: the "
                   "rungs, where halving keeps the best members and stops the rest (a pause: "
                   "their checkpoints are kept).")  # fmt: skip
        plots.append(_plot("search_curves", plot_search_curves(search, data.epochs), caption))
    if search.importance is not None:
        caption = (f"How much each hyperparameter explains of {metric} at the first rung, over "
                   f"{search.importance_trials} finished members (Optuna's PED-ANOVA on the "
                   "run's study).")  # fmt: skip
        plots.append(_plot("search_importance", plot_search_importance(search.importance), caption))
    return plots, notes
