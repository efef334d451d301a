"""Adaptive search: the [search] table, successive halving's decisions, the DAG's rungs and
scripts, TPE's choices, and a halving sweep run end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from condorml.errors import CondormlError, ScriptExit
from condorml.sweep.members import expand
from condorml.sweep.plan import plan_sweep, write_sweep
from condorml.sweep.rundir import PARAMS_FILE, NodeName, member_folder
from condorml.sweep.search import Decision, Halving, Search, decide
from condorml.sweep.spec import load_spec
from condorml.sweep.steps import post_step, pre_step
from condorml.sweep.trials import read_trial

BASE = """
[data]
train = "train.zip"
test = "test.zip"

[train]
epochs = 9
"""
SEARCH = """
[search]
method = "random"
trials = 9
recheck_seconds = 1
[search.space]
lr = { log_uniform = [1e-4, 1e-1] }
batch_size = [16, 32]
"""
HALVING = """
[search.halving]
min_epochs = 1
eta = 3
"""


def _spec(tmp_path: Path, body: str) -> Path:
    for data in ("train.zip", "test.zip"):
        (tmp_path / data).touch()
    path = tmp_path / "spec.toml"
    path.write_text(BASE + body)
    return path


# --- the [search] table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (SEARCH.replace("trials = 9", "trials = 9\ncolour = 1"), "[search] colour: unknown key"),
        (SEARCH.replace('"random"', '"bayes"'), '[search] method: got "bayes"; one of "grid"'),
        (SEARCH.replace("trials = 9\n", ""), "[search] trials: required with method"),
        (SEARCH.replace("trials = 9", "trials = 0"), "[search] trials: got 0"),
        (SEARCH.replace("trials = 9", 'trials = 9\nmetric = "accuracy"'), "[search] metric: got"),
        (SEARCH.split("[search.space]")[0], "[search] space: required"),
        (SEARCH.replace("lr =", "learning_rate ="), "[search.space] learning_rate: unknown hyperparameter"),
        (SEARCH.replace("[1e-4, 1e-1]", "[1e-1, 1e-4]"), "[search.space] lr: impossible range"),
        (SEARCH.replace('"random"', '"grid"').replace("trials = 9\n", ""), "[search.space] lr: method = \"grid\" takes lists"),
        (SEARCH + HALVING.replace("min_epochs = 1", "min_epochs = 9"), "[search.halving] min_epochs: 9 is not below [train] epochs = 9"),
        (SEARCH + HALVING.replace("eta = 3", "eta = 1"), "[search.halving] eta: got 1"),
        (SEARCH + HALVING + "rungs = 3\n", "[search.halving] rungs: unknown key"),
        (SEARCH + "[grid]\nlr = [0.1]\n", "[grid]: not with [search]"),
        (SEARCH + "[search.space.epochs]\nint_uniform = [2, 9]\n" + HALVING, "[search.space] epochs: cannot be searched with [search.halving]"),
        (SEARCH.replace('"random"', '"tpe"') + "[ensemble]\nmembers = 2\n", "[ensemble]: TPE chooses every member's hyperparameters"),
        (SEARCH + HALVING + "[ensemble]\nmin_members = 2\n", "[ensemble] min_members: 2 is more than the 1 member(s) that successive halving trains"),
        (SEARCH + "[ensemble]\nmin_members = 3\ntop_k = 2\n", "[ensemble] top_k: 2 is below min_members = 3"),
        (SEARCH.replace('"random"', '"grid"').replace("trials = 9", "parallel = 2").replace(
            "{ log_uniform = [1e-4, 1e-1] }", "[0.1]"), "[search] parallel: not with method = \"grid\""),
    ],
)  # fmt: skip
def test_a_bad_search_table_names_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CondormlError, match=None) as caught:
        load_spec(_spec(tmp_path, body))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_random_search_with_and_without_halving_tries_the_same_members(tmp_path: Path) -> None:
    """(a) and (b) of the benchmark compare the same members, and [random] is the same too."""
    plain = expand(load_spec(_spec(tmp_path, SEARCH)))
    halved = expand(load_spec(_spec(tmp_path, SEARCH + HALVING)))
    old_style = expand(load_spec(_spec(tmp_path, "[random]\nsamples = 9\nlr = { log_uniform = [1e-4, 1e-1] }\nbatch_size = [16, 32]\n")))  # fmt: skip
    assert plain == halved == old_style
    assert len(plain) == 9 and len({m.hyperparameters["lr"] for m in plain}) == 9


def test_rungs_survivors_and_the_planned_cost() -> None:
    search = Search("random", 9, halving=Halving(1, 3))
    assert search.rungs(9) == (1, 3, 9)
    assert Halving(1, 3).rungs(10) == (1, 3, 9, 10)
    assert Halving(2, 2).rungs(5) == (2, 4, 5)
    assert search.survivors(9, 9) == (9, 3, 1)
    assert search.survivors(2, 9) == (2, 1, 1)  # at least one member goes on
    # 9 x 1 epoch, 3 x 2 more, 1 x 6 more: 21 of the 81 epochs a full random search trains
    assert search.expected(9, 9) == (13, 21)
    assert search.worst_case(9, 9) == (27, 81)


# --- successive halving's rule ---------------------------------------------------------------


def _halve_in_order(
    values: dict[str, float | None], order: list[str], keep: int
) -> dict[str, Decision]:
    """Feed results in ``order``, re-asking every waiting member after each (as DEFER does)."""
    results: dict[str, float | None] = {}
    decided: dict[str, Decision] = {}
    for arrived in order:
        results[arrived] = values[arrived]
        for member in list(results):
            if member in decided:
                continue
            settled = len(results) == len(values)
            decision = decide(
                member, results[member], results, len(values), keep, "minimize", settled
            )
            if decision != Decision.WAIT:
                decided[member] = decision
    return decided


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    eta=st.integers(2, 4),
    seed=st.integers(0, 10_000),
    failed=st.integers(0, 3),
)
def test_halving_promotes_the_same_members_whatever_order_results_arrive(
    n: int, eta: int, seed: int, failed: int
) -> None:
    """The decisions equal synchronous successive halving's: the best max(1, n // eta) go on
    (a failed member last, ties by id), however the results come back, and nobody is left
    waiting once every result is in."""
    rng = random.Random(seed)
    members = [f"m{i:03d}" for i in range(n)]
    values: dict[str, float | None] = {
        m: rng.choice([0.1, 0.2, 0.3, rng.random()]) for m in members
    }
    for member in rng.sample(members, min(failed, n)):
        values[member] = None
    keep = max(1, n // eta)
    expected = set(sorted(members, key=lambda m: (values[m] is None, values[m] or 0, m))[:keep])
    for _ in range(3):
        order = rng.sample(members, n)
        decided = _halve_in_order(values, order, keep)
        assert set(decided) == set(members)
        assert {m for m, d in decided.items() if d == Decision.CONTINUE} == expected


def test_halving_decides_as_early_as_it_is_certain() -> None:
    # 9 members, the best 3 go on: the best of the first 7 is certain, the worst of 4 is out
    results = {f"m{i}": 0.1 * (i + 1) for i in range(7)}
    assert decide("m0", 0.1, results, 9, 3, "minimize") == Decision.CONTINUE
    assert decide("m3", 0.4, results, 9, 3, "minimize") == Decision.STOP
    assert decide("m1", 0.2, results, 9, 3, "minimize") == Decision.WAIT  # two may still beat it
    assert decide("m6", 0.7, results, 9, 3, "maximize") == Decision.CONTINUE  # val_acc: higher


# --- the DAG ---------------------------------------------------------------------------------


def _written(tmp_path: Path, body: str) -> Path:
    plan = plan_sweep(_spec(tmp_path, body), tmp_path / "run")
    write_sweep(plan)
    return plan.run_dir


def test_each_rung_is_a_node_with_its_stop_epoch_and_the_search_scripts(tmp_path: Path) -> None:
    run_dir = _written(tmp_path, SEARCH + HALVING)
    dag = (run_dir / "sweep.dag").read_text()
    lines = dag.splitlines()
    assert "JOB train_m004_r2 train.sub" in lines
    assert 'VARS train_m004_r3 member="m004" member_dir="members/m004" seed="0"' in dag
    for rung, end in ((1, 1), (2, 3), (3, 9)):
        vars_line = next(line for line in lines if line.startswith(f"VARS train_m004_r{rung} "))
        assert f'stop_after_epoch="{end}"' in vars_line
    assert "PARENT train_m004_r1 CHILD train_m004_r2" in lines
    assert "PARENT train_m004_r3 CHILD infer_m004" in lines
    # rung 1 of a random search needs no decision; later rungs wait and skip; POST after each
    assert not any(line.startswith("SCRIPT") and "PRE train_m004_r1 " in line for line in lines)
    pre = next(line for line in lines if "PRE train_m004_r2 " in line)
    assert pre.startswith(f"SCRIPT DEFER {int(ScriptExit.DEFER)} 1 PRE train_m004_r2 ")
    assert pre.endswith("-m condorml search pre . $NODE")
    assert f"PRE_SKIP train_m004_r2 {int(ScriptExit.SKIP)}" in lines
    assert any(
        line.startswith("SCRIPT POST train_m004_r1 ")
        and line.endswith("$RETURN $RETRY $MAX_RETRIES")
        for line in lines
    )
    infer_pre = next(line for line in lines if "PRE infer_m004 " in line)
    assert infer_pre.startswith("SCRIPT PRE infer_m004 ")  # skip or run: nothing to wait for
    assert f"PRE_SKIP infer_m004 {int(ScriptExit.SKIP)}" in lines
    train_sub = (run_dir / "train.sub").read_text()
    assert "--stop-after-epoch $(stop_after_epoch)" in train_sub
    assert "--epochs 9" in train_sub
    assert not (run_dir / "train_r1.sub").exists()


def test_the_local_backend_reads_the_search_dag(tmp_path: Path) -> None:
    from condorml.backends.local.dagfile import read_dag

    run_dir = _written(tmp_path, SEARCH + HALVING)
    dag = read_dag(run_dir / "sweep.dag")
    node = dag.nodes["train_m000_r2"]
    assert node.pre is not None and node.pre_skip == int(ScriptExit.SKIP)


def test_a_tpe_member_gets_its_values_from_params_json(tmp_path: Path) -> None:
    run_dir = _written(tmp_path, SEARCH.replace('"random"', '"tpe"') + HALVING)
    train_sub = (run_dir / "train.sub").read_text()
    assert "--hyperparameters params.json" in train_sub
    assert "params.json" in next(
        line for line in train_sub.splitlines() if line.startswith("transfer_input_files")
    )
    assert "--lr" not in train_sub and "--batch-size" not in train_sub
    dag = (run_dir / "sweep.dag").read_text()
    assert "lr=" not in dag
    assert "SCRIPT DEFER 4 1 PRE train_m000_r1 " in dag  # TPE chooses before the first rung


def test_the_example_search_in_dags_plans_its_rungs(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "dags" / "search.toml"
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "search.toml").write_text(example.read_text())
    (tmp_path / "data" / "synth").mkdir(parents=True)
    for data in ("train.zip", "test.zip", "test_labels.csv"):
        (tmp_path / "data" / "synth" / data).touch()
    plan = plan_sweep(tmp_path / "dags" / "search.toml", tmp_path / "run")
    search = plan.spec.search
    assert (search.method, search.rungs(plan.spec.epochs), search.survivors(27, 9)) == (
        "tpe",
        (1, 3, 9),
        (27, 9, 3),
    )
    assert search.expected(27, 9) == (39, 63)  # as its comment says
    assert plan.spec.top_k == 3


def test_the_dry_run_prints_the_rungs_and_the_worst_case(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from condorml.cli import app

    spec = _spec(tmp_path, SEARCH + HALVING)
    result = CliRunner().invoke(
        app, ["sweep", str(spec), "-o", str(tmp_path / "run"), "--dry-run"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps to the terminal's width
    assert "rungs (epochs done: members): r1 1: 9, r2 3: 3, r3 9: 1" in output
    assert (
        "training: 13 job(s), 21 epoch(s) as planned; worst case (no member stopped) 27 job(s), 81 epoch(s)"
        in output
    )
    assert "nodes: train 27, infer 9" in output


# --- the scripts, on a run folder whose jobs are faked ---------------------------------------


def _report(run_dir: Path, member: str, rung: int, epoch: int, val_loss: float) -> int:
    """Fake a rung's job: its metrics.csv as it comes back, then the POST script."""
    ckpt = member_folder(run_dir, member) / "ckpt"
    metrics = ckpt / "metrics.csv"
    rows = metrics.read_text().splitlines()[1:] if metrics.exists() else []
    rows.append(f"{epoch},{val_loss},0.5")
    metrics.write_text("epoch,val_loss,val_acc\n" + "\n".join(rows) + "\n")
    return post_step(run_dir, str(NodeName("train", member, rung)), 0, 0, 2)


