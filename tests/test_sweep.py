"""Sweeps: spec validation, deterministic members, the DAG, run folders, the collect step."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import htcondor2
import pandas as pd
import pytest
from typer.testing import CliRunner

from condorml.backends import condor as schedd_module
from condorml.cli import app
from condorml.errors import CondormlError
from condorml.htcondor.quoting import split_condor_arguments
from condorml.sweep.collect import collect
from condorml.sweep.dag import generating_python
from condorml.sweep.members import expand, member_id
from condorml.sweep.plan import plan_sweep, write_sweep
from condorml.sweep.spec import load_spec

GOLDEN = Path(__file__).parent / "golden"
PYTHON_PLACEHOLDER = "/path/to/venv/bin/python"
BASE = """
[data]
train = "train.zip"
test = "test.zip"
"""


def _spec(tmp_path: Path, body: str, name: str = "spec.toml") -> Path:
    """A spec in ``tmp_path`` whose [data] files exist there (empty: nothing reads them)."""
    for data in ("train.zip", "test.zip"):
        (tmp_path / data).touch()
    path = tmp_path / name
    path.write_text(BASE + body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[grids]\nlr = [0.1]\n", "[grids]: unknown section; valid sections: data, train, grid"),
        (
            "[grid]\nlearning_rate = [0.1]\n",
            "[grid] learning_rate: unknown key; valid keys: epochs, model",
        ),
        (
            "[random]\nsamples = 2\nlearning_rate = [0.1]\n",
            "[random] learning_rate: unknown hyperparameter",
        ),
        ("[grid]\nlr = []\n", "[grid] lr: an empty list; give at least one value"),
        ("[random]\nsamples = 2\nlr = { uniform = [0.1, 0.01] }\n", "impossible range [0.1, 0.01]"),
        (
            "[random]\nsamples = 2\nlr = { log_uniform = [0, 0.01] }\n",
            "log_uniform needs positive bounds",
        ),
        (
            "[random]\nsamples = 2\nbatch_size = { uniform = [8, 64] }\n",
            "batch_size takes whole numbers",
        ),
        ("[grid]\nlr = [-0.1]\n", "[grid] lr: got -0.1; must be a positive number"),
        (
            "[grid]\nmodel = ['cnn', 'vgg']\n",
            '[grid] model: got "vgg"; unknown model; closest: vgg',
        ),
        ("[grid]\nlr = [0.1, 0.1]\n", "lists a value twice"),
        ("[train]\nlr = 0.1\n[grid]\nlr = [0.2]\n", "[train] lr: is also swept"),
        ("[ensemble]\nmembers = 0\n", "[ensemble] members: got 0; must be 1 or more"),
        ("[ensemble]\nseeds = [1, 1]\n", "lists a seed twice"),
        ("[random]\nsamples = 5\noptimizer = ['adam', 'sgd']\n", "would be identical"),
        ("[resources]\ngpu = 1\n", "[resources] gpu: unknown key; valid keys: cpus"),
        ("[train]\ndata_dir = 'x'\n", "[train] data_dir: unknown key"),
        ("[submit]\nexecutable = '/bin/sh'\n", "[submit] executable: condorml writes this command"),
        ("[submit]\nlr = 0.5\n", "[submit] lr: not a submit command condorml passes through"),
        ("[submit]\nbatch_name = '$(HOME)'\n", "[submit] batch_name '$(HOME)': contains '$'"),
        (
            "[inference.submit]\nrequirements = '(x'\n",
            "[inference.submit] requirements '(x': not a ClassAd",
        ),
    ],
)
def test_bad_specs_are_clear_errors_naming_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CondormlError, match=re.escape(message)):
        expand(load_spec(_spec(tmp_path, body)))


def test_missing_data_and_bad_toml_are_errors(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("[data]\ntrain = 'x.zip'\n")
    with pytest.raises(CondormlError, match=r"\[data\] test: required"):
        load_spec(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("[data\n")
    with pytest.raises(CondormlError, match="not valid TOML"):
        load_spec(tmp_path / "b.toml")
    with pytest.raises(CondormlError, match="no such sweep specification"):
        load_spec(tmp_path / "nope.toml")


def test_members_follow_the_documented_order_and_are_stable(tmp_path: Path) -> None:
    spec = load_spec(
        _spec(
            tmp_path, "[grid]\nlr = [0.1, 0.2]\nbatch_size = [8, 16]\n[ensemble]\nseeds = [5, 6]\n"
        )
    )
    members = expand(spec)
    assert [m.member for m in members] == [f"m{i:03d}" for i in range(8)]
    assert [(m.hyperparameters["lr"], m.hyperparameters["batch_size"], m.seed) for m in members[:4]] == [
        (0.1, 8, 5), (0.1, 8, 6), (0.1, 16, 5), (0.1, 16, 6),
    ]  # fmt: skip
    assert expand(load_spec(spec.path)) == members  # re-expansion: same ids, same values


def test_random_samples_are_seeded_rounded_and_in_range(tmp_path: Path) -> None:
    body = "[random]\nsamples = 6\nseed = 11\nlr = { log_uniform = [1e-5, 1e-2] }\nepochs = { int_uniform = [2, 4] }\n"
    first = expand(load_spec(_spec(tmp_path, body)))
    again = expand(load_spec(_spec(tmp_path, body, "again.toml")))
    assert [m.hyperparameters for m in first] == [m.hyperparameters for m in again]
    assert all(
        1e-5 <= m.hyperparameters["lr"] <= 1e-2 and m.hyperparameters["epochs"] in (2, 3, 4)
        for m in first
    )
    assert all(float(f"{m.hyperparameters['lr']:.4g}") == m.hyperparameters["lr"] for m in first)
    other = expand(load_spec(_spec(tmp_path, body.replace("seed = 11", "seed = 12"), "other.toml")))
    assert [m.hyperparameters for m in other] != [m.hyperparameters for m in first]


def test_member_ids_widen_past_999() -> None:
    assert (member_id(0, 1000), member_id(999, 1000), member_id(5, 10_001)) == (
        "m000",
        "m999",
        "m00005",
    )


def _golden_outputs(tmp_path: Path) -> dict[str, str]:
    for name in ("small.toml",):
        shutil.copy(GOLDEN / name, tmp_path / name)
    for data in ("train.zip", "test.zip", "test_labels.csv"):  # small.toml's [data]
        (tmp_path / data).touch()
    plan = plan_sweep(tmp_path / "small.toml", tmp_path / "run")
    write_sweep(plan)
    return {  # the collect step's interpreter is this machine's: a placeholder in the golden files
        name: (tmp_path / "run" / name).read_text().replace(generating_python(), PYTHON_PLACEHOLDER)
        for name in ("sweep.dag", "train.sub", "infer.sub", "collect.sub")
    }


EXAMPLE_SPEC = GOLDEN.parent.parent / "dags" / "example.toml"


def _example_dag(tmp_path: Path) -> str:
    """The sweep.dag that dags/example.toml gives (its data need only exist: nothing is read)."""
    (tmp_path / "dags").mkdir()
    shutil.copy(EXAMPLE_SPEC, tmp_path / "dags" / EXAMPLE_SPEC.name)
    (tmp_path / "data" / "synth").mkdir(parents=True)
    for data in ("train.zip", "test.zip", "test_labels.csv"):
        (tmp_path / "data" / "synth" / data).touch()
    plan = plan_sweep(tmp_path / "dags" / EXAMPLE_SPEC.name, tmp_path / "run")
    write_sweep(plan)
    return plan.dag_file.read_text()


def test_the_example_dag_in_dags_is_what_the_example_spec_gives(tmp_path: Path) -> None:
    expected = (EXAMPLE_SPEC.parent / "example.dag").read_text()
    assert _example_dag(tmp_path) == expected, (
        "dags/example.dag differs from what dags/example.toml gives; regenerate: python -m tests.test_sweep"
    )


def test_dag_golden(tmp_path: Path) -> None:
    """The DAG and submit files of tests/golden/small.toml, line by line.

    After an intended change, regenerate: python -m tests.test_sweep
    """
    for name, text in _golden_outputs(tmp_path).items():
        expected = (GOLDEN / name).read_text()
        assert text == expected, (
            f"{name} differs from tests/golden/{name}; if intended, regenerate with: python -m tests.test_sweep"
        )


def test_dag_structure(tmp_path: Path) -> None:
    dag = _golden_outputs(tmp_path)["sweep.dag"]
    lines = dag.splitlines()
    assert sum(line.startswith("JOB train_") for line in lines) == 8  # 2 lr x 2 samples x 2 seeds
    assert "PARENT train_m000 CHILD infer_m000" in lines
    assert "RETRY train_m000 1 UNLESS-EXIT 2" in lines
    assert "CATEGORY train_m000 train" in lines and "MAXJOBS train 3" in lines
    assert not [
        line for line in lines if re.fullmatch(r"CATEGORY \w+ \d+", line)
    ]  # htcondor2.dags' throttle bug
    nodes = [line for line in lines if not line.startswith(("#", "MAXJOBS"))]
    assert nodes[-1] == "FINAL collect collect.sub"  # the last node: after every member's
    vars_m001 = next(line for line in lines if line.startswith("VARS train_m001 "))
    assert 'member="m001" member_dir="members/m001" seed="1" lr="0.001"' in vars_m001
    assert all(
        "." not in line.split()[1] and "+" not in line.split()[1]
        for line in lines
        if line.startswith("JOB ")
    )


def test_train_node_arguments_expand_per_member(tmp_path: Path) -> None:
    outputs = _golden_outputs(tmp_path)
    description = htcondor2.Submit(outputs["train.sub"])
    vars_line = next(
        line for line in outputs["sweep.dag"].splitlines() if line.startswith("VARS train_m005 ")
    )
    for key, value in re.findall(r'(\w+)="([^"]*)"', vars_line):
        description[key] = value  # what DAGMan's VARS do
    args = split_condor_arguments(description.expand("arguments"))
    member = expand(load_spec(tmp_path / "small.toml"))[5]
    assert args[args.index("--member") + 1] == "m005" and args[args.index("--seed") + 1] == str(
        member.seed
    )
    assert float(args[args.index("--weight-decay") + 1]) == member.hyperparameters["weight_decay"]
    assert description.expand("initialdir") == "members/m005"
    assert description.expand("transfer_input_files") == "../../../train.zip, ckpt"  # resume input
    assert (tmp_path / "run" / "members" / "m005" / "ckpt").is_dir()


def test_hostile_values_in_vars_are_refused_or_escaped(tmp_path: Path) -> None:
    import htcondor2.dags as dags

    from condorml.sweep.dag import _train_vars
    from condorml.sweep.members import Member

    with pytest.raises(CondormlError, match="newline"):
        _train_vars(Member("m000", 0, {"scheduler": "cosine\nJOB evil evil.sub"}), ("scheduler",))
    with pytest.raises(CondormlError, match=r"'\$'"):
        _train_vars(Member("m000", 0, {"scheduler": "$(HOME)"}), ("scheduler",))
    dag = dags.DAG()
    dag.layer(
        name="x", submit_description=htcondor2.Submit({"executable": "a"}), vars=[{"v": 'a"b\\c'}]
    )
    lines = list(dags.writer.DAGWriter(dag).yield_dag_file_lines())
    assert 'VARS x:0 v="a\\"b\\\\c"' in lines  # quotes and backslashes escaped, as DAGMan requires
    bad_data = _spec(tmp_path, "").read_text().replace('"train.zip"', '"a,b.zip"')
    (tmp_path / "bad.toml").write_text(bad_data)
    (tmp_path / "a,b.zip").touch()
    with pytest.raises(CondormlError, match="commas"):
        plan_sweep(tmp_path / "bad.toml", tmp_path / "run")


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(_spec(tmp_path, "[grid]\nlr = [0.1, 0.2]\n")),
            "--out",
            str(tmp_path / "run"),
            "--dry-run",
            "--epoch-minutes",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "2 member(s)" in result.output
        and "would write" in result.output
        and "job hours" in result.output
    )
    assert not (tmp_path / "run").exists()


def test_same_spec_continues_changed_spec_is_refused_unless_forced(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "[grid]\nlr = [0.1, 0.2]\n")
    run = tmp_path / "run"
    write_sweep(plan_sweep(spec, run))
    (run / "members" / "m000" / "ckpt" / "model.pth").write_text("a checkpoint")
    write_sweep(plan_sweep(spec, run))  # same spec: continues
    assert (run / "members" / "m000" / "ckpt" / "model.pth").read_text() == "a checkpoint"
    changed = _spec(tmp_path, "[grid]\nlr = [0.1, 0.3]\n", "changed.toml")
    with pytest.raises(CondormlError, match="holds a run of another spec"):
        write_sweep(plan_sweep(changed, run))
    write_sweep(plan_sweep(changed, run), force=True)
    assert (run / "previous-1" / "members" / "m000" / "ckpt" / "model.pth").exists()  # nothing lost
    assert "0.3" in (run / "members.csv").read_text()


def test_members_csv_lists_every_member(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_sweep(
        plan_sweep(
            _spec(
                tmp_path, "[grid]\nlr = [0.1, 0.2]\n[train]\nepochs = 3\n[ensemble]\nmembers = 2\n"
            ),
            run,
        )
    )
    members = pd.read_csv(run / "members.csv")
    assert list(members["member"]) == ["m000", "m001", "m002", "m003"]
    assert list(members["lr"]) == [0.1, 0.1, 0.2, 0.2] and list(members["seed"]) == [0, 1, 0, 1]
    assert set(members["epochs"]) == {3}


@pytest.fixture
def bindings_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No condor_submit(_dag) on PATH, a condor_dagman there (the bindings need one to submit a
    DAG), and DAGMan's /tmp rule lifted for pytest's tmp_path."""
    monkeypatch.setattr(schedd_module, "pool_tool", lambda _name: None)
    monkeypatch.setattr(schedd_module, "DAGMAN_REFUSED_PREFIX", "/no-such-folder")
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "condor_dagman").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "condor_dagman").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")


