"""The ``[search]`` table of a sweep spec: how members are chosen and when they stop early.

Pure describe code. :func:`read_search` validates the table; :class:`Search` says which members
exist (grid, random or TPE), which metric ranks them, and, with ``[search.halving]``, the rungs
(:meth:`Halving.rungs`) and how many members reach each (:meth:`Search.survivors`).
:func:`decide` is successive halving's rule, as the PRE script of a member's next rung applies it
(:mod:`condorml.sweep.steps`).

Successive halving here is synchronous halving decided as early as it is certain: ``N`` members
start, the best ``N // eta`` (at least one) of the members that reach a rung go on to the next,
ranked by their metric at the rung's last epoch (ties by member id; a member that failed is
last). A member is promoted as soon as too few members are left to push it out of the top, stopped
as soon as enough members beat it, and otherwise waits (``SCRIPT DEFER``) for more results. The
members promoted and stopped are therefore the same whatever order the results come back in
(evictions, retries, a slow machine), unlike Optuna's pruners, whose asynchronous decisions depend
on arrival order and cannot wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from condorml.config import OptionRule

METHODS = ("grid", "random", "tpe")
# metric -> Optuna's direction; the names are metrics.csv's columns
METRICS = {"val_loss": "minimize", "val_acc": "maximize", "val_macro_f1": "maximize",
           "val_top5_acc": "maximize"}  # fmt: skip
SEARCH_KEYS = (
    "method",
    "trials",
    "metric",
    "seed",
    "parallel",
    "recheck_seconds",
    "space",
    "halving",
)
HALVING_KEYS = ("min_epochs", "eta")
DEFAULT_RECHECK_SECONDS = 30  # how often a waiting PRE script looks again (SCRIPT DEFER's time)
TPE_ROUNDS = 4  # default: TPE chooses members in about 4 rounds (see Search.parallel)


class Decision(str, Enum):
    """What the PRE script of a member's next rung decides."""

    CONTINUE = "continue"  # the rung runs
    STOP = "stop"  # the member stops here: this rung and the later ones are skipped
    WAIT = "wait"  # not certain yet: look again after recheck_seconds


@dataclass(frozen=True)
class Halving:
    """``[search.halving]``: rungs at ``min_epochs * eta**k`` epochs, the last at ``epochs``."""

    min_epochs: int
    eta: int

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """The epoch at which each rung ends, the last being the full budget.

        Example
        -------
        >>> Halving(1, 3).rungs(9), Halving(1, 3).rungs(10), Halving(2, 2).rungs(5)
        ((1, 3, 9), (1, 3, 9, 10), (2, 4, 5))
        """
        rungs, end = [], self.min_epochs
        while end < epochs:
            rungs.append(end)
            end *= self.eta
        return (*rungs, epochs)