def test_the_scripts_stop_promote_and_wait_and_record_the_study(tmp_path: Path) -> None:
    run_dir = _written(
        tmp_path, SEARCH.replace("trials = 9", "trials = 3") + HALVING
    )  # 3 -> 1 -> 1
    pre = lambda m, rung: pre_step(run_dir, str(NodeName("train", m, rung)))[0]  # noqa: E731
    assert _report(run_dir, "m001", 1, 1, 0.5) == 0
    assert pre("m001", 2) == Decision.WAIT  # two members may still beat it
    assert pre_step(run_dir, "train_m001_r2") == (Decision.WAIT, "")  # already said
    assert read_trial(member_folder(run_dir, "m001")).state == "waiting"
    _report(run_dir, "m000", 1, 1, 0.3)
    assert pre("m001", 2) == Decision.STOP  # m000 is better and only one goes on
    decisions = (run_dir / "search" / "decisions.log").read_text()
    assert "train_m001_r2: stop: m001 at rung 1: val_loss 0.5" in decisions
    assert decisions.count("train_m001_r2: wait") == 1  # a wait is said once
    assert pre("m001", 3) == Decision.STOP  # its later rungs and its inference are skipped too
    assert pre_step(run_dir, "infer_m001")[0] == Decision.STOP
    assert pre("m000", 2) == Decision.WAIT
    # m002 fails for good (after its last retry): ranked last, the rung is settled
    assert post_step(run_dir, "train_m002_r1", 75, 2, 2) == 75
    assert read_trial(member_folder(run_dir, "m002")).state == "failed"
    assert pre("m000", 2) == Decision.CONTINUE
    _report(run_dir, "m000", 2, 3, 0.2)
    assert pre("m000", 3) == Decision.CONTINUE  # alone at rung 2: it goes on
    _report(run_dir, "m000", 3, 9, 0.1)
    trial = read_trial(member_folder(run_dir, "m000"))
    assert (trial.state, trial.rungs_done, trial.epochs_done) == ("complete", 3, 9)
    assert pre_step(run_dir, "infer_m000")[0] == Decision.CONTINUE

    from condorml.sweep.study import load_study

    trials = {t.user_attrs["member"]: t for t in load_study(run_dir).trials}
    assert trials["m000"].state.name == "COMPLETE" and trials["m000"].value == 0.1
    assert trials["m000"].intermediate_values == {1: 0.3, 3: 0.2, 9: 0.1}
    assert trials["m001"].state.name == "PRUNED" and trials["m002"].state.name == "FAIL"