def test_submitting_to_condor_uses_from_dag_and_a_schedd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bindings_only: None
) -> None:
    plan = plan_sweep(_spec(tmp_path, ""), tmp_path / "run")
    write_sweep(plan)
    seen = {}

    def from_dag(filename, options):
        seen["dag"], seen["cwd"] = filename, Path.cwd()
        return htcondor2.Submit({"executable": "/usr/bin/condor_dagman"})

    class Schedd:
        def submit(self, description):
            seen["submitted"] = description

            class Result:
                def cluster(self):
                    return 77

            return Result()

    from condorml.backends.condor import CondorBackend

    monkeypatch.setattr(htcondor2.Submit, "from_dag", staticmethod(from_dag))
    outcome = CondorBackend(Schedd()).submit_dag(plan.dag_file)
    assert outcome.cluster == 77 and "condor_watch_q -clusters 77" in outcome.message
    assert seen["dag"] == "sweep.dag" and seen["cwd"] == (tmp_path / "run").resolve()


def test_without_a_schedd_submitting_says_how_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bindings_only: None
) -> None:
    plan = plan_sweep(_spec(tmp_path, ""), tmp_path / "run")
    write_sweep(plan)

    def unreachable():
        raise htcondor2.HTCondorException("Unable to locate local daemon.")

    from condorml.backends.condor import CondorBackend

    monkeypatch.setattr(htcondor2, "Schedd", unreachable)
    with pytest.raises(
        CondormlError, match=r"condor_submit_dag sweep\.dag; without a pool, run it here"
    ):
        CondorBackend().submit_dag(plan.dag_file)
    # the description from_dag wrote is removed, or condor_submit_dag by hand would refuse
    assert not (tmp_path / "run" / "sweep.dag.condor.sub").exists()


