"""Submit descriptions: what HTCondor's parser reads back, hostile values, wrappers, committed files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import htcondor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from condorml.backends import condor as schedd_module
from condorml.cli import app
from condorml.config import InferConfig, TrainConfig
from condorml.errors import CondormlError
from condorml.htcondor.passthrough import extra_commands
from condorml.htcondor.quoting import condor_arguments, split_condor_arguments
from condorml.htcondor.resources import Container, Profile, Resources, chtc_job_length
from condorml.htcondor.submit import infer_description, train_description, write_job

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "htcondor"  # real HTCondor 25.0 output
GPU = Resources(
    cpus=4, memory="6GB", disk="10GB", gpus=1, gpu_capability_min=7.5, gpu_memory_min="4096"
)
IMAGE = Container(image="docker://condorml/condorml:0.1.0")


def _config(**kw) -> TrainConfig:
    defaults = {
        "data_dir": Path("x"),
        "checkpoint_dir": Path("y"),
        "epochs": 20,
        "checkpoint_every": 5,
    }
    return TrainConfig(**{**defaults, **kw})


def _write_train(tmp_path: Path, data: str = "data/train.zip", **kw) -> htcondor2.Submit:
    resources = kw.pop("resources", GPU)
    profile = kw.pop("profile", Profile("chtc"))
    job = train_description(_config(**kw), data, resources, IMAGE, profile, tmp_path)
    written = write_job(job, tmp_path / "train.sub")
    return htcondor2.Submit(written.submit_file.read_text())


def _job_args(parsed: htcondor2.Submit) -> list[str]:
    return split_condor_arguments(parsed.expand("arguments"))


def test_training_job_is_self_checkpointing_as_htcondor_reads_it(tmp_path: Path) -> None:
    parsed = _write_train(tmp_path)
    assert parsed.expand("checkpoint_exit_code") == "85"
    assert parsed.expand("transfer_checkpoint_files") == "ckpt"
    assert parsed.expand("transfer_output_files") == "ckpt"
    assert parsed.expand("when_to_transfer_output") == "ON_EXIT"
    assert "preserve_relative_paths" not in parsed  # ckpt/ is at the top of the sandbox
    assert parsed.expand("log") == "train.log"
    assert (parsed["output"], parsed["error"]) == (
        "train.$(ClusterId).$(ProcId).out",
        "train.$(ClusterId).$(ProcId).err",
    )
    assert parsed.expand("executable") == "condorml_train.sh"
    # local paths are written relative to the submit file's folder
    assert parsed.expand("transfer_input_files") == os.path.relpath(
        os.path.abspath("data/train.zip"), tmp_path
    )
    assert parsed.getQArgs() == "1"


def test_training_arguments_are_a_valid_condorml_command_line(tmp_path: Path) -> None:
    config = _config(lr=0.01, optimizer="sgd", momentum=0.8, seed=3, checkpoint_minutes=30.0)
    job = train_description(config, "train.zip", GPU, IMAGE, Profile(), tmp_path)
    parsed = htcondor2.Submit(write_job(job, tmp_path / "t.sub").submit_file.read_text())
    args = _job_args(parsed)
    assert args[0] == "train"
    context = get_command(app).commands["train"].make_context("train", args[1:])  # the real parser
    params = context.params
    assert (params["data_dir"], params["checkpoint_dir"]) == (Path("train.zip"), Path("ckpt"))
    for name in (
        "epochs",
        "checkpoint_every",
        "lr",
        "optimizer",
        "momentum",
        "seed",
        "checkpoint_minutes",
    ):
        assert params[name] == getattr(config, name), name
    assert params["no_exit_on_checkpoint"] is False  # a job must exit 85


def test_infer_arguments_are_a_valid_condorml_command_line(tmp_path: Path) -> None:
    job = infer_description(
        InferConfig(
            ("a/m0.pth", "b/m1.pth"), "osdf:///chtc/staging/u/test.zip", shards=4, with_stats=True
        ),
        Resources(cpus=4),
        IMAGE,
        Profile(),
        tmp_path,
    )
    parsed = htcondor2.Submit(write_job(job, tmp_path / "i.sub").submit_file.read_text())
    assert parsed.getQArgs() == "4"
    args = _job_args(parsed)  # expanded for ProcId 0
    params = get_command(app).commands["infer"].make_context("infer", args[1:]).params
    assert params["model"] == [Path("m0.pth"), Path("m1.pth")] and params["images"] == Path(
        "test.zip"
    )
    # a folder: the job names the part after the models' classes (out/dog_probs.part0.csv)
    assert params["shard"] == "0/4" and params["output"] == "out/"
    local = [os.path.relpath(os.path.abspath(p), tmp_path) for p in ("a/m0.pth", "b/m1.pth")]
    expected = ", ".join([*local, "osdf:///chtc/staging/u/test.zip"])  # URLs pass through
    assert parsed.expand("transfer_input_files") == expected
    assert parsed.expand("transfer_output_files") == "out"


def test_gpu_and_checkpoint_commands_have_the_form_condor_submit_accepted(tmp_path: Path) -> None:
    """Ours against the description a real condor_submit turned into dump/gpu.ad."""
    fixture = htcondor2.Submit((FIXTURES / "dump" / "gpu.sub").read_text())
    ad = (FIXTURES / "dump" / "gpu.ad").read_text()
    assert "RequireGPUs=Capability >= GPUsMinCapability && GlobalMemoryMb >= GPUsMinMemory" in ad
    ours = _write_train(tmp_path)
    for key in ("universe", "checkpoint_exit_code", "request_gpus", "gpus_minimum_capability",
                "gpus_minimum_memory", "should_transfer_files", "when_to_transfer_output",
                "My.WantGPULab", "My.GPUJobLength", "My.is_resumable"):  # fmt: skip
        assert ours.expand(key) == fixture.expand(key), key
    assert ours.expand("container_image").startswith("docker://")


def test_declared_outputs_are_only_folders_the_wrapper_creates(tmp_path: Path) -> None:
    train = _write_train(tmp_path)
    infer = htcondor2.Submit(
        write_job(
            infer_description(
                InferConfig(("m.pth",), "t.zip"), Resources(), Container(), Profile(), tmp_path
            ),
            tmp_path / "i.sub",
        ).submit_file.read_text()
    )
    for parsed, folder in ((train, "ckpt"), (infer, "out")):
        assert parsed.expand("transfer_output_files") == folder
        wrapper = (tmp_path / parsed.expand("executable")).read_text()
        assert f"mkdir -p {folder}" in wrapper
        assert wrapper.index(f"mkdir -p {folder}") < wrapper.index("exec condorml")


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (Resources(gpu_capability_min=7.5), "--gpu-capability-min without --gpus"),
        (Resources(gpu_memory_min="4GB"), "--gpu-memory-min without --gpus"),
        (Resources(require_gpus="Capability >= 8"), "--require-gpus without --gpus"),
        (
            Resources(gpus=1, gpu_capability_min=8.0, gpu_capability_max=7.0),
            "above --gpu-capability-max",
        ),
        (Resources(gpus=1, require_gpus="Capability >="), "not a ClassAd expression"),
        (Resources(gpus=1, gpu_runtime_min="twelve"), "a CUDA version"),
        (Resources(memory="lots"), "--memory 'lots'"),
    ],
)
def test_impossible_resources_are_refused(
    tmp_path: Path, resources: Resources, message: str
) -> None:
    with pytest.raises(CondormlError, match=re.escape(message)):
        train_description(_config(), "train.zip", resources, IMAGE, Profile(), tmp_path)


def test_gpu_options_reach_the_file(tmp_path: Path) -> None:
    resources = Resources(gpus=2, gpu_capability_min=8.0, gpu_capability_max=9.0, gpu_memory_min="16GB",
                          gpu_runtime_min="12.1", require_gpus='DeviceName != "Tesla T4"')  # fmt: skip
    parsed = _write_train(tmp_path, resources=resources, profile=Profile())
    assert [parsed.expand(k) for k in ("request_gpus", "gpus_minimum_capability", "gpus_maximum_capability",
            "gpus_minimum_memory", "gpus_minimum_runtime", "require_gpus")] == [
        "2", "8", "9", "16GB", "12.1", 'DeviceName != "Tesla T4"']  # fmt: skip
    assert not [k for k in parsed if k.startswith("My.")]  # no profile, nothing pool-specific


def test_chtc_profile_picks_a_job_length_that_fits_a_run(tmp_path: Path) -> None:
    assert _write_train(tmp_path).expand("My.GPUJobLength") == '"short"'  # 60-minute checkpoints
    parsed = _write_train(tmp_path, checkpoint_minutes=15 * 60.0)
    assert parsed.expand("My.GPUJobLength") == '"medium"'
    assert "--checkpoint-minutes" in _job_args(parsed)
    assert chtc_job_length(6 * 24 * 60 * 0.7) == "long"
    with pytest.raises(CondormlError, match="exceeds CHTC's longest GPU job"):
        chtc_job_length(7 * 24 * 60)
    cpu_only = _write_train(tmp_path, resources=Resources(cpus=2))
    assert not [k for k in cpu_only if k.startswith("My.")]
    # 0 turns time-based checkpoints off: no run length is known, so no job length is guessed
    with pytest.raises(CondormlError, match="give --gpu-job-length"):
        _write_train(tmp_path, checkpoint_minutes=0.0)


HOSTILE = [
    "train.zip\nqueue\nexecutable = /bin/evil",
    "train.zip\r\nexecutable=/bin/sh",
    "$(HOME)/train.zip",
    "$ENV(SECRET).zip",
    'tr"ain.zip',
    "a.zip, /etc/passwd",
    "train\tzip.zip",
    "train.zip\\",  # a trailing backslash continues the line: it would swallow the next command
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_inputs_are_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with pytest.raises(CondormlError):
        train_description(_config(), value, GPU, IMAGE, Profile(), tmp_path)
    with pytest.raises(CondormlError):
        infer_description(
            InferConfig((value,), "t.zip"), Resources(), Container(), Profile(), tmp_path
        )
    with pytest.raises(CondormlError):
        infer_description(
            InferConfig(("m.pth",), "t.zip", output=value),
            Resources(),
            Container(),
            Profile(),
            tmp_path,
        )
    # The command that writes refuses them too, before writing anything
    monkeypatch.chdir(tmp_path)
    for name in ("train.zip", "model.pth", "test.zip"):
        (tmp_path / name).touch()
    out = tmp_path / "out"
    out.mkdir()
    for command in (["train", "-d", value], ["infer", "-m", value, "-i", "test.zip"],
                    ["infer", "-m", "model.pth", "-i", "test.zip", "--csv", value]):  # fmt: skip
        result = CliRunner().invoke(app, ["submit", *command, "-o", "out/job.sub"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert list(out.iterdir()) == [], command
    # ... where a valid value writes the job and its wrapper (the check above can fail)
    valid = CliRunner().invoke(app, ["submit", "infer", "-m", "model.pth", "-i", "test.zip",
                                     "-o", "out/job.sub"])  # fmt: skip
    assert valid.exit_code == 0, valid.output
    assert sorted(p.name for p in out.iterdir()) == ["condorml_infer.sh", "job.sub"]


@pytest.mark.parametrize(
    "image",
    [
        "docker://repo/img:1\nqueue",
        "docker://Repo/Img:1",
        "docker://a:b$(x)",
        "shub://x/y",
        "library://x",
    ],
)
def test_hostile_or_unsupported_images_are_refused(tmp_path: Path, image: str) -> None:
    with pytest.raises(CondormlError):
        train_description(_config(), "train.zip", GPU, Container(image=image), Profile(), tmp_path)


def test_hostile_cli_values_exit_2_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["submit", "train", "-d", "x.zip\nqueue", "-o", str(tmp_path / "t.sub")]
    )
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "newline" in result.output
    assert not (tmp_path / "t.sub").exists()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="$"),
            max_size=12,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_argument_reaches_the_job_intact(tokens: list[str]) -> None:
    """Quote, write as a submit file, parse with HTCondor, split by the manual's rules."""
    text = f"executable = a.sh\narguments = {condor_arguments(tokens)}\nqueue\n"
    parsed = htcondor2.Submit(text)
    assert set(parsed) == {"executable", "arguments"}
    assert split_condor_arguments(parsed.expand("arguments")) == tokens