def test_a_retried_failure_is_passed_on_and_not_recorded_as_failed(tmp_path: Path) -> None:
    run_dir = _written(tmp_path, SEARCH + HALVING)
    assert post_step(run_dir, "train_m000_r1", 75, 0, 2) == 75  # RETRY runs it again
    assert read_trial(member_folder(run_dir, "m000")).state == "running"
    assert post_step(run_dir, "train_m000_r1", 2, 0, 2) == 2  # permanent: UNLESS-EXIT, failed
    assert read_trial(member_folder(run_dir, "m000")).state == "failed"


def test_tpe_waits_for_the_earlier_round_and_chooses_the_same_values_in_any_order(
    tmp_path: Path,
) -> None:
    body = SEARCH.replace('"random"', '"tpe"').replace(
        "trials = 9", "trials = 4\nparallel = 2"
    ) + HALVING.replace("eta = 3", "eta = 2")
    runs = []
    for name, order in (("a", ["m000", "m001"]), ("b", ["m001", "m000"])):
        folder = tmp_path / name
        folder.mkdir()
        run_dir = _written(folder, body)
        for member in order:  # round 0: drawn at once
            assert pre_step(run_dir, f"train_{member}_r1")[0] == Decision.CONTINUE
        assert pre_step(run_dir, "train_m002_r1")[0] == Decision.WAIT  # round 1 needs round 0's
        assert not (member_folder(run_dir, "m002") / PARAMS_FILE).exists()
        for member in order:
            _report(run_dir, member, 1, 1, 0.4 if member == "m000" else 0.6)
        assert pre_step(run_dir, "train_m003_r1")[0] == Decision.CONTINUE
        assert pre_step(run_dir, "train_m002_r1")[0] == Decision.CONTINUE
        runs.append(
            {
                m: json.loads((member_folder(run_dir, m) / PARAMS_FILE).read_text())
                for m in ("m000", "m001", "m002", "m003")
            }
        )
    assert runs[0] == runs[1]
    assert len({json.dumps(v, sort_keys=True) for v in runs[0].values()}) == 4
    assert set(runs[0]["m002"]) == {"lr", "batch_size"}


