"""The checkpointing trainer: exit codes, exact resume, mismatches, signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from condorml.errors import CondormlError, ConfigMismatchError, ExitCode
from condorml.job.checkpoint import read_checkpoint
from condorml.job.devices import job_cpus
from condorml.job.train import METRIC_COLUMNS, train
from tests.helpers import IMAGE_SIZE, condorml_cli, run_until_finished
from tests.helpers import error_exit_code as _exit_code

SCORES = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]


EVERY_BATCH = 1e-9  # --checkpoint-minutes so short that every batch boundary checkpoints


def _final(config) -> dict:
    return read_checkpoint(config.checkpoint_dir / "model.pth")


def _assert_same_training(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"weights differ at {key}"
    assert [{k: row[k] for k in SCORES} for row in a["metrics"]] == [
        {k: row[k] for k in SCORES} for row in b["metrics"]
    ]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_any_number_of_restarts_ends_bit_identical_to_an_uninterrupted_run(
    train_config, tmp_path: Path, precision: str
) -> None:
    base = replace(train_config, epochs=3, precision=precision)
    straight = replace(base, checkpoint_dir=tmp_path / "straight", exit_on_checkpoint=False)
    assert train(straight).status == "finished"
    # Mid-epoch: a tiny checkpoint_minutes checkpoints after every batch, and each run exits.
    every_batch = replace(
        base, checkpoint_dir=tmp_path / "every-batch", checkpoint_minutes=EVERY_BATCH
    )
    result, runs = run_until_finished(every_batch)
    assert result.status == "finished" and runs == 3 * 6  # 6 batches per epoch
    _assert_same_training(_final(straight), _final(every_batch))
    # Epoch boundaries only.
    per_epoch = replace(base, checkpoint_dir=tmp_path / "per-epoch")
    _, runs = run_until_finished(per_epoch)
    assert runs == 3
    _assert_same_training(_final(straight), _final(per_epoch))


def test_checkpoint_holds_the_whole_training_state(train_config) -> None:
    result = train(replace(train_config, checkpoint_minutes=EVERY_BATCH))
    assert result.status == "checkpointed" and result.exit_code == 85
    state = _final(train_config)
    assert (state["epoch"], state["batch"]) == (0, 1)  # mid-epoch, after the first batch
    assert state["order"].shape == (86,)  # the epoch's visiting order
    assert state["optimizer"]["state"]  # Adam's moments
    assert {"python", "numpy", "torch", "cuda"} <= state["rng"].keys()
    assert state["config"]["data_fingerprint"] and state["config"]["precision"] == "fp32"
    assert "scheduler" in state and state["counters"]["checkpoints"] == 1
    summary = json.loads((train_config.checkpoint_dir / "state.json").read_text())
    assert (summary["epoch"], summary["batch"], summary["finished"], summary["checkpoints"]) == (
        0,
        1,
        False,
        1,
    )


def test_epoch_interval_exit_codes_and_metrics_file(train_config) -> None:
    config = replace(train_config, epochs=3, checkpoint_every=2)
    first = train(config)
    assert (first.status, first.exit_code, first.epochs_done) == ("checkpointed", 85, 2)
    second = train(config)
    assert (second.status, second.exit_code, second.epochs_done) == ("finished", 0, 3)
    metrics = pd.read_csv(config.checkpoint_dir / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert list(metrics.epoch) == [1, 2, 3]
    assert metrics.train_acc.between(0, 1).all() and (metrics.images_per_s > 0).all()
    # A finished run started again (an eviction after the final save) exits 0 at once.
    again = train(config)
    assert (again.status, again.epochs_done) == ("finished", 3)
    assert _final(config)["counters"]["runs"] == 2  # the no-op start wrote nothing


def test_checkpoint_minutes_0_turns_time_based_checkpoints_off(train_config) -> None:
    result = train(replace(train_config, checkpoint_minutes=0.0))
    assert (result.status, result.epochs_done) == ("checkpointed", 1)  # the epoch interval only
    state = _final(train_config)
    assert (state["epoch"], state["batch"], state["counters"]["checkpoints"]) == (1, 0, 1)


def test_in_a_job_the_transferred_folder_holds_one_generation(
    train_config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The folder HTCondor transfers at every exit 85 (transfer_checkpoint_files = ckpt).
    monkeypatch.setenv("_CONDOR_SCRATCH_DIR", str(tmp_path))
    _, runs = run_until_finished(train_config)
    assert runs == 2
    ckpt = train_config.checkpoint_dir
    assert sorted(p.name for p in ckpt.iterdir()) == ["metrics.csv", "model.pth", "state.json"]
    previous = tmp_path / ".condorml-previous" / "ckpt" / "model.prev.pth"
    assert read_checkpoint(previous)["epoch"] == 1


def test_no_exit_on_checkpoint_trains_in_one_process(train_config) -> None:
    result = train(replace(train_config, epochs=2, exit_on_checkpoint=False))
    assert result.status == "finished"
    assert _final(train_config)["counters"]["checkpoints"] == 2


def test_the_model_learns_the_synthetic_task(train_config) -> None:
    result = train(replace(train_config, epochs=12, exit_on_checkpoint=False, lr=3e-3))
    last = result.metrics[-3:]
    assert sum(row["train_acc"] for row in last) / 3 > 0.7  # chance is 0.5
    assert result.metrics[-1]["train_loss"] < 0.8 * result.metrics[0]["train_loss"]


def test_zip_and_folder_are_the_same_data_for_resuming(
    train_config, synth: Path, tmp_path: Path
) -> None:
    straight = replace(train_config, checkpoint_dir=tmp_path / "a", exit_on_checkpoint=False)
    train(straight)
    mixed = replace(train_config, checkpoint_dir=tmp_path / "b")
    assert train(mixed).status == "checkpointed"  # epoch 1 from the folder
    assert (
        train(replace(mixed, data_dir=synth / "train.zip")).status == "finished"
    )  # epoch 2 from the zip
    _assert_same_training(_final(straight), _final(mixed))


def test_a_checkpoint_of_another_configuration_is_refused_naming_the_fields(train_config) -> None:
    train(train_config)
    with pytest.raises(ConfigMismatchError) as err:
        train(replace(train_config, lr=0.01, batch_size=8))
    assert "lr 0.001 -> 0.01" in str(err.value) and "batch_size 16 -> 8" in str(err.value)
    assert "--force-restart" in str(err.value)
    assert _exit_code(err.value) == ExitCode.PERMANENT


def test_other_data_is_refused(train_config, tmp_path: Path, synth: Path) -> None:
    from condorml.job.synth import make_synthetic_dataset

    train(train_config)
    other = make_synthetic_dataset(tmp_path / "other", n_train=20, n_test=0, seed=9, size=(56, 44))
    with pytest.raises(ConfigMismatchError, match="data_fingerprint") as err:
        train(replace(train_config, data_dir=other.out))
    assert _exit_code(err.value) == ExitCode.PERMANENT


def test_force_restart_sets_aside_a_mismatched_checkpoint_but_resumes_a_matching_one(
    train_config,
) -> None:
    train(train_config)
    changed = replace(train_config, lr=0.01, force_restart=True)
    first = train(changed)
    assert first.epochs_done == 1  # started over: one epoch, then exit 85
    assert (train_config.checkpoint_dir / "model.pth.discarded").exists()
    second = train(changed)  # HTCondor restarts it with the same arguments
    assert (second.status, second.epochs_done) == ("finished", 2)
    # A second --force-restart keeps the first discarded checkpoint too.
    assert train(replace(changed, lr=0.02)).epochs_done == 1
    discarded = sorted(p.name for p in train_config.checkpoint_dir.glob("*.discarded*"))
    assert discarded == ["model.prev.pth.discarded", "model.pth.discarded", "model.pth.discarded.2"]
    lrs = [read_checkpoint(train_config.checkpoint_dir / n)["config"]["lr"] for n in discarded]
    assert lrs == [0.01, 0.001, 0.01]


def test_force_restart_recovers_from_an_unreadable_checkpoint(train_config) -> None:
    train_config.checkpoint_dir.mkdir(parents=True)
    (train_config.checkpoint_dir / "model.pth").write_bytes(b"garbage")
    with pytest.raises(CondormlError, match="no valid checkpoint") as err:
        train(train_config)
    assert _exit_code(err.value) == ExitCode.PERMANENT
    assert train(replace(train_config, force_restart=True)).epochs_done == 1


def test_more_epochs_continue_a_finished_run(train_config) -> None:
    run_until_finished(train_config)
    longer = train(replace(train_config, epochs=3))
    assert (longer.status, longer.epochs_done) == ("finished", 3)


def test_threads_and_workers_follow_the_cpus_the_job_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert job_cpus() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    code = "import os; os.sched_setaffinity(0, {0}); from condorml.job.devices import job_cpus; print(job_cpus())"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "--epochs 0: must be 1 or more"),
        ({"lr": -1.0}, "--lr -1.0"),
        ({"optimizer": "rmsprop"}, "--optimizer rmsprop: choose one of adam, adamw, sgd"),
        ({"checkpoint_minutes": -1.0}, "--checkpoint-minutes -1.0"),
        ({"precision": "fp16", "device": "cpu"}, "--precision fp16: needs a CUDA device"),
        ({"device": "cuda"}, None),
    ],
)
def test_bad_options_are_clear_errors(train_config, change: dict, message: str | None) -> None:
    if change == {"device": "cuda"} and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(CondormlError, match=message or "no CUDA device") as err:
        train(replace(train_config, **change))
    assert _exit_code(err.value) == ExitCode.PERMANENT


# --- what the trainer says when it exits with a checkpoint ----------------------------------------


def _exit_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize(
    ("minutes", "saved"),
    [
        (None, "1 of 2 epochs done)"),
        (EVERY_BATCH, "0 of 2 epochs done and 1 of 6 batches of epoch 1"),
    ],
)
def test_an_exit_85_says_what_it_saved_and_to_run_the_command_again(
    train_config, caplog: pytest.LogCaptureFixture, minutes: float | None, saved: str
) -> None:
    config = replace(train_config, checkpoint_minutes=minutes)
    with caplog.at_level(logging.INFO, logger="condorml.job.train"):
        assert train(config).exit_code == ExitCode.CHECKPOINTED
    [line] = _exit_lines(caplog, "run the same command again")
    assert line.startswith(f"checkpoint 1 saved ({'time' if minutes else 'interval'}) to ")
    assert str(config.checkpoint_dir / "model.pth") in line and saved in line
    assert "exit 85" in line and "\n" not in line


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stop_confirms_what_it_saved(
    train_config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, signum: int
) -> None:
    """The signal arrives during the first batch; the run saves after it and says so."""
    import condorml.job.train as trainer

    real_step = trainer.train_step

    def step_then_signal(*args, **kwargs):
        signal.raise_signal(signum)  # the trainer's handler only sets a flag
        monkeypatch.setattr(trainer, "train_step", real_step)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step_then_signal)
    with caplog.at_level(logging.INFO, logger="condorml.job.train"):
        result = train(train_config)
    assert (result.status, result.exit_code) == ("interrupted", 128 + signum)
    state = _final(train_config)
    assert (state["epoch"], state["batch"]) == (0, 1)
    [line] = _exit_lines(caplog, "run the same command again")
    name = signal.Signals(signum).name
    assert line.startswith(f"stopped by {name}: checkpoint 1 saved to ")
    assert str(train_config.checkpoint_dir / "model.pth") in line
    assert "0 of 2 epochs done and 1 of 6 batches of epoch 1" in line
    assert f"exit {128 + signum}" in line and "\n" not in line
    assert train(train_config).exit_code == ExitCode.CHECKPOINTED  # it does continue from there


# --- --stop-after-epoch: successive halving's rungs pause a member, they never change it ----------


def test_stopping_after_epochs_and_resuming_ends_bit_identical_to_a_straight_run(
    train_config, tmp_path: Path
) -> None:
    # cosine: the schedule spans the 4-epoch budget, so it must not restart at each rung
    base = replace(train_config, epochs=4, scheduler="cosine", lr=3e-3)
    straight = replace(base, checkpoint_dir=tmp_path / "straight", exit_on_checkpoint=False)
    assert train(straight).status == "finished"
    rungs = replace(base, checkpoint_dir=tmp_path / "rungs")  # exits 85 every epoch in between
    first = train(replace(rungs, stop_after_epoch=1))
    assert (first.status, first.exit_code, first.epochs_done) == ("stopped", 0, 1)
    state = json.loads((rungs.checkpoint_dir / "state.json").read_text())
    assert (state["epoch"], state["epochs"], state["finished"]) == (1, 4, False)
    second, runs = run_until_finished(replace(rungs, stop_after_epoch=3))
    assert (second.status, second.exit_code, second.epochs_done, runs) == ("stopped", 0, 3, 2)
    assert _final(rungs)["finished"] is False
    last, _ = run_until_finished(rungs)
    assert (last.status, last.epochs_done) == ("finished", 4) and _final(rungs)["finished"]
    _assert_same_training(_final(straight), _final(rungs))
    lrs = [row["lr"] for row in _final(rungs)["metrics"]]
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3]  # one cosine over all four epochs
    columns = ["epoch", *SCORES]
    csv = [pd.read_csv(c.checkpoint_dir / "metrics.csv")[columns] for c in (straight, rungs)]
    pd.testing.assert_frame_equal(csv[0], csv[1])


def test_stop_after_epoch_already_reached_is_nothing_to_do(train_config) -> None:
    config = replace(train_config, epochs=3, stop_after_epoch=2, exit_on_checkpoint=False)
    assert train(config).status == "stopped"
    written = (config.checkpoint_dir / "model.pth").read_bytes()
    for stop in (1, 2):  # a rung run again (a retry, a rescue DAG): the checkpoint is untouched
        again = train(replace(config, stop_after_epoch=stop))
        assert (again.status, again.exit_code, again.epochs_done) == ("stopped", 0, 2)
    assert (config.checkpoint_dir / "model.pth").read_bytes() == written
    # E == epochs is the whole budget
    done = train(replace(config, stop_after_epoch=3))
    assert (done.status, done.exit_code, done.epochs_done) == ("finished", 0, 3)


@pytest.mark.parametrize(
    ("stop", "message"),
    [
        (0, "--stop-after-epoch 0: must be 1 or more"),
        (3, r"--stop-after-epoch 3: must be at most --epochs \(2\)"),
    ],
)
def test_stop_after_epoch_outside_the_budget_is_refused(
    train_config, stop: int, message: str
) -> None:
    with pytest.raises(CondormlError, match=message) as err:
        train(replace(train_config, stop_after_epoch=stop))
    assert _exit_code(err.value) == ExitCode.PERMANENT
    assert not train_config.checkpoint_dir.exists()


# --- --hyperparameters FILE: a search's choice for one member --------------------------------------


def test_a_hyperparameters_file_is_read_and_checked(tmp_path: Path) -> None:
    from condorml.hyperparameters import read_hyperparameters, write_hyperparameters

    path = tmp_path / "params.json"
    path.write_text('{"lr": 1, "batch_size": 8, "optimizer": "sgd", "seed": 4}')
    assert read_hyperparameters(path) == {"lr": 1.0, "batch_size": 8, "optimizer": "sgd", "seed": 4}
    write_hyperparameters(path, {"scheduler": "cosine", "weight_decay": 0.01})
    assert read_hyperparameters(path) == {"scheduler": "cosine", "weight_decay": 0.01}
    bad = {
        "[1, 2]": "must be a JSON object",
        '{"checkpoint_every": 3}': "'checkpoint_every' is not a hyperparameter; choose from",
        '{"member": "m1"}': "'member' is not a hyperparameter",
        '{"lr": -1}': "lr = -1: must be a positive number",
        '{"batch_size": "64"}': 'batch_size = "64": must be a whole number',
        '{"optimizer": "rmsprop"}': 'optimizer = "rmsprop": choose one of adam',
        '{"lr": 0.1,': "not JSON",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(CondormlError) as err:
            read_hyperparameters(path)
        assert str(err.value).startswith(f"{path}: ") and message in str(err.value), text
        assert _exit_code(err.value) == ExitCode.PERMANENT, text
    with pytest.raises(CondormlError, match="no such hyperparameters file") as err:
        read_hyperparameters(tmp_path / "missing.json")
    assert _exit_code(err.value) == ExitCode.PERMANENT
    with pytest.raises(CondormlError, match="lr = 0") as err:
        write_hyperparameters(tmp_path / "never.json", {"lr": 0})
    assert _exit_code(err.value) == ExitCode.PERMANENT
    assert not (tmp_path / "never.json").exists()


# --- the command line, in real processes, as HTCondor runs it -------------------------------------


def _cli_args(config) -> list[str]:
    return [
        "train", "--data-dir", str(config.data_dir), "--checkpoint-dir", str(config.checkpoint_dir),
        "--epochs", str(config.epochs), "--checkpoint-every", str(config.checkpoint_every),
        "--image-size", str(IMAGE_SIZE), "--batch-size", str(config.batch_size),
        "--precision", config.precision, "--cache-dir", str(config.cache_dir),
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_exits_85_until_done_and_matches_an_uninterrupted_run(
    train_config, synth: Path, tmp_path: Path
) -> None:
    straight = replace(train_config, checkpoint_dir=tmp_path / "straight", exit_on_checkpoint=False)
    train(straight)
    codes, first = [], None
    for _ in range(4):
        proc = condorml_cli(*_cli_args(replace(train_config, data_dir=synth / "train.zip")))
        first = first or proc
        codes.append(proc.returncode)
        if proc.returncode != 85:
            break
    assert codes == [85, 0], proc.stderr
    assert "exit 85: run the same command again to continue" in first.stderr
    _assert_same_training(_final(straight), _final(train_config))


def test_cli_reports_user_errors_in_one_line_with_exit_2(tmp_path: Path, train_config) -> None:
    proc = condorml_cli(*_cli_args(replace(train_config, data_dir=tmp_path / "missing")))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"condorml: error: {tmp_path / 'missing'}: no such file or directory"]
    proc = condorml_cli("train", "--data-dir", "x", "--checkpoint-dir", "y", "--model", "vgg")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_cli_refuses_an_unwritable_checkpoint_folder_before_training(
    tmp_path: Path, train_config
) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    under_a_file = tmp_path / "file" / "ckpt"
    proc = condorml_cli(*_cli_args(replace(train_config, checkpoint_dir=under_a_file)))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"condorml: error: {under_a_file}: cannot write")
    assert "not a folder" in lines[0] and "free space" not in lines[0]


@pytest.mark.slow
def test_cli_hyperparameters_file_replaces_the_command_line_and_stop_exits_0(
    train_config, tmp_path: Path
) -> None:
    params = tmp_path / "params.json"
    params.write_text('{"lr": 0.004, "seed": 7, "scheduler": "cosine"}')
    config = replace(train_config, epochs=3)
    proc = condorml_cli(*_cli_args(config), "--lr", "0.5", "--hyperparameters", str(params),
                        "--stop-after-epoch", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "stopped after epoch 1 of 3" in proc.stderr
    saved = _final(config)["config"]
    assert (saved["lr"], saved["seed"], saved["scheduler"], saved["stop_after_epoch"]) == (
        0.004, 7, "cosine", 1,
    )  # fmt: skip
    params.write_text('{"lr": 0.004, "device": "cpu"}')
    proc = condorml_cli(*_cli_args(config), "--hyperparameters", str(params))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"condorml: error: {params}: 'device' is not a hyperparameter; choose from "
        "epochs, model, image_size, lr, batch_size, optimizer, weight_decay, momentum, scheduler, "
        "val_fraction, precision, freeze_backbone, seed"
    ]
    proc = condorml_cli(*_cli_args(config), "--stop-after-epoch", "4")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "condorml: error: --stop-after-epoch 4: must be at most --epochs (3), the budget it "
        "stops within"
    ]


@pytest.mark.slow
def test_cli_config_mismatch_exits_2_naming_the_field(train_config) -> None:
    train(train_config)
    proc = condorml_cli(*_cli_args(train_config), "--lr", "0.5")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "lr 0.001 -> 0.5" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_stops_at_a_safe_point_with_a_loadable_checkpoint(train_config) -> None:
    args = _cli_args(replace(train_config, epochs=1000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "condorml", *args, "--no-exit-on-checkpoint"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stderr:
        if "epoch 1/1000" in line:  # the first epoch has ended
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    rest = proc.stderr.read()
    state = _final(train_config)
    assert state["epoch"] >= 1
    done = f"{state['epoch']} of 1000 epochs done"
    assert f"stopped by SIGTERM: checkpoint {state['counters']['checkpoints']} saved to " in rest
    assert done in rest and "exit 143: run the same command again" in rest
    resumed = train(replace(train_config, epochs=state["epoch"] + 1))
    assert resumed.status == "finished"


DEFERRED_DYNAMO = """\
import sys
import torch
from condorml.job.devices import _DeferredDynamo, defer_dynamo_import

