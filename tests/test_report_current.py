"""A report says what the run did: its ensemble is the collect step's (the same members, the
same computation, the same scores as metrics.json), and a report of a run going on shows what
has happened so far, consistently, and says it is partial."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from condorml.monitor.gather import gather
from condorml.monitor.report import make_report
from condorml.sweep.collect import collect
from condorml.sweep.plan import plan_sweep, write_sweep
from tests.test_sweep import _fake_member, _spec

LABELS = "fileid,is_dog\n1,0\n2,1\n3,1\n4,0\n"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """Four members, the best two (by validation loss) join the ensemble; one of them predicted
    only three of the four images."""
    run = tmp_path / "run"
    spec = _spec(tmp_path, "[ensemble]\nmembers = 4\ntop_k = 2\n")
    write_sweep(plan_sweep(spec, run))
    _fake_member(run, "m000", [0.2, 0.9, 0.6, 0.4], val_loss=0.5)
    _fake_member(run, "m001", [0.3, 0.8, 0.7], val_loss=0.3)  # image 4 not predicted
    _fake_member(run, "m002", [0.9, 0.1, 0.2, 0.8], val_loss=0.9)
    _fake_member(run, "m003", [0.1, 0.6, 0.4, 0.55], val_loss=0.2)
    (tmp_path / "labels.csv").write_text(LABELS)
    return run


def test_the_report_s_ensemble_and_its_scores_are_the_collect_step_s(run: Path) -> None:
    labels = run.parent / "labels.csv"
    result = collect(run, labels=labels, top_k=2)
    data = gather(run, labels)
    assert sorted(data.ensemble_members) == sorted(result.joined) == ["m001", "m003"]
    written = json.loads((run / "metrics.json").read_text())
    row = data.scores.set_index("member").loc["ensemble"]
    assert (row["accuracy"], row["log_loss"], row["images"]) == (
        written["accuracy"], written["log_loss"], written["n"]
    )  # fmt: skip
    ensemble = pd.read_csv(run / "dog_probs.csv", dtype={"fileid": str}).set_index("fileid")
    shown = data.ensemble["dog"].dropna()
    assert shown.to_dict() == ensemble["prob"].to_dict()  # the same floats, not close ones
    # every member is scored over what it predicted, as condorml evaluate scores its CSV
    assert data.scores.set_index("member").loc["m001", "images"] == 3
    # the leaderboard in the collect step's order: the members with predictions by val_loss
    assert list(data.members["member"])[:2] == ["m003", "m001"]


def test_a_report_of_a_run_going_on_is_its_current_state_and_says_it_is_partial(
    run: Path,
) -> None:
    labels = run.parent / "labels.csv"
    collect(run, labels=labels)  # an earlier attempt's collect step
    old = time.time() - 60
    os.utime(run / "leaderboard.csv", (old, old))
    # this attempt: m002 trains again, its latest checkpoint in the local backend's spool
    (run / "members" / "m002" / "out" / "dog_probs.csv").unlink()
    spool = run / ".condorml-local" / "spool" / "12.0" / "ckpt"
    spool.mkdir(parents=True)
    (spool / "state.json").write_text(
        json.dumps(
            {
                "epoch": 12,
                "batch": 0,
                "finished": False,
                "epochs": 20,
                "member": "m002",
                "wall_seconds": 30.0,
            }
        )
    )
    pd.DataFrame(
        [
            {"epoch": e, "train_loss": 0.5, "train_acc": 0.7, "val_loss": 0.4, "val_acc": 0.75}
            for e in range(1, 13)
        ]
    ).to_csv(spool / "metrics.csv", index=False)
    data = gather(run, labels)
    row = data.members.set_index("member").loc["m002"]
    assert row["epochs_done"] == 12 and row["status"].startswith("missing")
    assert "older than them" in data.leaderboard_source
    assert len(data.epochs[data.epochs["member"] == "m002"]) == 12
    page = make_report(run, run / "report").html.read_text()
    assert "A partial report: 1 of 4 member(s) have no predictions yet (m002)" in page