def test_the_splitter_follows_the_manuals_examples() -> None:
    assert split_condor_arguments('"3 simple arguments"') == ["3", "simple", "arguments"]
    assert split_condor_arguments("\"one 'two with spaces' 3\"") == ["one", "two with spaces", "3"]
    assert split_condor_arguments("\"one \"\"two\"\" 'spacey ''quoted'' argument'\"") == [
        "one", '"two"', "spacey 'quoted' argument",
    ]  # fmt: skip


def test_a_container_training_job_shares_the_hosts_network_for_chirp(tmp_path: Path) -> None:
    """On the pool (HTCondor 25.0.13, Docker runtime) a container job's trainer found no Chirp
    proxy ("Connection refused") on its bridge network; with docker_network_type = host its
    progress reached the job ad. Only training jobs publish progress; vanilla jobs need none."""

    def parsed(job):
        return htcondor2.Submit(write_job(job, tmp_path / "t.sub").submit_file.read_text())

    for container in (IMAGE, Container(docker_image="condorml/condorml:0.1.0")):
        job = parsed(train_description(_config(), "train.zip", GPU, container, Profile(), tmp_path))
        assert (job["want_io_proxy"], job["docker_network_type"]) == ("true", "host")
    vanilla = parsed(
        train_description(_config(), "train.zip", GPU, Container(), Profile(), tmp_path)
    )
    assert "docker_network_type" not in vanilla
    infer = parsed(infer_description(InferConfig(("m.pth",), "t.zip"), Resources(), IMAGE,
                                     Profile(), tmp_path))  # fmt: skip
    assert "docker_network_type" not in infer


