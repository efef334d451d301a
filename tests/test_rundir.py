"""The run folder: run.json as the sweep writes it, and RunDir's readers of a member's files."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import htcondor2
import pandas as pd
import pytest

from condorml.errors import CondormlError
from condorml.fileio import TMP_PREFIX
from condorml.htcondor.quoting import split_condor_arguments
from condorml.job import files
from condorml.monitor.gather import gather
from condorml.monitor.watch import Watch
from condorml.sweep.plan import plan_sweep, write_sweep
from condorml.sweep.rundir import RUN_FORMAT_VERSION, RunDir, RunInfo, write_run_info

PACKAGE = Path(__file__).parent.parent / "condorml"


def _sweep(tmp_path: Path, data: str = "", body: str = "") -> RunDir:
    """A run folder written by ``condorml sweep`` (no job run) from a spec in ``tmp_path/spec``,
    its data in ``tmp_path/data``: 2 members, 2 inference shards."""
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    for name in ("train.zip", "test.zip"):
        (tmp_path / "data" / name).touch()
    (tmp_path / "data" / "labels.csv").write_text("fileid,is_dog\n1,0\n2,1\n3,1\n")
    (tmp_path / "spec").mkdir(exist_ok=True)
    spec = tmp_path / "spec" / "sweep.toml"
    spec.write_text(
        data
        or '[data]\ntrain = "../data/train.zip"\ntest = "../data/test.zip"\n'
        'labels = "../data/labels.csv"\n'
    )
    with open(spec, "a") as handle:
        handle.write(body or "[ensemble]\nmembers = 2\n[inference]\nshards = 2\n")
    run = tmp_path / "runs" / "first"
    written = write_sweep(plan_sweep(spec, run))
    assert run / "run.json" in written
    return RunDir(run)


def _write_member(run: RunDir, member: str, epoch: int = 2, probs: dict | None = None) -> None:
    """A member's training files as a finished training job leaves them, and its predictions."""
    ckpt = run.member(member).ckpt
    state = {"epoch": epoch, "batch": 0, "finished": True, "epochs": 2, "wall_seconds": 12.345}
    (ckpt / "state.json").write_text(json.dumps(state))
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 0.5 / e, "val_acc": 0.6 + e / 10}
            for e in range(1, epoch + 1)]  # fmt: skip
    pd.DataFrame(rows).to_csv(ckpt / "metrics.csv", index=False)
    for name, text in (probs or {}).items():
        run.member(member).out.mkdir(exist_ok=True)
        (run.member(member).out / name).write_text("fileid,prob\n" + text)


def test_run_json_records_the_spec_data_members_and_shards(tmp_path: Path) -> None:
    run = _sweep(tmp_path)
    record = json.loads(run.run_json.read_text())
    assert record["format"] == "condorml.run" and record["version"] == RUN_FORMAT_VERSION
    assert record["spec_sha256"] == hashlib.sha256(run.spec_copy.read_bytes()).hexdigest()
    assert record["members"] == ["m000", "m001"] and record["shards"] == 2
    info = run.info()
    assert info is not None and info.members == ("m000", "m001")
    # as the jobs see them: what the submit files say, without reading them back
    infer = htcondor2.Submit(run.submit_file("infer").read_text())
    inputs = [entry.strip() for entry in infer["transfer_input_files"].split(",")]
    assert info.data["test"].job == "../../../../data/test.zip" and info.data["test"].job in inputs
    train = htcondor2.Submit(run.submit_file("train").read_text())
    assert info.data["train"].job in train["transfer_input_files"]
    collect = split_condor_arguments(htcondor2.Submit(run.submit_file("collect").read_text())["arguments"])  # fmt: skip
    assert (
        collect[collect.index("--labels") + 1] == info.data["labels"].job == "../../data/labels.csv"
    )
    # and as local paths: recorded absolute, found from the run folder
    assert info.data["labels"].local == str(tmp_path / "data" / "labels.csv")
    assert run.data_path(info, "labels") == (tmp_path / "data" / "labels.csv").resolve()
    assert run.data_path(info, "test") == (tmp_path / "data" / "test.zip").resolve()


def test_a_moved_run_folder_finds_data_moved_with_it_and_urls_have_no_local_path(
    tmp_path: Path,
) -> None:
    run = _sweep(tmp_path / "a")
    info = run.info()
    assert info is not None
    os.rename(tmp_path / "a", tmp_path / "b")  # the run folder and its data, together
    moved = RunDir(tmp_path / "b" / "runs" / "first")
    assert moved.data_path(info, "test") == (tmp_path / "b" / "data" / "test.zip").resolve()
    remote = _sweep(tmp_path / "c", data='[data]\ntrain = "../data/train.zip"\ntest = "osdf:///x/test.zip"\n')  # fmt: skip
    info = remote.info()
    assert info is not None and info.data["test"].job == "osdf:///x/test.zip"
    assert info.data["test"].local is None and remote.data_path(info, "test") is None
    assert "labels" not in info.data and remote.data_path(info, "labels") is None


