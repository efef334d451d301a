"""Every member trains with the configuration its record says: what a member's job receives
(train.sub's arguments with the node's VARS, and a search's params.json) is its row of
members.csv, for grids, random samples and TPE alike, over a spec whose options depend on each
other (momentum is used by sgd only, one train.sub serves every member)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import htcondor2
import pandas as pd
import pytest
from typer.main import get_command

from condorml.cli import app
from condorml.config import TrainConfig
from condorml.htcondor.quoting import split_condor_arguments
from condorml.hyperparameters import read_hyperparameters, write_hyperparameters
from condorml.sweep.plan import plan_sweep, write_sweep

_VAR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# train's own options, not TrainConfig fields (cli/train.py sets or consumes them)
_COMMAND_ONLY = ("no_exit_on_checkpoint", "hyperparameters", "verbose")

SPECS = {
    "grid": """
[grid]
optimizer = ["adam", "sgd"]
lr = [0.01, 0.001]
""",
    "random": """
[random]
samples = 4
seed = 5
optimizer = ["adam", "sgd", "adamw"]
lr = { log_uniform = [1e-4, 1e-1] }
""",
    "tpe": """
[search]
method = "tpe"
trials = 3
parallel = 3
[search.space]
optimizer = ["adam", "sgd"]
lr = { log_uniform = [1e-4, 1e-1] }
""",
}


def _spec(tmp_path: Path, kind: str) -> Path:
    for name in ("train.zip", "test.zip"):
        (tmp_path / name).touch()
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[data]\ntrain = "train.zip"\ntest = "test.zip"\n'
        "[train]\nmomentum = 0.5\nimage_size = 48\nepochs = 2\n" + SPECS[kind]
    )
    return spec


def job_config(run: Path, node: str) -> TrainConfig:
    """The TrainConfig a node's training job runs: train.sub's arguments with the node's VARS,
    parsed by `condorml train`'s own command line, with a params.json in its folder applied."""
    vars_line = next(
        line for line in (run / "sweep.dag").read_text().splitlines()
        if line.startswith(f"VARS {node} ")
    )  # fmt: skip
    values = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _VAR.findall(vars_line)}
    submit = htcondor2.Submit((run / "train.sub").read_text())
    for key, value in values.items():
        submit[key] = value
    args = split_condor_arguments(submit.expand("arguments"))
    params = dict(get_command(app).commands["train"].make_context("train", args[1:]).params)
    folder = run / values["member_dir"]
    if params.get("hyperparameters"):
        params.update(read_hyperparameters(folder / str(params["hyperparameters"])))
    for name in _COMMAND_ONLY:
        params.pop(name, None)
    return TrainConfig(**params)


def _row_value(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value  # nan: unset


@pytest.mark.parametrize("kind", SPECS)
def test_every_member_s_job_trains_what_members_csv_says(tmp_path: Path, kind: str) -> None:
    plan = plan_sweep(_spec(tmp_path, kind), tmp_path / "run")
    write_sweep(plan)
    run = tmp_path / "run"
    if kind == "tpe":  # as the first rung's PRE script does: TPE's choice into params.json
        for k, member in enumerate(plan.members):
            choice = {"optimizer": ["adam", "sgd"][k % 2], "lr": 0.001 * (k + 1)}
            write_hyperparameters(run / "members" / member.member / "params.json", choice)
    table = pd.read_csv(run / "members.csv", dtype={"member": str})
    nodes = {
        line.split()[1] for line in (run / "sweep.dag").read_text().splitlines()
        if line.startswith("JOB train_")
    }  # fmt: skip
    optimizers = set()
    for row in table.to_dict("records"):
        member = row["member"]
        node = f"train_{member}" if f"train_{member}" in nodes else f"train_{member}_r1"
        config = job_config(run, node)
        if kind == "tpe":  # members.csv leaves TPE's choices empty: params.json records them
            row.update(json.loads((run / "members" / member / "params.json").read_text()))
        for key, value in row.items():
            if key in ("member",) or _row_value(value) is None:
                continue
            assert (
                getattr(config, key) == pytest.approx(value)
                if isinstance(value, float)
                else (getattr(config, key) == value)
            ), f"{member}: {key} is {getattr(config, key)!r} in its job, {value!r} in its record"
        assert config.momentum == 0.5, member  # fixed in [train], whatever the optimizer
        optimizers.add(config.optimizer)
    assert "sgd" in optimizers and len(optimizers) > 1


@pytest.mark.slow
def test_the_sgd_member_s_checkpoint_records_the_spec_s_momentum(tmp_path: Path) -> None:
    """The reproduced case, run: [grid] optimizer = ["adam", "sgd"] with [train] momentum = 0.5
    trained the sgd member with 0.9 while members.csv said 0.5."""
    from condorml.backends import choose_backend
    from condorml.job.checkpoint import read_checkpoint
    from condorml.job.synth import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data", n_train=32, n_test=4, seed=1, size=(56, 44),
                           make_zips=True)  # fmt: skip
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[data]\ntrain = "data/train.zip"\ntest = "data/test.zip"\n'
        '[train]\nmomentum = 0.5\nimage_size = 40\nepochs = 1\nbatch_size = 16\nprecision = "fp32"\n'
        '[grid]\noptimizer = ["adam", "sgd"]\n'
        '[resources]\ncpus = 1\nmemory = "1GB"\n'
    )
    plan = plan_sweep(spec, tmp_path / "run")
    write_sweep(plan)
    assert choose_backend("local").submit_dag(plan.dag_file).wait(300).state == "done"
    table = pd.read_csv(tmp_path / "run" / "members.csv", dtype={"member": str})
    for row in table.to_dict("records"):
        saved = read_checkpoint(tmp_path / "run" / "members" / row["member"] / "ckpt" / "model.pth")
        for key in ("optimizer", "momentum", "lr", "seed"):
            assert saved["config"][key] == row[key], (row["member"], key)