def test_a_run_folder_under_tmp_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DAGMan refuses a node log under /tmp (checked on the pool); say so before submitting."""
    with pytest.raises(CondormlError, match="under /tmp"):
        schedd_module.check_dag_folder(Path("/tmp/runs/x/sweep.dag"))
    with pytest.raises(CondormlError, match="under /tmp"):
        schedd_module.check_dag_folder(Path("/tmpfs/x/sweep.dag"))  # DAGMan compares strings
    schedd_module.check_dag_folder(Path("/var/tmp/x/sweep.dag"))  # accepted there (seen too)
    # pytest's folders are under /tmp, unless TMPDIR says otherwise: treat them as such
    monkeypatch.setattr(schedd_module, "DAGMAN_REFUSED_PREFIX", str(tmp_path.resolve()))
    spec = _spec(tmp_path, "")
    result = CliRunner().invoke(
        app, ["sweep", str(spec), "--out", str(tmp_path / "run"), "--submit", "--backend", "condor"]
    )
    assert result.exit_code == 2 and "DAGMan refuses a DAG whose node log is under" in result.output
    assert not (tmp_path / "run").exists()
    written = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "run")])
    assert written.exit_code == 0 and "note: " in written.output  # a warning, the files are kept
    assert (tmp_path / "run" / "sweep.dag").exists()


# --- collect --------------------------------------------------------------------------------------


def _fake_member(run: Path, member: str, probs: list[float] | None, val_loss: float) -> None:
    folder = run / "members" / member
    (folder / "ckpt").mkdir(parents=True, exist_ok=True)
    (folder / "ckpt" / "state.json").write_text(
        json.dumps(
            {
                "epoch": 4,
                "batch": 0,
                "finished": True,
                "checkpoints": 2,
                "runs": 3,
                "wall_seconds": 12.5,
            }
        )
    )
    pd.DataFrame(
        [{"epoch": 4, "train_loss": 0.3, "train_acc": 0.9, "val_loss": val_loss, "val_acc": 0.8}]
    ).to_csv(folder / "ckpt" / "metrics.csv", index=False)
    if probs is not None:
        (folder / "out").mkdir(exist_ok=True)
        rows = "".join(f"{i},{p!r}\n" for i, p in enumerate(probs, start=1))
        (folder / "out" / "dog_probs.csv").write_text("fileid,prob\n" + rows)


def test_collect_averages_present_members_and_lists_failed_ones(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_sweep(plan_sweep(_spec(tmp_path, "[ensemble]\nmembers = 3\n"), run))
    _fake_member(run, "m000", [0.2, 0.9, 0.6], val_loss=0.5)
    _fake_member(run, "m001", [0.4, 0.7, 0.2], val_loss=0.3)
    _fake_member(run, "m002", None, val_loss=0.9)  # trained, inference failed
    (tmp_path / "labels.csv").write_text("fileid,is_dog\n1,0\n2,1\n3,1\n")
    result = collect(run, min_members=2, labels=tmp_path / "labels.csv", with_stats=True)
    assert result.joined == ["m000", "m001"] and list(result.failed) == ["m002"]
    assert result.succeeded(2) and not result.succeeded(3)
    ensemble = pd.read_csv(run / "dog_probs.csv")
    assert list(ensemble.columns) == ["fileid", "prob", "prob_std", "n_models"]
    assert ensemble["prob"].tolist() == pytest.approx([0.3, 0.8, 0.4])
    assert ensemble["prob_std"].tolist() == pytest.approx([0.1, 0.1, 0.2])
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["member"]) == [
        "m001",
        "m000",
        "m002",
    ]  # best validation loss first, failed last
    assert board.loc[2, "status"].startswith("failed: no predictions")
    assert {"checkpoints", "wall_seconds", "test_accuracy", "lr"} <= set(board.columns)
    assert board["runs"].isna().all()  # no event log: HTCondor's counts are unknown, not guessed
    assert json.loads((run / "metrics.json").read_text())["n"] == 3
    sidecar = json.loads((run / "dog_probs.csv.json").read_text())
    assert sidecar["members"] == ["m000", "m001"] and "m002" in sidecar["failed_members"]


def test_collect_cli_fails_below_min_members(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_sweep(plan_sweep(_spec(tmp_path, "[ensemble]\nmembers = 2\n"), run))
    _fake_member(run, "m000", [0.5], val_loss=0.5)
    result = CliRunner().invoke(app, ["collect", str(run), "--min-members", "2"])
    # not 1, the code of a bug: a result of the run, the collect rule's own code
    assert result.exit_code == 3 and "only 1 member(s) produced predictions" in result.output
    assert CliRunner().invoke(app, ["collect", str(run)]).exit_code == 0


if __name__ == "__main__":  # regenerate the golden files: python -m tests.test_sweep
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in _golden_outputs(Path(tmp)).items():
            (GOLDEN / name).write_text(text)
            print(f"wrote tests/golden/{name}")
    with tempfile.TemporaryDirectory() as tmp:
        (EXAMPLE_SPEC.parent / "example.dag").write_text(_example_dag(Path(tmp)))
        print("wrote dags/example.dag")


def test_submit_section_and_python_reach_the_training_and_inference_jobs(tmp_path: Path) -> None:
    body = """