def test_docker_universe_overrides_the_entry_point(tmp_path: Path) -> None:
    job = train_description(
        _config(),
        "train.zip",
        GPU,
        Container(docker_image="condorml/condorml:0.1.0"),
        Profile(),
        tmp_path,
    )
    parsed = htcondor2.Submit(write_job(job, tmp_path / "t.sub").submit_file.read_text())
    assert (parsed["universe"], parsed["docker_image"], parsed["docker_override_entrypoint"]) == (
        "docker",
        "condorml/condorml:0.1.0",
        "true",
    )
    with pytest.raises(CondormlError, match="give one"):
        train_description(
            _config(),
            "train.zip",
            GPU,
            Container(image="docker://a/b:1", docker_image="a/b:1"),
            Profile(),
            tmp_path,
        )


def _listing_sandbox(submit_file: Path, tmp_path: Path) -> list[str]:
    """The files the local backend puts in the job's sandbox for ``submit_file``."""
    from condorml.backends.local.jobspec import load_jobs
    from condorml.backends.local.sandbox import prepare_sandbox

    class Events:  # the job's event log, ignored here
        def __getattr__(self, _name):
            return lambda *args, **kwargs: None

    (job,) = load_jobs(submit_file, submit_file.parent, 1)
    sandbox = tmp_path / "scratch"
    prepare_sandbox(job, Events(), sandbox, tmp_path / "spool")
    return sorted(p.relative_to(sandbox).as_posix() for p in sandbox.rglob("*") if p.is_file())