def test_run_json_is_replaced_atomically_and_a_foreign_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _sweep(tmp_path)
    before = run.run_json.read_text()
    info = run.info()
    assert info is not None
    monkeypatch.setattr("condorml.fileio.os.replace", lambda *_: (_ for _ in ()).throw(OSError("full")))  # fmt: skip
    with pytest.raises(OSError, match="full"):
        write_run_info(run.path, RunInfo("0" * 64, ("m000",), 1))
    monkeypatch.undo()
    assert run.run_json.read_text() == before  # a failed write leaves the old file whole
    assert not list(run.path.glob(f"{TMP_PREFIX}*"))
    assert RunInfo.from_json(info.to_json(), run.run_json) == info
    run.run_json.write_text(json.dumps({**json.loads(before), "version": 99}))
    with pytest.raises(CondormlError, match="version 99; this condorml reads version 1"):
        run.info()
    run.run_json.write_text("{")
    with pytest.raises(CondormlError, match=r"not a condorml run\.json"):
        run.info()
    run.run_json.unlink()
    assert run.info() is None  # a run folder written before run.json


def test_a_members_state_metrics_and_predictions(tmp_path: Path) -> None:
    run = _sweep(tmp_path)
    m0, m1 = run.member("m000"), run.member("m001")
    assert m0.state() is None and m0.metrics() is None and m0.training_row() == {}
    assert m0.predictions("inference held: x").reason == "no predictions (inference held: x)"
    _write_member(run, "m000", probs={"dog_probs.part0.csv": "1,0.5\n", "dog_probs.part1.csv": "2,0.25\n"})  # fmt: skip
    state = m0.state()
    assert state is not None and (state.epoch, state.epochs, state.finished) == (2, 2, True)
    assert len(m0.metrics()) == 2
    row = m0.training_row()
    assert row["epochs_done"] == 2 and row["wall_seconds"] == 12.3 and row["val_acc"] == 0.8
    assert [p.name for p in m0.shard_parts()] == ["dog_probs.part0.csv", "dog_probs.part1.csv"]
    scratch = tmp_path / "scratch.csv"
    merged = m0.predictions(merge_to=scratch)  # a report merges elsewhere, never in the run
    assert merged.complete and merged.csv == scratch and not m0.predictions_csv.exists()
    assert m0.predictions().csv == m0.predictions_csv  # the collect step merges in place
    assert pd.read_csv(m0.predictions_csv)["fileid"].tolist() == [1, 2]
    _write_member(run, "m001", probs={"dog_probs.part0.csv": "1,0.5\n", "dog_probs.part1.csv": "1,0.5\n"})  # fmt: skip
    overlapping = m1.predictions()
    assert not overlapping.complete
    assert overlapping.reason.startswith("incomplete inference shards (")
    (m1.ckpt / "state.json").write_text('{"epoch": 1')  # torn
    with pytest.raises(CondormlError, match=r"unreadable .*state\.json"):
        m1.state()


def test_gather_takes_the_runs_labels_and_images_from_run_json(tmp_path: Path) -> None:
    run = _sweep(tmp_path)
    _write_member(run, "m000", probs={"dog_probs.csv": "1,0.2\n2,0.9\n3,0.6\n"})
    data = gather(run.path)
    assert data.labels is not None and data.labels.tolist() == [0, 1, 1]
    assert data.images == (tmp_path / "data" / "test.zip").resolve()
    assert data.scores is not None and "m000" in set(data.scores["member"])
    assert not [note for note in data.missing if "run.json" in note]
    run.run_json.unlink()  # written by an older condorml: no parsing of submit files instead
    old = gather(run.path)
    assert old.labels is None and old.images is None
    (note,) = [note for note in old.missing if "run.json" in note]
    assert f"condorml sweep {run.spec_copy} --out {run.path}" in note


def test_watch_shows_a_members_progress_from_its_files(tmp_path: Path) -> None:
    run = _sweep(tmp_path)
    _write_member(run, "m001", epoch=1)
    members = {m.member: m for m in Watch([run.path]).snapshot().members}
    assert (members["m001"].epoch, members["m001"].epochs) == (1, 2)
    assert members["m001"].val_acc == pytest.approx(0.7)
    assert members["m000"].epoch is None and members["m000"].val_acc is None


def test_the_job_codes_file_names_are_the_readers(tmp_path: Path) -> None:
    """job/files.py names what a job writes, for readers that must not import torch: every
    module that spells one of those names out (instead of importing it) spells it the same."""
    names = {n: getattr(files, n) for n in dir(files) if n.isupper()}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in names:
                        assert node.value.value == names[target.id], (path, target.id)
