"""The search's PRE and POST scripts: what DAGMan runs on the access point around a member's nodes.

``condorml search pre RUN_DIR NODE`` (before a node) and ``condorml search post RUN_DIR NODE
RETURN RETRY MAX_RETRIES`` (after a training node's job) call :func:`pre_step` and
:func:`post_step`; :mod:`condorml.sweep.dag` writes the ``SCRIPT`` lines.

* Before a member's first training node, with TPE: choose its hyperparameters
  (:mod:`condorml.sweep.study`), write them to ``members/<id>/params.json`` (an input file of its
  jobs), or wait (``SCRIPT DEFER``) for the earlier rounds' first-rung results. Chosen once: a
  re-run (RETRY, rescue DAG) keeps the file.
* Before rung ``k > 1``: successive halving's :func:`~condorml.sweep.search.decide` on every
  member's result at rung ``k - 1``: run the rung, stop the member (``PRE_SKIP``: this node, its
  later rungs and its inference are skipped; its checkpoint stays), or wait (``SCRIPT DEFER``).
* Before inference: skip it for a stopped member.
* After a training node: record its metric at the rung's last epoch (``ckpt/metrics.csv``, which
  came back with the job) in ``members/<id>/trial.json``; a failure after the last retry marks
  the member failed (ranked last). A finished member is added to the study. The POST script
  passes the job's exit code on, so RETRY and UNLESS-EXIT see the job's.

Decisions depend only on results, never on when they arrived: see :mod:`condorml.sweep.search`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError, ExitCode, ScriptExit
from condorml.hyperparameters import write_hyperparameters
from condorml.job.files import CHECKPOINT_FOLDER
from condorml.sweep.members import Member, expand
from condorml.sweep.rundir import (
    DECISIONS_LOG,
    PARAMS_FILE,
    NodeName,
    RunDir,
    member_folder,
    read_metrics,
)
from condorml.sweep.search import METRICS, Decision, Search, decide
from condorml.sweep.spec import SweepSpec, load_spec
from condorml.sweep.trials import Trial, read_trial, read_trials, write_trial

log = logging.getLogger(__name__)

DECISION_EXIT = {Decision.CONTINUE: int(ExitCode.DONE), Decision.STOP: int(ScriptExit.SKIP),
                 Decision.WAIT: int(ScriptExit.DEFER)}  # fmt: skip


@dataclass
class SearchRun:
    """A run folder's search: its spec, members and rungs (read once per script)."""

    run_dir: Path
    spec: SweepSpec
    search: Search
    members: list[Member]
    rungs: tuple[int, ...]

    @classmethod
    def open(cls, run_dir: Path) -> SearchRun:
        """Read the run folder's spec copy.

        Raises
        ------
        CondormlError
            If the folder is not a run of a sweep with ``[search]``.
        """
        run = RunDir(run_dir)
        run.check()
        spec = load_spec(run.spec_copy, check_paths=False)
        if spec.search is None:
            raise CondormlError(
                f"{run.spec_copy}: no [search] table; the DAG was written for another spec"
            )
        return cls(run_dir, spec, spec.search, expand(spec), spec.search.rungs(spec.epochs))

    @property
    def ids(self) -> list[str]:
        return [m.member for m in self.members]

    def folder(self, member: str) -> Path:
        return member_folder(self.run_dir, member)

    def trial(self, member: str) -> Trial:
        """The member's record, or a fresh one (with its values, for grid and random)."""
        if member not in self.ids:
            raise CondormlError(f"{self.run_dir}: no member {member} in this run")
        trial = read_trial(self.folder(member))
        if trial is None:
            hyper = self.members[self.ids.index(member)].hyperparameters
            trial = Trial(member, params=dict(hyper) if self.search.method != "tpe" else None)
        return trial


def pre_step(run_dir: Path, node_name: str) -> tuple[Decision, str]:
    """Decide a node's fate before it runs; returns the decision and a line saying why ("" for
    a wait repeated: said once). The line is also appended to ``RUN_DIR/search/decisions.log``
    (DAGMan keeps no script output)."""
    run, node = SearchRun.open(run_dir), _parse(node_name)
    trial = run.trial(node.member)
    was_waiting = trial.state == "waiting"
    decision, reason = _decide(run, node, trial)
    if decision == Decision.WAIT and was_waiting:
        return decision, ""
    _log(run_dir, f"{node_name}: {reason}")
    return decision, reason


def _decide(run: SearchRun, node: NodeName, trial: Trial) -> tuple[Decision, str]:
    if node.kind == "infer":
        if trial.state == "stopped":
            return Decision.STOP, f"{node.member} was stopped after rung {trial.rung}: no inference"
        return Decision.CONTINUE, f"{node.member}: inference"
    rung = node.rung or 1
    if trial.state == "stopped":
        return Decision.STOP, f"{node.member} was stopped after rung {trial.rung}"
    if rung == 1:
        return _first_rung(run, trial)
    return _next_rung(run, trial, rung)