def test_ensemble_models_named_alike_keep_their_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's layout (m000/model.pth, m001/model.pth): one job, both models, no collision.

    On HTCondor 25.0 (checked on the pool): with preserve_relative_paths a relative input keeps its
    folders in the sandbox, an absolute one lands at the top, and one with '..' is held.
    """
    monkeypatch.chdir(tmp_path)
    for name in ("m000/model.pth", "m001/model.pth", "data/test.zip"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "jobs").mkdir()
    result = CliRunner().invoke(app, ["submit", "infer", "-m", "m000/model.pth", "-m", "m001/model.pth",
                                      "-i", "data/test.zip", "-o", "jobs/infer.sub"])  # fmt: skip
    assert (
        result.exit_code == 2 and result.output.count("\n") == 1
    )  # '..' would put the job on hold
    assert "would arrive in the job as model.pth" in result.output
    result = CliRunner().invoke(app, ["submit", "infer", "-m", "m000/model.pth", "-m", "m001/model.pth",
                                      "-i", "data/test.zip", "-o", "infer.sub", "--with-stats"])  # fmt: skip
    assert result.exit_code == 0, result.output
    parsed = htcondor2.Submit((tmp_path / "infer.sub").read_text())
    assert parsed["preserve_relative_paths"] == "true"
    assert parsed["transfer_input_files"] == "m000/model.pth, m001/model.pth, data/test.zip"
    args = _job_args(parsed)
    params = get_command(app).commands["infer"].make_context("infer", args[1:]).params
    assert params["model"] == [Path("m000/model.pth"), Path("m001/model.pth")]
    assert params["images"] == Path("data/test.zip")
    # the local backend puts them where HTCondor does, so the job finds its inputs
    assert _listing_sandbox(tmp_path / "infer.sub", tmp_path) == [
        "condorml_infer.sh", "data/test.zip", "m000/model.pth", "m001/model.pth",
    ]  # fmt: skip
    # images outside the submit file's folder: written absolute, they land at the top
    job = infer_description(InferConfig(("jobs/a/model.pth", "jobs/b/model.pth"), "data/test.zip"),
                            Resources(), Container(), Profile(), tmp_path / "jobs")  # fmt: skip
    assert job.submit["transfer_input_files"] == (
        f"a/model.pth, b/model.pth, {tmp_path.as_posix()}/data/test.zip"
    )
    assert split_condor_arguments(job.submit["arguments"])[:7] == [
        "infer", "--model", "a/model.pth", "--model", "b/model.pth", "--images", "test.zip",
    ]  # fmt: skip
    # distinct names: the flat sandbox, as before
    flat = infer_description(InferConfig(("a/m0.pth", "b/m1.pth"), "t.zip"), Resources(),
                             Container(), Profile(), tmp_path)  # fmt: skip
    assert "preserve_relative_paths" not in flat.submit


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["train", "-d", "missing/train.zip"], "--data-dir missing/train.zip"),
        (["train", "-d", "train.zip", "--model", "resnet18", "--pretrained-weights", "w.pth"],
         "--pretrained-weights w.pth"),
        (["train", "-d", "train.zip", "--container-image", "img.sif"], "--container-image img.sif"),
        (["infer", "-m", "model.pth", "-m", "m1/model.pth", "-i", "test.zip"], "--model m1/model.pth"),
        (["infer", "-m", "model.pth", "-i", "images.zip"], "--images images.zip"),
    ],
)  # fmt: skip
def test_missing_local_inputs_are_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], option: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("train.zip", "test.zip", "model.pth"):
        (tmp_path / name).touch()
    result = CliRunner().invoke(app, ["submit", *command, "-o", "job.sub"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert f"{option}: no such file or folder (looked for {tmp_path}/" in result.output
    assert not (tmp_path / "job.sub").exists()


def test_urls_are_not_checked_and_existing_inputs_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pth").touch()
    for command in (["train", "-d", "osdf:///chtc/staging/u/train.zip"],
                    ["infer", "-m", "model.pth", "-i", "https://example.org/test.zip"]):  # fmt: skip
        result = CliRunner().invoke(app, ["submit", *command, "-o", "job.sub"])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--val-fraction", "1.5"], "--val-fraction 1.5: must be at least 0 and below 1"),
        (["--image-size", "8"], "--image-size 8: too small for the cnn model; use 37 or more"),
        (["--model", "resnet81"], "--model resnet81: unknown model; closest: resnet18"),
        (["--model", "net.txt:Net"], "a model file reference is FILE.py:CLASS"),
        (["--model", "resnet18", "--freeze-backbone"], "--freeze-backbone: needs pretrained weights"),
        (["--momentum", "1.5", "--optimizer", "sgd"], "--momentum 1.5: must be at least 0 and below 1"),
        (["--memory", "2"], "--memory '2': 2 without a unit is 2 MiB, too little for a job"),
        (["--seed", "-1"], "--seed -1: must be at least 0"),
    ],
)  # fmt: skip
def test_training_options_out_of_range_are_refused_when_the_job_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], message: str
) -> None:
    """The ranges of condorml.config.OPTION_RULES, on the command line of condorml submit train."""
    monkeypatch.chdir(tmp_path)
    for name in ("train.zip", "w.pth"):
        (tmp_path / name).touch()
    result = CliRunner().invoke(app, ["submit", "train", "-d", "train.zip", *options])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "train.sub").exists()


def test_the_smallest_image_sizes_are_the_models_own() -> None:
    from condorml.architectures import CNN_MIN_IMAGE_SIZE
    from condorml.job.models import build_model, cnn_feature_side

    assert cnn_feature_side(CNN_MIN_IMAGE_SIZE) == 1
    assert cnn_feature_side(CNN_MIN_IMAGE_SIZE - 1) == 0
    # a torchvision model's own limit, found by running it on the meta device
    with pytest.raises(CondormlError, match="vit_b_16: cannot take 64-pixel images"):
        build_model("vit_b_16", 64)


def test_paths_with_spaces_are_transferred_as_htcondor_reads_them(tmp_path: Path) -> None:
    """HTCondor 25.0 splits transfer lists at commas only (checked on the pool: 'a b/x.zip'
    arrives as x.zip; a quoted name is looked for with its quotes and the job is held)."""
    job = train_description(_config(), "my data/train.zip", GPU, IMAGE, Profile(), tmp_path)
    parsed = htcondor2.Submit(write_job(job, tmp_path / "t.sub").submit_file.read_text())
    entry = parsed.expand("transfer_input_files")
    assert entry.endswith("my data/train.zip") and '"' not in entry
    with pytest.raises(CondormlError, match="commas, quotes and tabs"):
        train_description(_config(), "my\tdata/train.zip", GPU, IMAGE, Profile(), tmp_path)


# --- the wrappers --------------------------------------------------------------------------------


def test_wrappers_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run(
        [shellcheck, *map(str, sorted((ROOT / "submit").glob("*.sh")))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def _fake_condorml(bin_dir: Path, body: str) -> dict[str, str]:
    bin_dir.mkdir()
    fake = bin_dir / "condorml"
    fake.write_text(f"#!/bin/bash\n{body}\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_wrapper_returns_exit_code_85_unchanged_and_makes_the_output_folder(tmp_path: Path) -> None:
    env = _fake_condorml(tmp_path / "bin", 'echo "$@" > args.txt; exit 85')
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    proc = subprocess.run(
        [str(ROOT / "submit" / "condorml_train.sh"), "train", "--data-dir", "my data.zip"],
        cwd=sandbox,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 85
    assert (sandbox / "ckpt").is_dir()
    assert (sandbox / "args.txt").read_text() == "train --data-dir my data.zip\n"


def test_wrapper_passes_sigterm_to_condorml(tmp_path: Path) -> None:
    env = _fake_condorml(
        tmp_path / "bin",
        "trap 'echo got-term; exit 143' TERM; for _ in $(seq 300); do sleep 0.1; done",
    )
    proc = subprocess.Popen([str(ROOT / "submit" / "condorml_train.sh"), "train"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # what HTCondor does on an eviction
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 143 and "got-term" in out


def test_wrapper_without_condorml_fails_clearly_but_leaves_the_output(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        ["/bin/bash", str(ROOT / "submit" / "condorml_infer.sh"), "infer"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        pytest.skip("a system python here has condorml importable")
    assert proc.returncode == 75 and "condorml is not installed on" in proc.stderr
    assert "getenv = PATH" in proc.stderr  # and what to do about it
    assert (tmp_path / "out").is_dir()


def test_wrapper_runs_condorml_with_the_interpreter_the_submit_file_names(tmp_path: Path) -> None:
    """A job's minimal environment has no PATH to condorml; --python names the interpreter."""
    env = {"HOME": str(tmp_path)}  # what HTCondor gives a job: no PATH, no PYTHONPATH
    wrapper = str(ROOT / "submit" / "condorml_infer.sh")
    found = subprocess.run(["/bin/bash", wrapper, "--python", sys.executable, "--version"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert found.returncode == 0 and "condorml" in found.stdout
    moved = subprocess.run(["/bin/bash", wrapper, "--python", str(tmp_path / "gone" / "python"),
                            "--version"], cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert moved.returncode == 75  # transient: another machine may have it
    assert (
        f"{tmp_path}/gone/python (named by --python in the submit file) cannot run condorml"
        in moved.stderr
    )


@pytest.mark.slow
def test_the_real_trainer_through_the_wrapper_exits_85_then_0(
    tmp_path: Path, synth: Path, cache_dir: Path
) -> None:
    shutil.copy(synth / "train.zip", tmp_path / "train.zip")
    job = train_description(
        _config(epochs=2, checkpoint_every=1, image_size=48, batch_size=16, precision="fp32"),
        "train.zip",
        Resources(),
        Container(),
        Profile(),
        tmp_path,
    )
    written = write_job(job, tmp_path / "train.sub")
    args = _job_args(htcondor2.Submit(written.submit_file.read_text()))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "_CONDOR_SCRATCH_DIR": str(tmp_path),
    }
    codes = [
        subprocess.run(
            [str(written.wrapper), *args], cwd=tmp_path, env=env, capture_output=True
        ).returncode
        for _ in range(2)
    ]
    assert codes == [85, 0]
    assert (tmp_path / "ckpt" / "model.pth").exists()


# --- schedd --------------------------------------------------------------------------------------


def _submit_infer(tmp_path: Path, *extra: str):
    for name in ("m.pth", "t.zip"):
        (tmp_path / name).touch()
    model, images = str(tmp_path / "m.pth"), str(tmp_path / "t.zip")
    args = ["submit", "infer", "-m", model, "-i", images, "-o", str(tmp_path / "i.sub"), *extra]
    return CliRunner().invoke(app, args)


class _FakeSchedd:
    def __init__(self) -> None:
        self.submitted = []

    def submit(self, description):
        self.submitted.append(description)

        class Result:
            def cluster(self):
                return 42

        return Result()


def test_submit_hands_the_description_to_a_schedd_with_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeSchedd()
    monkeypatch.setattr(htcondor2, "Schedd", lambda: fake)
    monkeypatch.setattr(schedd_module, "pool_tool", lambda _name: None)
    result = _submit_infer(tmp_path, "--shards", "3", "--submit")
    assert result.exit_code == 0, result.output
    assert "cluster 42" in result.output and "condor_watch_q" in result.output
    (description,) = fake.submitted
    assert description["initialdir"] == str(tmp_path.resolve())
    assert description["executable"] == str(tmp_path.resolve() / "condorml_infer.sh")
    assert description.getQArgs() == "3"


def test_no_schedd_is_one_line_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable():
        raise htcondor2.HTCondorException("Unable to locate local daemon.")

    monkeypatch.setattr(htcondor2, "Schedd", unreachable)
    monkeypatch.setattr(schedd_module, "pool_tool", lambda _name: None)
    result = _submit_infer(tmp_path, "--submit")
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(
        "condorml: error: no HTCondor schedd accepted it (Unable to locate local daemon.)"
    )
    assert "condor_submit i.sub" in last


# --- committed files -----------------------------------------------------------------------------


def _documented_commands() -> list[list[str]]:
    text = (ROOT / "submit" / "README.md").read_text()
    block = text.split("<!-- generate:", 1)[1].split("<!-- end generate -->", 1)[0]
    block = block.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_committed_submit_files_are_what_the_documented_commands_generate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = _documented_commands()
    assert len(commands) == 2 and all(c[:2] == ["condorml", "submit"] for c in commands)
    (tmp_path / "submit" / "ckpt").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    for name in ("data/train.zip", "data/test.zip", "submit/ckpt/model.pth"):  # inputs must exist
        (tmp_path / name).touch()
    monkeypatch.chdir(tmp_path)
    for command in commands:
        result = CliRunner().invoke(app, command[1:])
        assert result.exit_code == 0, result.output
    generated = sorted(p.name for p in (tmp_path / "submit").iterdir() if p.is_file())
    assert generated == ["condorml_infer.sh", "condorml_train.sh", "infer.sub", "train.sub"]
    for name in generated:
        assert (tmp_path / "submit" / name).read_text() == (ROOT / "submit" / name).read_text(), (
            f"submit/{name} differs from what submit/README.md's commands generate: rerun them from the repository root"
        )
    assert os.access(ROOT / "submit" / "condorml_train.sh", os.X_OK)


# --- docker/ -------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_and_pins_its_images() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    # PyPI's torch brings its CUDA libraries: a plain base, not a CUDA image with a second copy
    assert re.fullmatch(r"ubuntu:\d+\.\d+", base)
    # multi-stage on one base: dependencies, code (its own small layer), runtime
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == [
        "${BASE_IMAGE}",
        "deps",
        "${BASE_IMAGE}",
    ]
    assert "latest" not in dockerfile
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and user[-1] != "root" and user[-1] != "0"
    # no entry point: the container universe runs the wrapper as the image's command, and
    # HTCondor 25.0 does not override an ENTRYPOINT (condorml took the wrapper as its command)
    assert (
        not re.search(r"^ENTRYPOINT", dockerfile, re.M)
        and 'CMD ["condorml", "--help"]' in dockerfile
    )


def test_dockerfile_installs_like_the_readme_and_apptainer_builds_on_the_same_image() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "pip install ." in install and "pip install '.[tensorboard]'" in install
    assert re.search(r'pip install --no-cache-dir -c \S+ "\.\[tensorboard\]"', dockerfile)
    tag = re.search(
        r"docker build -f docker/Dockerfile -t (\S+) \.",
        (ROOT / "docker" / "README.md").read_text(),
    ).group(1)
    assert tag in dockerfile  # the build command in the Dockerfile's header
    definition = (ROOT / "docker" / "apptainer.def").read_text()
    assert re.search(r"^Bootstrap: docker$", definition, re.M)
    assert re.search(r"^From: (\S+)$", definition, re.M).group(1) == tag
    assert ":latest" not in definition and "latest" not in tag


def test_profile_and_container_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CondormlError, match="--profile slurm"):
        Profile("slurm")
    job = train_description(
        _config(),
        "train.zip",
        GPU,
        Container(image="images/condorml.sif"),
        Profile(),
        tmp_path / "sub",
    )
    assert job.submit["container_image"] == "../images/condorml.sif"
    assert (
        replace(IMAGE, image="osdf:///chtc/staging/u/condorml.sif").commands(tmp_path)["universe"]
        == "container"
    )


def test_bindings_newer_than_the_schedd_name_both_versions_and_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the pool showed: a 25.14 wheel cannot authenticate to a 25.0 LTS schedd."""

    class Refusing:
        def submit(self, description):
            raise htcondor2.HTCondorException(
                "Failed to connect to schedd, errmsg=AUTHENTICATE:1003:Failed to authenticate with any method"
            )

    monkeypatch.setattr(htcondor2, "Schedd", Refusing)
    monkeypatch.setattr(schedd_module, "pool_tool", lambda _name: None)
    monkeypatch.setattr(schedd_module, "_schedd_version", lambda: (25, 0, 13))
    monkeypatch.setattr(htcondor2, "version", lambda: "$CondorVersion: 25.14.1 2026-09-24 $")
    result = _submit_infer(tmp_path, "--submit")
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert "(HTCondor 25.0.13) refused the htcondor Python bindings 25.14.1" in last
    assert "pip install 'htcondor==25.0.*'" in last and "condor_submit i.sub" in last


def test_submit_uses_condor_submit_when_it_is_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The access point's own condor_submit, in the submit file's folder, as a user would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "condor_submit"
    tool.write_text(
        '#!/bin/sh\necho "$PWD $*" > "$(dirname "$0")/called"\n'
        'echo "Submitting job(s)."\necho "1 job(s) submitted to cluster 314."\n'
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = _submit_infer(tmp_path, "--submit")
    assert result.exit_code == 0, result.output
    assert "cluster 314" in result.output
    assert (bin_dir / "called").read_text().split() == [str(tmp_path.resolve()), "i.sub"]
    tool.write_text('#!/bin/sh\necho "ERROR: Failed to parse command file (line 3)." >&2\nexit 1\n')
    refused = _submit_infer(tmp_path, "--submit")
    assert refused.exit_code == 2
    assert (
        "condor_submit refused it (ERROR: Failed to parse command file (line 3).)" in refused.output
    )


# --- pass-through submit commands (--append, [submit]) ------------------------------------------


def test_pass_through_commands_reach_the_file_as_htcondor_reads_them(tmp_path: Path) -> None:
    extra = extra_commands(
        {"+ProjectName": "UW_Smith", "My.WantsX": True, "accounting_group": "group_ml.alice",
         "requirements": '(OpSys == "LINUX") && (Memory > 4096)', "getenv": "PATH, LC_*",
         "max_retries": 3},
        "--append",
    )  # fmt: skip
    job = train_description(_config(), "train.zip", Resources(), Container(python="/opt/env/bin/python"),
                            Profile(), tmp_path, extra=extra)  # fmt: skip
    written = write_job(job, tmp_path / "train.sub")
    parsed = htcondor2.Submit(written.submit_file.read_text())
    assert parsed["My.ProjectName"] == '"UW_Smith"' and parsed["My.WantsX"] == "true"
    assert parsed["accounting_group"] == "group_ml.alice" and parsed["getenv"] == "PATH, LC_*"
    assert parsed["requirements"] == '(OpSys == "LINUX") && (Memory > 4096)'
    assert parsed["max_retries"] == "3"
    assert split_condor_arguments(parsed["arguments"])[:3] == [
        "--python",
        "/opt/env/bin/python",
        "train",
    ]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ({"executable": "/bin/sh"}, "condorml writes this command itself"),
        ({"transfer_input_files": "/etc/passwd"}, "the inputs come from --data-dir"),
        ({"Request_Cpus": "64"}, "set it with condorml's resource options"),
        ({"request_gpus": "1"}, "--gpus"),  # GPU checks cannot be bypassed
        ({"gpus_minimum_memory": "1"}, "--gpu-memory-min"),
        ({"queue": "100"}, "not a submit command condorml passes through"),
        (
            {"lr": "0.5"},
            "not a submit command condorml passes through",
        ),  # would shadow a VARS macro
        ({"include": "/etc/evil"}, "not a submit command condorml passes through"),
        ({"batch_name": "x\nexecutable = /bin/sh"}, "newline"),
        ({"batch_name": "$(HOME)"}, "'$'"),
        ({"environment": "A=$ENV(SECRET)"}, "'$'"),
        ({"requirements": "(Memory >"}, "not a ClassAd expression"),
        ({"batch_name": "sweep\\"}, "ends with a backslash"),  # would swallow the next line
        ({"+Bad": "1 +"}, "not a ClassAd expression"),
        ({"+Na me": "x"}, "not a submit command"),
        ({"getenv": ""}, "non-empty"),
        ({"getenv": "PATH", "GetEnv": "HOME"}, "given twice"),
    ],
)
def test_pass_through_refuses_what_could_break_or_inject(items: dict, message: str) -> None:
    with pytest.raises(CondormlError, match=re.escape(message)):
        extra_commands(items, "--append")


def test_pass_through_cannot_replace_what_a_profile_writes(tmp_path: Path) -> None:
    with pytest.raises(CondormlError, match=r"already writes My\.WantGPULab"):
        train_description(_config(), "train.zip", GPU, IMAGE, Profile("chtc"), tmp_path,
                          extra=extra_commands({"+WantGPULab": False}, "--append"))  # fmt: skip


def test_append_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.zip").touch()
    out = tmp_path / "t.sub"
    result = CliRunner().invoke(app, ["submit", "train", "-d", "x.zip", "-o", str(out),
                                      "-a", "+ProjectName = P1", "--append", "batch_name=sweep 1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    parsed = htcondor2.Submit(out.read_text())
    assert parsed["My.ProjectName"] == '"P1"' and parsed["batch_name"] == "sweep 1"
    for bad, message in (("nothing", "expected COMMAND = VALUE"), ("log = x", "condorml writes")):
        refused = CliRunner().invoke(app, ["submit", "train", "-d", "x.zip", "-o", str(tmp_path / "r.sub"), "-a", bad])  # fmt: skip
        assert refused.exit_code == 2 and message in refused.output
        assert refused.output.strip().count("\n") == 0 and not (tmp_path / "r.sub").exists()


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=30))
def test_any_pass_through_value_is_refused_or_read_back_unchanged(value: str) -> None:
    """No value, however hostile, adds a command or changes another one."""
    for command in ("batch_name", "requirements", "+Attr"):
        try:
            extra = extra_commands({command: value}, "--append")
        except CondormlError:
            continue
        ((name, written),) = extra.items()
        text = f'executable = a.sh\narguments = "x"\n{name} = {written}\nqueue\n'
        parsed = htcondor2.Submit(text)
        assert set(parsed) == {"executable", "arguments", name}
        assert parsed[name] == written and parsed["executable"] == "a.sh"
