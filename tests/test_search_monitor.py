"""condorml watch and report on an adaptive search ([search] with halving): a fake run folder,
written as the DAG, the jobs and the search's PRE/POST scripts leave it; no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condorml.backends.local.eventlog import EventLog, JobId
from condorml.sweep.trials import Trial, write_trial
from tests.helpers import condorml_cli

SPEC = """\
[data]
train = "train.zip"
test = "test.zip"

[train]
epochs = 3

[search]
method = "random"
trials = 4
metric = "val_loss"
[search.space]
lr = { log_uniform = [1e-4, 1e-1] }
batch_size = [32, 64]
[search.halving]
min_epochs = 1
eta = 3
"""
# member -> (its search record's state, rung, val_loss at each finished rung)
MEMBERS = {
    "m000": ("complete", 2, [0.6, 0.4]),
    "m001": ("stopped", 2, [0.9]),
    "m002": ("waiting", 2, [0.7]),
    "m003": ("failed", 1, []),
}
RUNG_EPOCHS = {1: 1, 2: 3}  # epochs 3, min_epochs 1, eta 3: rungs at 1 and 3


def _job(run: Path, member: str, node: str, cluster: int, exit_code: int = 0) -> None:
    """One job of a node that ran: a checkpoint, then its final output and exit."""
    kind = node.split("_")[0]
    own = run / "members" / member / f"{kind}.log"
    events = EventLog([own], JobId(cluster), node, run / "sweep.dag.nodes.log")
    events.submitted()
    events.executing(run, 1, 128)
    for _ in range(2):  # exit 85's checkpoint, then the final output
        events.transfer("output", finished=False)
        events.transfer("output", finished=True)
    events.terminated(exit_code)


def _member_files(folder: Path, state: str, rung: int, losses: list[float]) -> None:
    ckpt = folder / "ckpt"
    ckpt.mkdir(parents=True)
    epochs = RUNG_EPOCHS[len(losses)] if losses else 0
    rows = ["epoch,train_loss,train_acc,val_loss,val_acc"]
    for epoch in range(1, epochs + 1):
        loss = losses[[e >= epoch for e in RUNG_EPOCHS.values()].index(True)]
        rows.append(f"{epoch},{loss},{1 - loss / 2},{loss},{1 - loss / 2}")
    (ckpt / "metrics.csv").write_text("\n".join(rows) + "\n")
    (ckpt / "state.json").write_text(json.dumps(
        {"epoch": epochs, "epochs": 3, "finished": state == "complete", "wall_seconds": 1.0}))  # fmt: skip
    results = {r: {"epoch": RUNG_EPOCHS[r], "val_loss": v, "val_acc": 1 - v / 2}
               for r, v in enumerate(losses, start=1)}  # fmt: skip
    params = {"lr": 0.001 * (1 + int(folder.name[1:])), "batch_size": 32}
    write_trial(folder, Trial(folder.name, state, rung, results, params=params))


def search_run(run: Path) -> Path:
    """A run of 4 members and 2 rungs: m000 complete, m001 stopped after rung 1 (its rung 2
    and inference skipped), m002 waiting for the rung-2 decision, m003 failed in rung 1."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "spec.toml").write_text(SPEC)
    (run / "members.csv").write_text(
        "member,seed,lr\n" + "".join(f"{m},0,{0.001 * (i + 1)}\n" for i, m in enumerate(MEMBERS))
    )
    dag = []
    for member in MEMBERS:
        dag += [f"JOB train_{member}_r1 train.sub", f"JOB train_{member}_r2 train.sub",
                f"JOB infer_{member} infer.sub"]  # fmt: skip
    (run / "sweep.dag").write_text("\n".join([*dag, "JOB collect collect.sub"]) + "\n")
    for member, (state, rung, losses) in MEMBERS.items():
        _member_files(run / "members" / member, state, rung, losses)
    _job(run, "m000", "train_m000_r1", 1)
    _job(run, "m001", "train_m001_r1", 2)
    _job(run, "m002", "train_m002_r1", 3)
    _job(run, "m003", "train_m003_r1", 4, exit_code=1)
    _job(run, "m000", "train_m000_r2", 5)
    _job(run, "m000", "infer_m000", 6)
    for count, node in enumerate(("train_m001_r2", "infer_m001")):  # DAGMan's 034, no job
        EventLog([], JobId(0, 2**31 - 1, count), node, run / "sweep.dag.nodes.log").pre_skip()
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return search_run(tmp_path / "run")


def test_the_accounting_sums_a_members_rungs(run: Path) -> None:
    from condorml.sweep.accounting import member_accounting, no_predictions_reasons

    table, _ = member_accounting(run, list(MEMBERS))
    rows = table.set_index("member")
    # train_m000_r1 and train_m000_r2: one run and one checkpoint each (the other 040 is the end)
    assert (rows.at["m000", "runs"], rows.at["m000", "checkpoints"]) == (2, 2)
    assert [rows.at["m000", c] for c in ("rungs", "attempts", "state")] == [2, 2, "done"]
    assert rows.at["m000", "execution_seconds"] >= 0
    assert (rows.at["m001", "runs"], rows.at["m001", "state"], rows.at["m001", "infer_state"]) == (
        1, "done", "skipped")  # fmt: skip
    assert rows.at["m003", "state"] == "failed"
    assert "0.2147483647" not in set(table["member"])  # DAGMan's pseudo job is no member's
    why = no_predictions_reasons(table)
    assert why["m001"] == "stopped early by the search after rung 1: no inference"
    assert why["m003"].startswith("training failed")