assert defer_dynamo_import()
model = torch.nn.Linear(3, 2)
optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
model(torch.ones(4, 3)).sum().backward()
optimizer.step()
optimizer.load_state_dict(optimizer.state_dict())
deferred = isinstance(sys.modules["torch._dynamo"], _DeferredDynamo)
# anything else asked of it hands over to the real module, compiling included
compiled = torch.compile(lambda x: x * 2 + 1, backend="eager")
assert torch.equal(compiled(torch.arange(3.0)), torch.tensor([1.0, 3.0, 5.0]))
import torch._dynamo.config
real = not isinstance(sys.modules["torch._dynamo"], _DeferredDynamo)
model(torch.ones(4, 3)).sum().backward()
optimizer.step()  # the optimizer's wrapped methods now go through the real disable
print(deferred, real)
"""


def test_a_training_start_defers_torch_dynamo_until_something_compiles() -> None:
    """The optimizer's only uses of torch._dynamo (disable, graph_break) cost its import, a
    second of every restart; compiling afterwards still gets the real module."""
    done = subprocess.run([sys.executable, "-c", DEFERRED_DYNAMO], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"]


def test_the_train_command_alone_has_the_same_help_and_usage_errors() -> None:
    alone = condorml_cli("train", "--help")
    assert alone.returncode == 0 and "--checkpoint-dir" in alone.stdout
    wrong = condorml_cli("train", "--no-such-option")
    assert wrong.returncode == 2
    assert "error: No such option: --no-such-option (see: " in wrong.stderr
    assert "condorml train -h)" in wrong.stderr