def _first_rung(run: SearchRun, trial: Trial) -> tuple[Decision, str]:
    if run.search.method == "tpe" and trial.params is None:
        params = _tpe_params(run, run.ids.index(trial.member))
        if params is None:
            trial.state = "waiting"
            write_trial(run.folder(trial.member), trial)
            return (
                Decision.WAIT,
                f"{trial.member}: waiting for the first rung of earlier rounds before TPE chooses",
            )
        write_hyperparameters(run.folder(trial.member) / PARAMS_FILE, params)
        trial.params = params
    trial.state, trial.rung = "running", 1
    write_trial(run.folder(trial.member), trial)
    return Decision.CONTINUE, f"{trial.member}: rung 1 of {len(run.rungs)} with {trial.params}"


def _tpe_params(run: SearchRun, index: int) -> dict[str, Any] | None:
    """TPE's values for member ``index``, or None while earlier rounds' results are missing."""
    from condorml.sweep.study import history_members, propose

    history = []
    for _member, other in (
        (m, read_trial(run.folder(m))) for m in history_members(run.search, index, run.ids)
    ):
        if other is None or (other.state != "failed" and 1 not in other.results):
            return None
        value = other.value(1, run.search.metric)
        if value is not None and other.params is not None:
            history.append((other.params, value))
    return propose(run.search, index, history)


def _next_rung(run: SearchRun, trial: Trial, rung: int) -> tuple[Decision, str]:
    previous, metric = rung - 1, run.search.metric
    trials = read_trials(run.run_dir, run.ids)
    results = {m: t.value(previous, metric) for m, t in trials.items()
               if previous in t.results or (t.state == "failed" and t.rung == previous)}  # fmt: skip
    if trial.member not in results:  # its record lost the rung: read it from the checkpoint
        results[trial.member] = _rung_result(run, trial.member, previous).get(metric)
    settled = all(
        m == trial.member or m in results or (m in trials and trials[m].finished) for m in run.ids
    )
    counts = run.search.survivors(len(run.members), run.spec.epochs)
    decision = decide(trial.member, results[trial.member], results, counts[previous - 1],
                      counts[previous], run.search.direction, settled)  # fmt: skip
    reason = (f"{trial.member} at rung {previous}: {metric} {results[trial.member]}, "
              f"{len(results)} of {counts[previous - 1]} reported, best {counts[previous]} go on")  # fmt: skip
    trial.rung = rung if decision != Decision.STOP else previous
    trial.state = {
        Decision.CONTINUE: "running",
        Decision.STOP: "stopped",
        Decision.WAIT: "waiting",
    }[decision]
    if decision == Decision.STOP:
        _record(run, trial)
    write_trial(run.folder(trial.member), trial)
    return decision, f"{decision.value}: {reason}"


def _log(run_dir: Path, line: str) -> None:
    """Append a decision to the run's decisions log (one short write: concurrent scripts' lines
    stay whole)."""
    import time

    path = run_dir / DECISIONS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def post_step(run_dir: Path, node_name: str, returned: int, retry: int, max_retries: int) -> int:
    """Record a training node's result; returns the exit code DAGMan should see (the job's)."""
    run, node = SearchRun.open(run_dir), _parse(node_name)
    if node.kind != "train":
        return returned
    rung = node.rung or 1
    trial = run.trial(node.member)
    if returned == 0:
        result = _rung_result(run, node.member, rung)
        if not result:
            log.warning(
                "%s: no metrics at epoch %d in ckpt/metrics.csv", node.member, run.rungs[rung - 1]
            )
        trial.results[rung] = result
        trial.rung = rung
        trial.state = "complete" if rung == len(run.rungs) else "running"
        if trial.state == "complete":
            _record(run, trial)
    elif returned == int(ExitCode.PERMANENT) or retry >= max_retries:
        trial.state, trial.rung = "failed", rung
        _record(run, trial)
    write_trial(run.folder(node.member), trial)
    return returned if 0 <= returned <= 255 else int(ExitCode.BUG)


def _rung_result(run: SearchRun, member: str, rung: int) -> dict[str, float]:
    """The member's metrics at the last epoch of ``rung``, from its checkpoint's metrics.csv."""
    epoch = run.rungs[rung - 1]
    metrics = read_metrics(run.folder(member) / CHECKPOINT_FOLDER)
    if metrics is None:
        return {}
    rows = metrics[metrics["epoch"] == epoch]
    if rows.empty:
        return {}
    last = rows.iloc[-1]
    return {"epoch": epoch, **{k: float(last[k]) for k in METRICS if k in last}}


def _record(run: SearchRun, trial: Trial) -> None:
    if trial.recorded:
        return
    from condorml.sweep.study import record

    record(run.run_dir, run.search, trial, run.rungs)
    trial.recorded = True


def _parse(node_name: str) -> NodeName:
    node = NodeName.parse(node_name)
    if node is None:
        raise CondormlError(
            f"{node_name}: not a member's node (train_<id>, train_<id>_r<k>, infer_<id>)"
        )
    return node
