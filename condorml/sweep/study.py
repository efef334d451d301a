"""The search's Optuna study: TPE's choice of a member's hyperparameters, and the record of
finished members, in a file in the run folder (no database server, nothing on the execute points).

``RUN_DIR/search/study.journal`` is an Optuna journal file (``JournalFileBackend``, which locks the
file, so concurrent PRE/POST scripts are safe). Every finished member is added as one trial
(complete, pruned = stopped by halving, or failed) with its rung results as intermediate values
and ``user_attrs["member"]``; a rescue DAG, a re-run of ``condorml sweep``, ``watch`` and
``report`` all read the same study.

TPE's choices are made reproducible: member ``i`` of round ``r = i // parallel`` is chosen by
Optuna's ``TPESampler`` (seeded by the spec's seed and ``i``) from the first-rung results of
exactly the members of rounds ``< r``, waiting (DEFER) until those are all back. Which results
came back first never changes a choice, so evictions and retries leave the same members with the
same values. The first rung is the one every member reaches, so it is the fidelity all of them
share (as in BOHB); members of round 0 are drawn at random (TPE's startup).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from condorml.sweep.rundir import STUDY_FILE
from condorml.sweep.search import Search
from condorml.sweep.spec import SIGNIFICANT_DIGITS
from condorml.sweep.trials import Trial

STUDY_NAME = "condorml"
_SEED_STRIDE = 1_000_003  # a member's sampler seed: spec seed * stride + member index


def _optuna():
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)  # a PRE script's output stays one line
    return optuna


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    """``[search.space]`` as Optuna distributions (lists are categorical choices)."""
    optuna = _optuna()
    result = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            result[name] = optuna.distributions.CategoricalDistribution(spec)
            continue
        ((kind, (low, high)),) = spec.items()
        if kind == "int_uniform":
            result[name] = optuna.distributions.IntDistribution(low, high)
        else:
            result[name] = optuna.distributions.FloatDistribution(
                low, high, log=kind == "log_uniform"
            )
    return result


def _storage(run_dir: Path):
    """The journal file's storage (the file locked for each write)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE)))


def open_study(run_dir: Path, search: Search):
    """The run's study (created on first use)."""
    optuna = _optuna()
    (run_dir / STUDY_FILE).parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=STUDY_NAME, storage=_storage(run_dir),
                               direction=search.direction, load_if_exists=True)  # fmt: skip


def load_study(run_dir: Path):
    """The run's study for reading, or None if no member finished yet."""
    if not (run_dir / STUDY_FILE).exists():
        return None
    return _optuna().load_study(study_name=STUDY_NAME, storage=_storage(run_dir))


def history_members(search: Search, index: int, members: list[str]) -> list[str]:
    """The members whose first-rung results member ``index`` is chosen from (earlier rounds)."""
    return members[: search.round_of(index) * search.parallel]


def propose(
    search: Search, index: int, history: list[tuple[dict[str, Any], float]]
) -> dict[str, Any]:
    """TPE's hyperparameters for member ``index`` given ``(params, first-rung metric)`` pairs.

    Deterministic: the same history and index give the same values. Floats are rounded to
    :data:`~condorml.sweep.spec.SIGNIFICANT_DIGITS` (within the space's bounds), as random
    samples are, so command lines and CSVs stay readable.
    """
    optuna = _optuna()
    space = distributions(search.space)
    sampler = optuna.samplers.TPESampler(
        seed=search.seed * _SEED_STRIDE + index, n_startup_trials=search.parallel
    )
    scratch = optuna.create_study(direction=search.direction, sampler=sampler)
    for params, value in history:
        scratch.add_trial(
            optuna.trial.create_trial(params=params, distributions=space, value=value)
        )
    chosen = scratch.ask(space).params
    return {name: _rounded(chosen[name], space[name]) for name in space}


def _rounded(value: Any, distribution: Any) -> Any:
    if not isinstance(value, float) or not hasattr(distribution, "low"):
        return value
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return min(max(rounded, distribution.low), distribution.high)


def record(run_dir: Path, search: Search, trial: Trial, rungs: tuple[int, ...]) -> None:
    """Add a finished member to the study (once: ``trial.recorded`` is set by the caller)."""
    optuna = _optuna()
    state = {"complete": optuna.trial.TrialState.COMPLETE,
             "stopped": optuna.trial.TrialState.PRUNED}.get(trial.state, optuna.trial.TrialState.FAIL)  # fmt: skip
    intermediate = {}
    for _rung, result in sorted(trial.results.items()):
        value = result.get(search.metric)
        if value is not None and math.isfinite(value):
            intermediate[int(result["epoch"])] = float(value)
    value = (
        trial.value(len(rungs), search.metric)
        if state == optuna.trial.TrialState.COMPLETE
        else None
    )
    if state == optuna.trial.TrialState.COMPLETE and value is None:
        state = optuna.trial.TrialState.FAIL  # no usable metric: nothing to rank it by
    space = distributions(search.space)
    params = {k: v for k, v in (trial.params or {}).items() if k in space}
    frozen = optuna.trial.create_trial(
        state=state, value=value, params=params, distributions={k: space[k] for k in params},
        intermediate_values=intermediate,
        user_attrs={"member": trial.member, "rungs_done": trial.rungs_done, "epochs": trial.epochs_done},
    )  # fmt: skip
    open_study(run_dir, search).add_trial(frozen)