def test_watch_shows_stopped_and_waiting_members_and_counts_skipped_nodes(run: Path) -> None:
    from condorml.cli.watch import summary_line
    from condorml.monitor.watch import Watch

    snapshot = Watch([run]).snapshot()
    members = {m.member: m for m in snapshot.members}
    assert {m: (v.state, v.rung) for m, v in members.items()} == {
        "m000": ("infer: done", "2/2"),
        "m001": ("stopped after rung 1 of 2", "1/2"),
        "m002": ("waiting (before rung 2 of 2)", "2/2"),
        "m003": ("train: failed", "1/2"),
    }
    assert members["m000"].train.total("runs") == 2 and members["m000"].train.attempts == 2
    # DAGMan counts a skipped node as done; no pseudo node "0.2147483647"
    assert [n.name for n in snapshot.nodes if n.name.startswith("0.")] == []
    counts = {state: n for state, n in snapshot.counts().items() if n}
    assert counts == {"waiting": 5, "done": 5, "failed": 1, "skipped": 2}
    assert snapshot.search_counts() == {"waiting": 1, "stopped": 1, "complete": 1, "failed": 1}
    line = summary_line(snapshot)
    assert "13 nodes: 5 waiting, 5 done, 1 failed, 2 skipped" in line
    assert "members: 1 waiting, 1 stopped, 1 complete, 1 failed" in line
    (run / "members" / "m001" / "trial.json").unlink()  # DAGMan's 034 events alone say it
    assert Watch([run]).snapshot().counts()["skipped"] == 2
    (run / "sweep.dag.dagman.out").write_text("... EXITING WITH STATUS 1\n")
    counts = Watch([run]).snapshot().counts()
    assert (counts["not run"], counts["skipped"], counts["done"]) == (5, 2, 5)


def test_watch_cli_table_has_the_rung_column_and_stopped_is_not_failed(run: Path) -> None:
    once = condorml_cli("watch", "--once", str(run), env={"COLUMNS": "200"})
    assert once.returncode == 0, once.stderr
    lines = once.stdout.splitlines()
    header = next(line for line in lines if "member" in line and "rung" in line)
    assert header.index("state") < header.index("rung") < header.index("runs")
    m001 = next(line for line in lines if "m001" in line)
    assert "stopped after rung 1 of 2" in m001 and "failed" not in m001
    assert not any("train_m00" in line or "infer_m00" in line for line in lines)  # in their rows
    assert "8/13 nodes ended" in once.stdout and "1 stopped" in once.stdout


# --- report ------------------------------------------------------------------------------------


def _record(run: Path, members: list[str]) -> None:
    """The finished members told to the run's Optuna study, as their POST scripts do."""
    from condorml.monitor.searchview import read_search_spec
    from condorml.sweep.rundir import RunDir
    from condorml.sweep.study import record
    from condorml.sweep.trials import read_trial

    search, epochs = read_search_spec(RunDir(run))
    for member in members:
        record(run, search, read_trial(run / "members" / member), search.rungs(epochs))


def test_a_search_report_has_the_search_plots_columns_and_summary(run: Path) -> None:
    import pandas as pd

    from condorml.monitor.report import make_report

    _record(run, ["m000", "m001"])
    report = make_report(run, run / "r")
    assert report.plots[:3] == ["learning_curves", "search_history", "search_curves"]
    assert "2 finished member(s) in the search's study: hyperparameter importance needs 3" in (
        report.missing)  # fmt: skip
    board = pd.read_csv(run / "r" / "leaderboard.csv", dtype={"member": str}).set_index("member")
    assert board.loc["m001", ["search_state", "rungs_done", "epochs_trained"]].tolist() == [
        "stopped", 1, 1]  # fmt: skip
    assert board.at["m001", "status"] == (
        "missing: no predictions (stopped early by the search after rung 1: no inference)"
    )
    condor = pd.read_csv(run / "r" / "htcondor.csv", dtype={"member": str}).set_index("member")
    assert (condor.at["m000", "runs"], condor.at["m000", "rungs"]) == (2, 2)
    page = report.html.read_text()
    assert "<th>search_state</th>" in page and 'id="plot-search_history"' in page
    assert ("Search: random on val_loss, halving with eta 3 (rungs end at epochs 1, 3); members "
            "1 waiting, 1 stopped, 1 complete, 1 failed; 5 epochs trained of 12") in page  # fmt: skip
    # a third finished member: the hyperparameters' importance
    _record(run, ["m002"])
    again = make_report(run, run / "r")
    assert "search_importance" in again.plots and not any("importance" in n for n in again.missing)


def test_a_report_without_search_has_no_search_plot(run: Path) -> None:
    from condorml.monitor.plots import PLOTS
    from condorml.monitor.report import make_report

    (run / "spec.toml").write_text(SPEC.split("[search]")[0] + "[grid]\nlr = [0.001, 0.002]\n")
    for member in MEMBERS:
        (run / "members" / member / "trial.json").unlink()
    report = make_report(run, run / "r")
    assert set(report.plots) <= set(PLOTS) and "learning_curves" in report.plots
    page = report.html.read_text()
    assert "search_state" not in page and "Search:" not in page
