"""An adaptive search (``[search]``) as ``condorml report`` shows it: every member's search record
(``members/<id>/trial.json``) as one table, and which hyperparameters mattered (the Optuna study).

:func:`gather_search` reads them into a :class:`SearchData`; :mod:`condorml.monitor.search_plots`
draws it. pandas and Optuna are imported inside the functions (Optuna only for the study).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError
from condorml.sweep.rundir import STUDY_FILE, RunDir
from condorml.sweep.search import Search
from condorml.sweep.trials import read_trials

if TYPE_CHECKING:
    import pandas as pd

# The leaderboard's search columns (the collect step writes them; a report puts in the current)
SEARCH_COLUMNS = ("search_state", "rungs_done", "epochs_trained")
MIN_IMPORTANCE_TRIALS = 3  # fewer finished members say nothing about importance


@dataclass
class SearchData:
    """A run's search: its table, the rungs and every member's record as one frame."""

    search: Search
    epochs: int  # the full budget, [train] epochs
    trials: pd.DataFrame  # one row per member, in members.csv order (see trial_table)
    importance: pd.Series | None = None  # hyperparameter -> importance at the first rung
    importance_trials: int = 0  # the finished members it is computed from
    notes: list[str] = field(default_factory=list)

    @property
    def rungs(self) -> tuple[int, ...]:
        """The epoch each rung ends at (``(epochs,)`` without halving)."""
        return self.search.rungs(self.epochs)

    @property
    def minimize(self) -> bool:
        """Whether a lower metric is better."""
        return self.search.direction == "minimize"


def read_search_spec(run: RunDir) -> tuple[Search, int] | None:
    """The run's ``[search]`` and ``[train] epochs``, from its spec copy (None: no search, or no
    readable spec)."""
    from condorml.sweep.spec import load_spec

    try:
        spec = load_spec(run.spec_copy, check_paths=False)
    except (CondormlError, OSError):
        return None
    return None if spec.search is None else (spec.search, spec.epochs)


def gather_search(run: RunDir, members: list[str]) -> SearchData | None:
    """The run's search data (None for a run without ``[search]``)."""
    found = read_search_spec(run)
    if found is None:
        return None
    search, epochs = found
    data = SearchData(search, epochs, trial_table(run, members, search.metric))
    if data.trials["state"].eq("not started").all():
        data.notes.append("no member has a search record (trial.json) yet: search plots skipped")
    data.importance, data.importance_trials, note = param_importance(run, search)
    if note:
        data.notes.append(note)
    return data


def trial_table(run: RunDir, members: list[str], metric: str) -> pd.DataFrame:
    """One row per member (``members`` order): its search ``state`` (``not started`` without a
    record), ``rung`` (that it runs, waits for, stopped before or failed at), ``rungs_done``,
    ``epochs_trained``, and ``value``, its ``metric`` at its last finished rung (NaN: none)."""
    import pandas as pd

    trials = read_trials(run.path, members)
    rows = []
    for order, member in enumerate(members):
        trial = trials.get(member)
        if trial is None:
            rows.append({"member": member, "order": order, "state": "not started", "rung": 0,
                         "rungs_done": 0, "epochs_trained": 0, "value": math.nan})  # fmt: skip
            continue
        last = max(trial.results, default=None)
        value = None if last is None else trial.value(last, metric)
        rows.append({"member": member, "order": order, "state": trial.state, "rung": trial.rung,
                     "rungs_done": trial.rungs_done, "epochs_trained": trial.epochs_done,
                     "value": math.nan if value is None else value})  # fmt: skip
    return pd.DataFrame(rows)


def current_search_columns(leaderboard: pd.DataFrame, data: SearchData) -> None:
    """Put the members' search records now into the leaderboard's :data:`SEARCH_COLUMNS` (in
    place): the collect step's copy is as old as its last run, a partial run has none."""
    if "member" not in leaderboard:
        return
    table = data.trials.set_index("member")
    started = table[table["state"] != "not started"]
    sources = {
        "search_state": "state",
        "rungs_done": "rungs_done",
        "epochs_trained": "epochs_trained",
    }
    for column in SEARCH_COLUMNS:
        known = leaderboard["member"].map(started[sources[column]])
        previous = leaderboard.get(column)
        leaderboard[column] = known if previous is None else known.where(known.notna(), previous)
        if column != "search_state":
            leaderboard[column] = leaderboard[column].astype("Int64")


def param_importance(run: RunDir, search: Search) -> tuple[pd.Series | None, int, str]:
    """Each searched hyperparameter's importance for the metric at the first rung (which every
    member reaches), by Optuna's PED-ANOVA over the finished members in the run's study.

    Returns the importances (None when not computed), how many members they rest on, and a note
    saying why none ("" when computed or when there is nothing to say).
    """
    import pandas as pd

    if len(search.space) < 2 or not (run.path / STUDY_FILE).exists():
        return None, 0, ""
    try:
        pairs, distributions = _first_rung_results(run)
        if len(pairs) < MIN_IMPORTANCE_TRIALS:
            return None, len(pairs), (f"{len(pairs)} finished member(s) in the search's study: "
                                      f"hyperparameter importance needs {MIN_IMPORTANCE_TRIALS}")  # fmt: skip
        importance = _ped_anova(search, pairs, distributions)
    except Exception as err:  # Optuna and its journal raise many kinds: a note, not a failure
        return None, 0, f"the search's study {STUDY_FILE}: unreadable ({err}); importance skipped"
    return pd.Series(importance, dtype=float).sort_values(), len(pairs), ""


def _ped_anova(
    search: Search, pairs: list[tuple[dict[str, Any], float]], distributions: dict[str, Any]
) -> dict[str, float]:
    """PED-ANOVA's importances (needs no scikit-learn, unlike Optuna's default fANOVA)."""
    import optuna

    scratch = optuna.create_study(direction=search.direction)
    for params, value in pairs:
        used = {k: distributions[k] for k in params}
        scratch.add_trial(optuna.trial.create_trial(params=params, distributions=used, value=value))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    return optuna.importance.get_param_importances(scratch, evaluator=evaluator)


def _first_rung_results(run: RunDir) -> tuple[list[tuple[dict[str, Any], float]], dict[str, Any]]:
    """Every finished member's (params, metric at its first reported epoch), and the parameters'
    distributions, from the run's study."""
    from condorml.sweep.study import load_study

    study = load_study(run.path)
    pairs, distributions = [], {}
    for trial in [] if study is None else study.get_trials(deepcopy=False):
        values = trial.intermediate_values
        first = values[min(values)] if values else None
        if first is None or not math.isfinite(first) or not trial.params:
            continue
        pairs.append((dict(trial.params), float(first)))
        distributions.update(trial.distributions)
    return pairs, distributions