[resources]
python = "/software/condorml/bin/python"
[submit]
"+ProjectName" = "UW_Smith"
getenv = "PATH"
[inference.submit]
requirements = '(OpSys == "LINUX")'
"""
    plan = plan_sweep(_spec(tmp_path, body), tmp_path / "run")
    train, infer = (plan.workflow.jobs[k].submit for k in ("train", "infer"))
    for job in (train, infer):
        assert job["My.ProjectName"] == '"UW_Smith"' and job["getenv"] == "PATH"
        assert split_condor_arguments(job["arguments"])[:2] == [
            "--python",
            "/software/condorml/bin/python",
        ]
    assert infer["requirements"] == '(OpSys == "LINUX")' and "requirements" not in train
    with pytest.raises(CondormlError, match="--python '-c': the path of a Python interpreter"):
        plan_sweep(_spec(tmp_path, "[resources]\npython = '-c'\n", "bad.toml"), tmp_path / "bad")
    # the collect step runs on the access point with the interpreter that wrote the files
    collect = plan.workflow.jobs["collect"].submit
    assert split_condor_arguments(collect["arguments"])[:3] == [
        "--python",
        generating_python(),
        "collect",
    ]


# --- values and paths checked when the spec is read (issue 12) ------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[train]\nepochs = 3.5\n", "[train] epochs: got 3.5; must be a whole number, 1 or more"),
        ('[train]\nepochs = "3"\n', '[train] epochs: got "3"; must be a whole number, 1 or more (written without quotes)'),
        ('[train]\nlr = "fast"\n', '[train] lr: got "fast"; must be a positive number'),
        ("[grid]\nlr = 0.001\n", "[grid] lr: got 0.001; expected a list of values, e.g. lr = [0.001]"),
        ("[grid]\nepochs = [2, 2.5]\n", "[grid] epochs: got 2.5; must be a whole number"),
        ('[random]\nlr = ["fast"]\n', '[random] lr: got "fast"; must be a positive number'),
        ("[random]\nsamples = 2\nlr = { uniform = [0.0, 0.1] }\n", "[random] lr: got 0.0; must be a positive number"),
        ("[ensemble]\nmembers = 2\nmin_members = 5\n", "[ensemble] min_members: 5 is more than the 2 member(s) this spec makes"),
        ("[grid]\nlr = [0.1, 0.2]\n[ensemble]\nmin_members = 3\n", "more than the 2 member(s)"),
        ("[ensemble]\nmembers = true\n", "[ensemble] members: got true; must be a whole number"),
        ("[ensemble]\nseeds = [-1]\n", "[ensemble] seeds: got -1; must be at least 0"),
        ("[train]\nval_fraction = 1.5\n", "[train] val_fraction: got 1.5; must be at least 0 and below 1"),
        ("[train]\nimage_size = 8\n", '[train] image_size: got 8 with model = "cnn"; too small for the cnn model; use 37 or more'),
        ("[grid]\nmodel = ['cnn', 'resnet18']\n[train]\nimage_size = 36\n", 'image_size: got 36 with model = "cnn" (member m000: model = "cnn")'),
        ("[train]\nmodel = 'models/none.py:Net'\n", '[train] model: "models/none.py" does not exist'),
        ("[grid]\nmodel = ['cnn', 'net.txt:Net']\n", "[grid] model: got \"net.txt:Net\"; a model file reference is FILE.py:CLASS"),
        ("[train]\nmodel = 'resnet18'\nfreeze_backbone = true\n", "[train] freeze_backbone: got true with model"),
        ("[train]\nfreeze_backbone = 'yes'\n", '[train] freeze_backbone: got "yes"; must be true or false'),
        ('[inference]\nshards = "2"\n', '[inference] shards: got "2"; must be a whole number, 1 or more (written without quotes)'),
        ('[inference]\nprecision = "fp16"\n', "[inference] precision: got \"fp16\"; choose one of auto, fp32, bf16"),
        ("[throttle]\nretries = -1\n", "[throttle] retries: got -1; must be 0 or more"),
        ('[resources]\ncpus = "4"\n', '[resources] cpus: got "4"; must be a whole number, 1 or more'),
        ("[resources]\nmemory = 2\n", "[resources] memory: got \"2\"; 2 without a unit is 2 MiB, too little for a job: write the unit, e.g. '2GB'"),
        ("[inference.resources]\ndisk = \"100\"\n", "[inference.resources] disk: got \"100\"; 100 without a unit is 100 KiB"),
        ("[random]\nsamples = true\nlr = [0.1]\n", "[random] samples: got true; must be a whole number"),
        ("epochs = 3\n", 'epochs = 3: a key outside any table; put it under its table'),
        ("[data.x]\n", "[data] x: unknown key"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_when_the_spec_is_read(
    tmp_path: Path, body: str, message: str
) -> None:
    """Each of these used to be written into every job (or gave a Python error): now one line,
    ``<spec>: [table] key: what is wrong; what to do``, from the sweep command, nothing written."""
    text = body if body.startswith("epochs") else BASE + body
    spec = tmp_path / "spec.toml"
    for data in ("train.zip", "test.zip"):
        (tmp_path / data).touch()
    spec.write_text(text + (BASE if body.startswith("epochs") else ""))
    with pytest.raises(CondormlError) as caught:
        plan_sweep(spec, tmp_path / "run")
    assert str(caught.value).startswith(f"{spec}: ") and message in str(caught.value), caught.value
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_the_spec_and_the_command_line_share_one_table_of_ranges(tmp_path: Path) -> None:
    from condorml.config import OPTION_RULES
    from condorml.sweep.spec import FIXED_ONLY, HYPERPARAMETERS

    assert set(HYPERPARAMETERS + FIXED_ONLY) - {"pretrained_weights"} <= set(OPTION_RULES)
    # an integer where a float is expected is the float (lr = 1 and lr = 1.0 are one member)
    spec = load_spec(_spec(tmp_path, "[grid]\nlr = [1]\n[train]\nweight_decay = 0\n"))
    assert spec.grid["lr"] == [1.0] and isinstance(spec.train["weight_decay"], float)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('[data]\ntrain = "nope/train.zip"\ntest = "test.zip"\n', '[data] train: "nope/train.zip" does not exist'),
        ('[data]\ntrain = "train.zip"\ntest = "nope.zip"\n', '[data] test: "nope.zip" does not exist'),
        ('[data]\ntrain = "train.zip"\ntest = "test.zip"\nlabels = "labels.csv"\n', '[data] labels: "labels.csv" does not exist'),
        ('[data]\ntrain = "train.zip"\ntest = "test.zip"\n[train]\nmodel = "resnet18"\npretrained_weights = "w.pth"\n',
         '[train] pretrained_weights: "w.pth" does not exist'),
        ('[data]\ntrain = "train.zip"\ntest = "test.zip"\n[resources]\ncontainer_image = "c.sif"\n',
         '[resources] container_image: "c.sif" does not exist'),
    ],
)  # fmt: skip
def test_missing_local_paths_are_refused_naming_the_key(
    tmp_path: Path, body: str, where: str
) -> None:
    """Every training job of such a DAG went on hold; now the sweep is refused, naming the key."""
    folder = tmp_path / "specs"
    folder.mkdir()
    for data in ("train.zip", "test.zip"):
        (folder / data).touch()
    (folder / "spec.toml").write_text(body)
    result = CliRunner().invoke(
        app, ["sweep", str(folder / "spec.toml"), "-o", str(tmp_path / "run")]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"{folder / 'spec.toml'}: {where} (looked for {folder}/" in result.output
    assert not (tmp_path / "run").exists()


def test_urls_pass_unchecked_and_relative_paths_follow_the_spec_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "specs"
    (folder / "w").mkdir(parents=True)
    (folder / "w" / "resnet.pth").touch()
    (folder / "spec.toml").write_text(
        '[data]\ntrain = "osdf:///chtc/staging/u/train.zip"\ntest = "https://example.org/test.zip"\n'
        '[train]\nmodel = "resnet18"\nimage_size = 32\npretrained_weights = "w/resnet.pth"\n'
    )
    monkeypatch.chdir(tmp_path)
    plan = plan_sweep(Path("specs/spec.toml"), Path("run"))
    train = plan.workflow.jobs["train"].submit
    assert train["transfer_input_files"] == (
        "osdf:///chtc/staging/u/train.zip, ../../../specs/w/resnet.pth, ckpt"
    )


def _run_files(run: Path) -> dict[str, str]:
    names = ("sweep.dag", "train.sub", "infer.sub", "collect.sub", "members.csv")
    files = {name: (run / name).read_text() for name in names}
    files["sweep.dag"] = files["sweep.dag"].split("\n", 1)[1]  # its first line names the spec file
    return files


def test_sweep_run_again_on_the_run_folders_copy_writes_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy records relative_to, so that it reads the files the original spec named.

    It used to be read relative to the run folder: submit files pointing nowhere, silently.
    """
    (tmp_path / "data").mkdir()
    for data in ("train.zip", "test.zip", "labels.csv"):
        (tmp_path / "data" / data).touch()
    (tmp_path / "dags").mkdir()
    original = tmp_path / "dags" / "sweep.toml"
    original.write_text(
        "# my sweep\n[data]  # relative to this file\n"
        'train = "../data/train.zip"\ntest = "../data/test.zip"\nlabels = "../data/labels.csv"\n'
        "[grid]\nlr = [0.1, 0.2]\n"
    )
    monkeypatch.chdir(tmp_path)
    run = Path("runs/first")
    write_sweep(plan_sweep(Path("dags/sweep.toml"), run))
    before = _run_files(run)
    copy = (run / "spec.toml").read_text()
    assert 'relative_to = "../../dags"' in copy and "# my sweep" in copy
    monkeypatch.chdir(run)  # the user, inside the run folder, on its copy
    result = CliRunner().invoke(app, ["sweep", "spec.toml", "--out", "."])
    assert result.exit_code == 0, result.output
    assert _run_files(Path(".")) == before and Path("spec.toml").read_text() == copy
    monkeypatch.chdir(tmp_path)
    write_sweep(plan_sweep(original, run))  # the original again: the same spec, continued
    assert _run_files(run) == before
    # the copy as the spec of another run folder reads the same data
    write_sweep(plan_sweep(run / "spec.toml", Path("runs/second")))
    assert 'relative_to = "../../dags"' in Path("runs/second/spec.toml").read_text()
    assert _run_files(Path("runs/second")) == {
        k: v.replace("runs/first", "runs/second") for k, v in before.items()
    }


