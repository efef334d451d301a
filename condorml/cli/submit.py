"""``condorml submit train|infer``: write an HTCondor submit file and its wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from condorml.cli._common import call, print_command, setup_logging, warn_missing_images
from condorml.cli._options import (
    resource_options,
    split,
    submit_inference_options,
    training_options,
    with_options,
)
from condorml.job.files import CHECKPOINT_FOLDER
from condorml.sweep.rundir import (
    submit_file_name,
)

app = typer.Typer(
    help="Write HTCondor submit descriptions (and their wrapper scripts) for condorml jobs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("train")
@with_options(training_options, resource_options)
def submit_train(
    data_dir: str = typer.Option(
        ...,
        "--data-dir",
        "-d",
        help="The training data (a zip, or a folder, in any layout condorml train reads): a local path, or an osdf:/// or file:/// URL.",
    ),
    output: Path = typer.Option(
        Path(submit_file_name("train")),
        "--output",
        "-o",
        help="The submit file; its wrapper condorml_train.sh goes beside it.",
    ),
    **options: Any,
) -> None:
    """Write a self-checkpointing training job: checkpoint_exit_code = 85, the checkpoint
    folder ckpt/ in transfer_checkpoint_files, log/output/error per job."""
    from condorml.config import TrainConfig
    from condorml.htcondor.submit import train_description

    setup_logging()
    resources, container, profile, extra, submit = _resources(options)
    from condorml.architectures import is_model_file

    model = options["model"]
    code = ("--model", model.rpartition(":")[0] if is_model_file(model) else None)
    _check_inputs(container, ("--data-dir", data_dir), code,
                  ("--pretrained-weights", options["pretrained_weights"]),
                  ("--labels-csv", options["labels_csv"]))  # fmt: skip
    config = TrainConfig(data_dir=Path(data_dir), checkpoint_dir=Path(CHECKPOINT_FOLDER), **options)
    job = call(train_description, config, data_dir, resources, container, profile, output.parent,
               extra=extra)  # fmt: skip
    _write(job, output, submit)


@app.command("infer")
@with_options(submit_inference_options, resource_options)
def submit_infer(
    model: list[str] = typer.Option(
        ..., "--model", "-m", help="Model file (local path or URL); repeat for an ensemble."
    ),
    images: str = typer.Option(
        ...,
        "--images",
        "-i",
        help="Zip of test images: a local path, or an osdf:/// or file:/// URL.",
    ),
    output: Path = typer.Option(
        Path(submit_file_name("infer")),
        "--output",
        "-o",
        help="The submit file; its wrapper condorml_infer.sh goes beside it.",
    ),
    csv: str | None = typer.Option(
        None,
        "--csv",
        help="Name of the predictions CSV the job returns in out/ [default: dog_probs.csv for cat/dog models, else probs.csv].",
    ),
    **options: Any,
) -> None:
    """Write an inference job that returns out/dog_probs.csv (or out/probs.csv) and its sidecar."""
    from condorml.config import InferConfig
    from condorml.htcondor.submit import infer_description

    setup_logging()
    resources, container, profile, extra, submit = _resources(options)
    codes = [("--model-file", f) for f in options["model_files"]]
    _check_inputs(container, *(("--model", m) for m in model), ("--images", images), *codes)
    config = InferConfig(models=tuple(model), images=images, output=csv,
                         **{**options, "model_files": tuple(options["model_files"])})  # fmt: skip
    description = call(
        infer_description, config, resources, container, profile, output.parent, extra=extra
    )
    _write(description, output, submit)


def _resources(options: dict[str, Any]):
    from condorml.htcondor.passthrough import extra_commands, parse_assignments
    from condorml.htcondor.resources import Container, Profile, Resources

    values = split(options, resource_options)
    container = Container(
        values.pop("container_image"), values.pop("docker_image"), values.pop("python")
    )
    profile = call(Profile, values.pop("profile"), values.pop("gpu_job_length"))
    extra = call(
        extra_commands, call(parse_assignments, values.pop("append"), "--append"), "--append"
    )
    submit = values.pop("submit")
    return Resources(**values), container, profile, extra, submit


def _check_inputs(container: Any, *inputs: tuple[str, Any]) -> None:
    """Every local input exists now (URLs pass): a job for a missing file would go on hold."""
    from condorml.htcondor.inputs import check_exists, is_url

    image = container.image
    if image and image.endswith(".sif") and not is_url(image):
        inputs = (*inputs, ("--container-image", image))
    for option, value in inputs:
        if value is not None:
            call(check_exists, str(value), option)


def _write(job: Any, output: Path, submit: bool) -> None:
    from condorml.backends import choose_backend
    from condorml.htcondor.submit import write_job

    written = call(write_job, job, output)
    for note in job.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {written.submit_file} and {written.wrapper}")
    if submit:
        backend = call(choose_backend, "condor")  # --submit: to the pool's schedd
        warn_missing_images([job.submit])
        cluster = call(backend.submit_job, written.submit_file).cluster
        print_command(f"submitted as cluster {cluster}; follow it with:", ["condor_watch_q", "-clusters", str(cluster)])  # fmt: skip
    else:
        print_command("submit it with:", ["cd", written.submit_file.parent], ["condor_submit", written.submit_file.name])  # fmt: skip
