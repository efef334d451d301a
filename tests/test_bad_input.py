"""Every command, given the values a careless user types, fails with one line and no traceback.

Each case runs a command in-process (typer's CliRunner, so the whole table takes seconds) with one
bad value: a negative or zero number, a path that is a file where a folder belongs or the other
way round, a path under a file or in /proc, a missing path, a zip where a CSV belongs, a choice
that does not exist. What a user must see: a non-zero exit, no traceback, and one error line:
``condorml: error: ...`` from the library, or typer's usage error for a value typer refuses.
The commands fail before loading a model or reading images, so no case needs a trained model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from condorml.cli import app

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, synth: Path) -> dict[str, str]:
    """Paths for the commands: {file}, {dir}, {missing}, {zip}, {csv}, {labels}, {data}, {set},
    {model} (an untrained CNN's state_dict: enough for inference to get as far as writing)."""
    import torch

    from condorml.job.models import build_model
    from condorml.job.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("bad-input")
    torch.save(build_model("cnn", 224).state_dict(), root / "model.pth")
    make_synthetic_dataset(root / "set", n_train=4, n_test=1, size=(16, 16))
    (root / "file.txt").write_text("not what you think\n")
    (root / "dir").mkdir()
    (root / "preds.csv").write_text("fileid,prob\n1,0.9\n2,0.2\n")
    (root / "prob15.csv").write_text("fileid,prob\n1,0.9\n2,1.5\n")
    (root / "probnan.csv").write_text("fileid,prob\n1,nan\n2,0.2\n")
    (root / "dupes.csv").write_text("fileid,prob\n1,0.9\n1,0.2\n")
    (root / "spec.toml").write_text("[data]\ntrain = 3\n")
    return {
        "file": str(root / "file.txt"),
        "dir": str(root / "dir"),
        "missing": str(root / "missing"),
        "zip": str(synth / "test.zip"),
        "csv": str(root / "preds.csv"),
        "labels": str(synth / "test_labels.csv"),
        "data": str(synth),
        "set": str(root / "set"),
        "model": str(root / "model.pth"),
        "root": str(root),
    }


CASES = [
    # data synth
    "data synth {file}",
    "data synth {file}/x",
    "data synth /proc/x",
    "data synth {set}",  # a folder that already holds a set
    "data synth {root}/s1 --n-train -4",
    "data synth {root}/s2 --n-test -1",
    "data synth {root}/s3 --size 0x0",
    "data synth {root}/s4 --size big",
    "data synth {root}/s5 --n-train many",
    # train
    "train -d {missing} -c {root}/ck1",
    "train -d {data} -c {root}/ck2 --epochs 0",
    "train -d {data} -c {root}/ck3 --epochs -3",
    "train -d {data} -c {root}/ck4 --batch-size 0",
    "train -d {data} -c {root}/ck5 --workers -2",
    "train -d {data} -c {root}/ck6 --lr -1",
    "train -d {data} -c {root}/ck7 --model foo",
    "train -d {data} -c {root}/ck8 --epochs 3.5",
    "train -d {data} -c {root}/ck9 --val-fraction 1.5",
    "train -d {data} -c {root}/ck10 --image-size 8",
    "train -d {data} -c {file}/ck",
    "train -d {data} -c /proc/ck",
    "train -d {data} -c {root}/ck11 --pretrained-weights {missing}",
    # infer
    "infer -m {model} -i {zip} -o {zip}/x.csv",
    "infer -m {model} -i {zip} -o /proc/x.csv",
    "infer -m {model} -i {zip} -o {root}/i1.csv --workers -2",
    "infer -m {model} -i {zip} -o {root}/i2.csv --workers 0",
    "infer -m {model} -i {zip} -o {root}/i3.csv --batch-size 0",
    "infer -m {file} -i {missing} -o {root}/i4.csv",
    "infer -m {file} -i {csv} -o {root}/i5.csv",
    "infer -m {missing} -i {zip} -o {root}/i6.csv",
    "infer -m {dir} -i {zip} -o {root}/i7.csv",
    "infer -m {csv} -i {zip} -o {root}/i8.csv",
    "infer -m {model} -i {zip} -o {root}/i9.csv --shard 3/2",
    "infer -m {model} -i {zip} -o {root}/i10.csv --shard half",
    "infer -m {model} -i {zip} -o {root}/i11.csv --precision fp16",
    "infer -m {model} -i {zip} -o {root}/i12.csv --device tpu",
    # merge
    "merge {file}/m.csv {csv}",
    "merge /proc/m.csv {csv}",
    "merge {dir} {csv}",
    "merge {root}/m1.csv {zip}",
    "merge {root}/m2.csv {dir}",
    "merge {root}/m3.csv {missing}",
    "merge {csv} {csv}",
    "merge {root}/m4.csv",
    # evaluate
    "evaluate {zip} --labels {labels}",
    "evaluate {csv} --labels {zip}",
    "evaluate {dir} --labels {labels}",
    "evaluate {csv} --labels {dir}",
    "evaluate {missing} --labels {labels}",
    "evaluate {csv} --labels {labels} -o /proc/m.json",
    "evaluate {csv} --labels {labels} -o {file}/m.json",
    "evaluate {csv} --labels {labels} -o {dir}",
    "evaluate {root}/prob15.csv --labels {labels}",
    "evaluate {root}/probnan.csv --labels {labels}",
    "evaluate {root}/dupes.csv --labels {labels}",
    "evaluate {labels} --labels {csv}",  # the files swapped
    # sweep and collect
    "sweep {missing} -o {root}/run1",
    "sweep {dir} -o {root}/run2",
    "sweep {csv} -o {root}/run3",
    "sweep {root}/spec.toml -o {root}/run4",
    "sweep {root}/spec.toml -o {root}/run5 --backend slurm",
    "collect {missing}",
    "collect {file}",
    "collect {dir}",
    # run, watch, report
    "run {missing}",
    "run {file}",
    "run {dir}",
    "run {missing} --inject-evictions 2",
    "watch --once {missing}",
    "watch --once {file}",
    "watch --once {dir} --interval -5",
    "watch --once {dir} --interval 0",
    "watch --once {dir} --exit sometimes",
    "report {missing}",
    "report {file}",
    "report {dir}",
    # demo
    "demo --out {file}",
    "demo --out {root}/demo1 --epochs 0",
    "demo --out {root}/demo2 --epochs -1",
    "demo --out {root}/demo3 --inject-evictions 2",
    # submit
    "submit train -d {missing} -o {root}/t1.sub",
    "submit train -d {zip} -o {root}/t2.sub --pretrained-weights {missing}",
    "submit train -d {zip} -o {root}/t3.sub --cpus 0",
    "submit train -d {zip} -o {root}/t4.sub --gpus -1",
    "submit train -d {zip} -o {root}/t5.sub --memory lots",
    "submit train -d {zip} -o {root}/t6.sub --epochs 0",
    "submit train -d {zip} -o {root}/t7.sub --profile osg",
    "submit train -d {zip} -o {file}/t.sub",
    "submit train -d {zip} -o /proc/t.sub",
    "submit infer -m {missing} -i {zip} -o {root}/n1.sub",
    "submit infer -m {csv} -i {missing} -o {root}/n2.sub",
    "submit infer -m {csv} -i {zip} -o {root}/n3.sub --shards 0",
    "submit infer -m {csv} -i {zip} -o {root}/n4.sub --batch-size 0",
    "submit infer -m {csv} -i {zip} -o {root}/n5.sub --workers -2",
]


def assert_one_line_error(result) -> None:
    """A non-zero exit, no traceback, and one error line (usage errors included)."""
    output = result.stdout + result.stderr
    assert result.exit_code != 0, f"accepted: {output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in output
    lines = [line for line in result.stderr.splitlines() if not _LOG_LINE.match(line)]
    errors = [line for line in lines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("condorml: error: "), result.stderr


@pytest.mark.parametrize("args", CASES)
def test_bad_values_give_one_line_and_no_traceback(args: str, world: dict[str, str]) -> None:
    argv = [part.format(**world) for part in args.split()]
    assert_one_line_error(CliRunner().invoke(app, argv))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    option=st.sampled_from(["--workers", "--batch-size"]),
    value=st.integers(max_value=0) | st.sampled_from(["", "x", "1.5", "nan", "-0"]),
)
def test_inference_numbers_below_one_are_refused(
    option: str, value: int | str, world: dict[str, str]
) -> None:
    argv = ["infer", "-m", world["model"], "-i", world["zip"], "-o", f"{world['root']}/h.csv"]
    assert_one_line_error(CliRunner().invoke(app, [*argv, option, str(value)]))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    option=st.sampled_from(["--n-train", "--n-test", "--size"]),
    value=st.integers(max_value=-1) | st.sampled_from(["", "x", "1.5", "7x", "x7", "-8x8"]),
)
def test_synth_counts_and_sizes_that_cannot_be_are_refused(
    option: str, value: int | str, world: dict[str, str]
) -> None:
    out = Path(world["root"]) / "hyp-synth"
    assert_one_line_error(CliRunner().invoke(app, ["data", "synth", str(out), option, str(value)]))
    assert not out.exists()