def test_a_copy_without_relative_to_is_refused_not_rewritten(tmp_path: Path) -> None:
    """A run folder written before relative_to existed: its copy names files that are not there."""
    (tmp_path / "data").mkdir()
    for data in ("train.zip", "test.zip"):
        (tmp_path / "data" / data).touch()
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / "spec.toml").write_text(
        '[data]\ntrain = "../data/train.zip"\ntest = "../data/test.zip"\n'
    )
    with pytest.raises(
        CondormlError, match=r'\[data\] train: "\.\./data/train\.zip" does not exist'
    ):
        plan_sweep(run / "spec.toml", run)


def test_a_run_folder_with_a_space_in_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It failed with an error about a --model option the user never gave: the model's path
    (my runs/x/members/m000/ckpt/model.pth) was checked instead of what the file says (ckpt/model.pth)."""
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, "[train]\nepochs = 2\n")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", "my runs/x"])
    assert result.exit_code == 0, result.output
    infer = htcondor2.Submit((tmp_path / "my runs" / "x" / "infer.sub").read_text())
    assert infer["transfer_input_files"] == "ckpt/model.pth, ../../../../test.zip"
    # data in a folder with a space: transferred as HTCondor 25.0 reads it (commas split, not spaces)
    (tmp_path / "my data").mkdir()
    (tmp_path / "my data" / "train.zip").touch()
    spaced = _spec(tmp_path, "[train]\nepochs = 2\n", "spaced.toml")
    spaced.write_text(spaced.read_text().replace('"train.zip"', '"my data/train.zip"'))
    plan = plan_sweep(spaced, tmp_path / "run")
    assert plan.workflow.jobs["train"].submit["transfer_input_files"] == (
        "../../../my data/train.zip, ckpt"
    )
    args = split_condor_arguments(plan.workflow.jobs["train"].submit["arguments"])
    assert args[args.index("--data-dir") + 1] == "train.zip"


def test_a_collect_step_that_joins_no_member_leaves_no_earlier_result(tmp_path: Path) -> None:
    """An earlier collect step's ensemble and metrics.json must not pass for this run's."""
    run = tmp_path / "run"
    write_sweep(plan_sweep(_spec(tmp_path, "[ensemble]\nmembers = 2\n"), run))
    _fake_member(run, "m000", [0.2, 0.9], val_loss=0.5)
    (tmp_path / "labels.csv").write_text("fileid,is_dog\n1,0\n2,1\n")
    collect(run, labels=tmp_path / "labels.csv")
    assert (run / "dog_probs.csv").exists() and (run / "metrics.json").exists()
    (run / "members" / "m000" / "out" / "dog_probs.csv").unlink()  # run again: nothing came back
    result = collect(run, labels=tmp_path / "labels.csv")
    assert result.ensemble is None and result.joined == []
    assert not (run / "dog_probs.csv").exists() and not (run / "dog_probs.csv.json").exists()
    assert not (run / "metrics.json").exists()
    # without labels this time: the ensemble is written again, the old scores are not kept
    _fake_member(run, "m000", [0.2, 0.9], val_loss=0.5)
    collect(run, labels=tmp_path / "labels.csv")
    collect(run)
    assert (run / "dog_probs.csv").exists() and not (run / "metrics.json").exists()


def test_merge_without_sidecars_keeps_no_earlier_provenance(tmp_path: Path) -> None:
    from condorml.results.merge import merge_predictions

    (tmp_path / "a.csv").write_text("fileid,prob\n1,0.5\n")
    (tmp_path / "b.csv").write_text("fileid,prob\n2,0.25\n")
    (tmp_path / "out.csv.json").write_text('{"models": ["an earlier merge"]}')
    result = merge_predictions(tmp_path / "out.csv", [tmp_path / "a.csv", tmp_path / "b.csv"])
    assert not result.verified and not (tmp_path / "out.csv.json").exists()
    assert (tmp_path / "out.csv").read_text() == "fileid,prob\n1,0.5\n2,0.25\n"
