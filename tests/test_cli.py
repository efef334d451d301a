"""The command line: every --help answers without importing torch; choices match the library."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from condorml.cli import _options as cli_options
from condorml.cli import app
from tests.helpers import condorml_cli

COMMANDS = [
    [],
    ["train"],
    ["infer"],
    ["merge"],
    ["evaluate"],
    ["data"],
    ["data", "synth"],
    ["data", "torchvision"],
    ["demo"],
    ["report"],
    ["sweep"],
    ["collect"],
    ["run"],
    ["stop"],
    ["watch"],
    ["submit"],
    ["submit", "train"],
    ["submit", "infer"],
    ["search"],
    ["search", "pre"],
    ["search", "post"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_does_not_import_torch_or_pandas() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from condorml.cli import app;"
        f"[CliRunner().invoke(app, [*c, '--help']) for c in {COMMANDS!r}];"
        "print(sorted(m for m in ('torch', 'pandas', 'htcondor2', 'numpy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_choices_match_the_library_tables() -> None:
    from condorml.config import DEVICES, OPTIMIZERS, PRECISIONS, SCHEDULERS

    assert get_args(cli_options.Optimizer) == OPTIMIZERS
    assert get_args(cli_options.Scheduler) == SCHEDULERS
    assert get_args(cli_options.Device) == DEVICES
    assert get_args(cli_options.Precision) == PRECISIONS


def test_version_and_module_entry_point() -> None:
    proc = condorml_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("condorml ")


def test_data_synth_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            str(tmp_path / "d"),
            "--n-train",
            "6",
            "--n-test",
            "2",
            "--size",
            "40x30",
            "--zip",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "d" / "train").glob("*.jpg"))) == 6
    assert (tmp_path / "d" / "train.zip").exists()
    bad = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "e"), "--size", "big"])
    assert bad.exit_code == 2
    assert "--size 'big': expected WIDTHxHEIGHT" in bad.output


@pytest.mark.slow
def test_demo_runs_an_ensemble_sweep_with_checkpoint_exits_on_the_local_backend(
    tmp_path: Path,
) -> None:
    import json

    import pandas as pd

    from condorml.monitor.watch import Watch
    from condorml.sweep.demo import run_demo

    result = run_demo(tmp_path, n_train=64, n_test=10, epochs=2, image_size=48)
    assert result.exit_code == 0
    ensemble = pd.read_csv(result.predictions)
    assert list(ensemble.columns) == ["fileid", "prob", "prob_std", "n_models"]
    assert len(ensemble) == 10 and (ensemble["n_models"] == 4).all()
    board = pd.read_csv(result.leaderboard)
    assert sorted(board["member"]) == ["m000", "m001", "m002", "m003"]
    assert sorted(board["lr"].unique()) == [0.001, 0.002]
    assert (board["status"] == "ok").all()
    # each training job exited 85 once (after epoch 1) and was restarted from its checkpoint in
    # the same sandbox: one run (execution), one checkpoint, as HTCondor counts them
    assert (board["epochs_done"] == 2).all()
    assert (board["runs"] == 1).all() and (board["checkpoints"] == 1).all()
    snapshot = Watch([result.run_dir]).snapshot()
    assert snapshot.dag_exit == 0 and snapshot.counts()["done"] == 9
    assert [m.train.total("checkpoints") for m in snapshot.members] == [1, 1, 1, 1]
    assert [m.train.total("runs") for m in snapshot.members] == [1, 1, 1, 1]  # as the leaderboard
    assert json.loads((result.run_dir / "metrics.json").read_text())["n"] == 10


# --- help that reads at 80 columns; commands to copy ---------------------------------------------


def _every_command() -> list[tuple[list[str], Any]]:
    """(argv, click command) of the root, every group and every command under it."""
    import typer.main

    found, todo = [], [([], typer.main.get_command(app))]
    while todo:
        path, command = todo.pop(0)
        found.append((path, command))
        todo += [([*path, name], sub) for name, sub in getattr(command, "commands", {}).items()]
    return found


def test_the_walk_finds_every_command_of_the_list() -> None:
    assert sorted(path for path, _ in _every_command()) == sorted(COMMANDS)


@pytest.mark.parametrize("columns", [80, 120])
def test_help_keeps_every_option_whole_at_80_columns(columns: int) -> None:
    for path, command in _every_command():
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
        assert result.exit_code == 0, result.output
        out, where = result.output, " ".join(["condorml", *path])
        assert max(map(len, out.splitlines())) <= columns, where
        # typer's rich panels cut names ("--checkpoint-d…"), wrote flags as "<bool>", required
        # arguments as "{out}" and repeatable options as "<list[str]>"
        for bad in ("…", "{", "}", "<bool>", "<list["):
            assert bad not in out, f"{where}: {bad!r} in\n{out}"
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("--"):  # whole: not followed by more of a name or an ellipsis
                    assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), (where, name)
            if param.param_type_name == "argument":
                assert re.search(rf"\b{param.name.upper()}\b", out.splitlines()[0]), where


def test_usage_names_arguments_as_click_does() -> None:
    def usage(*argv: str) -> str:
        return CliRunner().invoke(app, [*argv, "--help"]).output.splitlines()[0]

    assert usage("merge").endswith("merge [OPTIONS] OUTPUT PARTS...")
    assert usage("collect").endswith("collect [OPTIONS] [RUN_DIR]")
    assert usage("watch").endswith("watch [OPTIONS] [SOURCES]...")
    assert usage("data").endswith("data [OPTIONS] COMMAND [ARGS]...")
    flag = CliRunner().invoke(app, ["data", "synth", "--help"]).output
    assert re.search(r"^  --zip +Also write", flag, re.M)  # a flag takes no value


@pytest.mark.parametrize("label", ["run it:", "a label much longer than the narrow terminal is:"])
def test_a_printed_command_is_one_quoted_line(
    label: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from condorml.cli._common import print_command

    monkeypatch.setenv("COLUMNS", "20")
    folder = Path("runs/my run") / ("x" * 40)
    print_command(label, ["cd", folder], ["condor_submit_dag", "sweep.dag"])
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith(f"{label} ")
    assert shlex.split(line[len(label) :]) == ["cd", str(folder), "&&", "condor_submit_dag", "sweep.dag"]  # fmt: skip


def test_submit_prints_a_command_that_works_in_a_folder_with_a_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.zip").write_bytes(b"")
    result = CliRunner().invoke(
        app,
        ["submit", "train", "-d", "train.zip", "-o", "my runs/train.sub"],
        env={"COLUMNS": "30"},
    )
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("submit it with: ")]
    command = shlex.split(line.removeprefix("submit it with: "))
    assert command == ["cd", "my runs", "&&", "condor_submit", "train.sub"]
    assert (tmp_path / command[1] / command[4]).is_file()


def test_printed_follow_up_commands_work_in_a_fresh_shell(monkeypatch) -> None:
    """After the Quickstart the virtualenv is not activated: a bare `condorml` is not found."""
    import sys
    from pathlib import Path

    from condorml.cli._common import condorml_command

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert condorml_command() == [str(Path(sys.executable).parent / "condorml")]
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    assert condorml_command() == ["condorml"]