# --- a halving sweep, run end to end on the local backend -----------------------------------


def _end_to_end_spec(data: Path, halving: bool) -> str:
    return f"""\
[data]
train = "{data}/train.zip"
test = "{data}/test.zip"
labels = "{data}/test_labels.csv"

[train]
epochs = 3
image_size = 48
scheduler = "cosine"
checkpoint_every = 2

[search]
method = "random"
trials = 3
seed = 1
recheck_seconds = 1
[search.space]
lr = {{ log_uniform = [1e-4, 3e-2] }}
{"[search.halving]" + chr(10) + "min_epochs = 1" + chr(10) + "eta = 3" if halving else ""}

[resources]
cpus = 1
memory = "1GB"

[throttle]
retries = 3
"""


def _final_weights(run_dir: Path, member: str) -> dict:
    import torch

    checkpoint = torch.load(
        member_folder(run_dir, member) / "ckpt" / "model.pth", map_location="cpu", weights_only=True
    )
    return checkpoint["model"]


@pytest.mark.slow
def test_a_halving_sweep_stops_members_and_the_survivor_ends_as_if_never_paused(
    tmp_path: Path,
) -> None:
    """Stopping early is a pause: the member promoted to the end has the weights it has when
    trained without rungs, and evictions change neither who is stopped nor those weights."""
    import pandas as pd
    import torch

    from condorml.job.synth import make_synthetic_dataset
    from tests.helpers import condorml_cli

    data = tmp_path / "data"
    make_synthetic_dataset(data, n_train=48, n_test=10, seed=5, size=(48, 48), make_zips=True)
    runs = {}
    for name, halving, evictions in (
        ("halving", True, "0"),
        ("evicted", True, "0.3"),
        ("full", False, "0"),
    ):
        spec = tmp_path / f"{name}.toml"
        spec.write_text(_end_to_end_spec(data, halving))
        run_dir = tmp_path / name
        done = condorml_cli("sweep", str(spec), "-o", str(run_dir), timeout=60)
        assert done.returncode == 0, done.stderr
        done = condorml_cli("run", str(run_dir / "sweep.dag"), "--inject-evictions", evictions,
                            "--eviction-window", "3", timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        runs[name] = run_dir

    board = pd.read_csv(runs["halving"] / "leaderboard.csv").set_index("member")
    stopped = sorted(board.index[board["search_state"] == "stopped"])
    (survivor,) = board.index[board["search_state"] == "complete"]
    assert len(stopped) == 2 and set(board.loc[stopped, "status"]) == {"stopped after rung 1"}
    assert list(board.loc[stopped, "epochs_trained"]) == [1, 1]
    assert board.loc[survivor, "status"] == "ok" and board.loc[survivor, "epochs_trained"] == 3
    assert (runs["halving"] / "dog_probs.csv").exists()
    # the survivor is the best member after the first epoch, as a full run of all three shows
    full = pd.read_csv(runs["full"] / "leaderboard.csv").set_index("member")
    first_epoch = {m: pd.read_csv(member_folder(runs["full"], m) / "ckpt" / "metrics.csv").iloc[0]["val_loss"] for m in full.index}  # fmt: skip
    assert survivor == min(sorted(first_epoch), key=first_epoch.get)

    evicted = pd.read_csv(runs["evicted"] / "leaderboard.csv").set_index("member")
    assert sorted(evicted.index[evicted["search_state"] == "stopped"]) == stopped
    assert evicted["evictions"].sum() > 0, "no eviction was injected: the test proves nothing"
    reference = _final_weights(runs["full"], survivor)
    for name in ("halving", "evicted"):
        weights = _final_weights(runs[name], survivor)
        assert all(torch.equal(weights[k], reference[k]) for k in reference), name