@dataclass(frozen=True)
class Search:
    """A validated ``[search]`` table (see ``dags/README.md``)."""

    method: str
    trials: int
    metric: str = "val_loss"
    seed: int = 0
    space: dict[str, Any] = field(
        default_factory=dict
    )  # name -> list of choices or {dist: [lo, hi]}
    halving: Halving | None = None
    parallel: int = 1  # TPE: members chosen together, from the first-rung results of earlier rounds
    recheck_seconds: int = DEFAULT_RECHECK_SECONDS

    @property
    def direction(self) -> str:
        """``minimize`` or ``maximize``, Optuna's word for the metric's sense."""
        return METRICS[self.metric]

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """The rungs' last epochs: ``(epochs,)`` without halving."""
        return self.halving.rungs(epochs) if self.halving else (epochs,)

    def survivors(self, members: int, epochs: int) -> tuple[int, ...]:
        """How many members run each rung: all at the first, then ``// eta`` (at least one).

        Example
        -------
        >>> Search("random", 9, halving=Halving(1, 3)).survivors(9, 9)
        (9, 3, 1)
        """
        counts = [members]
        for _ in self.rungs(epochs)[1:]:
            counts.append(max(1, counts[-1] // self.halving.eta))  # type: ignore[union-attr]
        return tuple(counts)

    def worst_case(self, members: int, epochs: int) -> tuple[int, int]:
        """(training jobs, epochs) if every member ran every rung: the dry run's upper bound."""
        rungs = self.rungs(epochs)
        return members * len(rungs), members * epochs

    def expected(self, members: int, epochs: int) -> tuple[int, int]:
        """(training jobs, epochs) when halving stops members as planned (no failures)."""
        rungs, counts = self.rungs(epochs), self.survivors(members, epochs)
        starts = (0, *rungs[:-1])
        return sum(counts), sum(
            n * (end - start) for n, end, start in zip(counts, rungs, starts, strict=True)
        )

    def round_of(self, index: int) -> int:
        """TPE: the round of member ``index``; its values come from the rounds before it."""
        return index // self.parallel


def rank_key(member: str, value: float | None, direction: str) -> tuple[float, str]:
    """How members rank by a metric, best first: ``direction``'s sense, a missing or non-finite
    value last, ties by member id (halving's rungs and ``[ensemble] top_k`` alike)."""
    usable = value is not None and math.isfinite(value)
    sign = 1.0 if direction == "minimize" else -1.0
    return (sign * value if usable else math.inf, member)  # type: ignore[operator]


def decide(
    member: str, value: float | None, results: dict[str, float | None], population: int,
    keep: int, direction: str, settled: bool = False,
) -> Decision:  # fmt: skip
    """Successive halving's rule for ``member`` at one rung.

    Parameters
    ----------
    member : str
        The member deciding whether to go on.
    value : float or None
        Its metric at the rung (None: it has none, e.g. not a number).
    results : dict
        Every member that has finished the rung so far (``member`` included) -> its metric;
        None for a member that failed at this rung or has no usable metric (ranked last).
    population : int
        How many members run this rung (:meth:`Search.survivors`).
    keep : int
        How many of them go on to the next rung.
    direction : str
        ``minimize`` or ``maximize``.
    settled : bool
        Nobody else can still report at this rung (the rest failed or stopped earlier): decide
        with the results there are.

    Example
    -------
    >>> decide("m0", 0.1, {"m0": 0.1}, population=9, keep=3, direction="minimize")
    <Decision.WAIT: 'wait'>
    >>> decide("m0", 0.1, {"m0": 0.1, "m1": 0.2, "m2": 0.3, "m3": 0.4, "m4": 0.5, "m5": 0.6, "m6": 0.7},
    ...        population=9, keep=3, direction="minimize")
    <Decision.CONTINUE: 'continue'>
    """
    mine = rank_key(member, value, direction)
    better = sum(
        1 for other, score in results.items()
        if other != member and rank_key(other, score, direction) < mine
    )  # fmt: skip
    if better >= keep:
        return Decision.STOP
    pending = 0 if settled else max(0, population - len(results | {member: value}))
    if better + pending < keep:
        return Decision.CONTINUE
    return Decision.WAIT


# ---------------------------------------------------------------------------------------------
# reading [search]


def read_search(
    table: Any, path: Path, epochs: int, epochs_swept: bool, distribution: Any, seeds: int
) -> Search:
    """Validate a ``[search]`` table.

    Parameters
    ----------
    table : Any
        The table as TOML gives it.
    path : Path
        The spec file, for messages.
    epochs : int
        ``[train] epochs`` (or its default): the full budget the rungs end at.
    epochs_swept : bool
        Whether ``epochs`` is in ``[search.space]`` (refused with halving: rungs need one budget).
    distribution : callable
        ``(name, value, table) -> checked value``: the spec's reader of a random distribution.
    seeds : int
        How many ensemble seeds the spec gives (TPE takes one).

    Raises
    ------
    CondormlError
        ``<spec>: [search] key: what is wrong; what to do``.
    """
    # spec's helpers, imported here: spec imports this module
    from condorml.sweep.spec import check_keys, check_rule, spec_error, toml_text

    if not isinstance(table, dict):
        raise spec_error(path, "search", None, f"must be a table, not {toml_text(table)}")
    check_keys(table, SEARCH_KEYS, path, "search")
    method = table.get("method")
    if method not in METHODS:
        raise spec_error(path, "search", "method",
                         f"got {toml_text(method)}; one of {', '.join(map(toml_text, METHODS))}")  # fmt: skip
    metric = table.get("metric", "val_loss")
    if metric not in METRICS:
        raise spec_error(path, "search", "metric",
                         f"got {toml_text(metric)}; one of {', '.join(map(toml_text, METRICS))}")  # fmt: skip
    seed = check_rule(OptionRule(int, low=0), table.get("seed", 0), path, "search", "seed")
    space = _space(table.get("space"), path, method, distribution)
    if method == "grid":
        for key in ("trials", "parallel"):
            if key in table:
                raise spec_error(path, "search", key,
                                 "not with method = \"grid\": the grid's size is the number of members")  # fmt: skip
        trials = math.prod(len(v) for v in space.values())
    else:
        if "trials" not in table:
            raise spec_error(
                path,
                "search",
                "trials",
                f"required with method = {toml_text(method)}: how many members to try",
            )
        trials = check_rule(OptionRule(int, low=1), table["trials"], path, "search", "trials")
    parallel = 1
    if method == "tpe":
        if seeds != 1:
            raise spec_error(path, "ensemble", None,
                             "TPE chooses every member's hyperparameters: give one seed ([ensemble] members = 1), or use method = \"random\"")  # fmt: skip
        parallel = check_rule(OptionRule(int, low=1), table.get("parallel", math.ceil(trials / TPE_ROUNDS)),
                               path, "search", "parallel")  # fmt: skip
    elif "parallel" in table:
        raise spec_error(path, "search", "parallel", 'only with method = "tpe"')
    halving = _halving(table.get("halving"), path, epochs, epochs_swept)
    recheck = check_rule(OptionRule(int, low=1), table.get("recheck_seconds", DEFAULT_RECHECK_SECONDS),
                          path, "search", "recheck_seconds")  # fmt: skip
    return Search(method, trials, metric, seed, space, halving, parallel, recheck)


def _space(value: Any, path: Path, method: str, distribution: Any) -> dict[str, Any]:
    from condorml.sweep.spec import spec_error, toml_text

    if value is None or value == {}:
        raise spec_error(path, "search", "space",
                         "required: the hyperparameters to search, e.g. [search.space] lr = { log_uniform = [1e-4, 1e-1] }")  # fmt: skip
    if not isinstance(value, dict):
        raise spec_error(path, "search", "space", f"must be a table, not {toml_text(value)}")
    space = {name: distribution(name, spec, "search.space") for name, spec in value.items()}
    if method == "grid":
        for name, spec in space.items():
            if not isinstance(spec, list):
                raise spec_error(path, "search.space", name,
                                 f"method = \"grid\" takes lists of values, not {toml_text(value[name])}")  # fmt: skip
            if len({repr(v) for v in spec}) != len(spec):
                raise spec_error(path, "search.space", name, "lists a value twice: the members would be duplicates; remove one")  # fmt: skip
    return space


def _halving(value: Any, path: Path, epochs: int, epochs_swept: bool) -> Halving | None:
    from condorml.sweep.spec import check_keys, check_rule, spec_error, toml_text

    if value is None:
        return None
    where = "search.halving"
    if not isinstance(value, dict):
        raise spec_error(path, where, None, f"must be a table, not {toml_text(value)}")
    check_keys(value, HALVING_KEYS, path, where)
    if epochs_swept:
        raise spec_error(path, "search.space", "epochs",
                         "cannot be searched with [search.halving]: the rungs need one budget; fix it in [train]")  # fmt: skip
    min_epochs = check_rule(
        OptionRule(int, low=1), value.get("min_epochs", 1), path, where, "min_epochs"
    )
    eta = check_rule(OptionRule(int, low=2), value.get("eta", 3), path, where, "eta")
    if min_epochs >= epochs:
        raise spec_error(path, where, "min_epochs",
                         f"{min_epochs} is not below [train] epochs = {epochs}, so there is no rung to stop at; lower it, raise epochs, or drop [search.halving]")  # fmt: skip
    return Halving(min_epochs, eta)
