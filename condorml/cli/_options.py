"""Option groups shared by several commands, declared once.

``condorml train`` and ``condorml submit train`` take the same training options; ``condorml
infer`` and ``condorml submit infer`` the same inference options; both ``submit`` commands the
same resource options. Each group is a *template*: a function whose parameters are typer
options and which is never called. :func:`with_options` gives a command the parameters of its
templates, and the command receives them as keyword arguments, named like the fields of
:class:`~condorml.config.TrainConfig` and friends so that they pass straight through.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer

# typer needs the choices as types; they repeat condorml.config's tables (a test keeps them equal).
Model = Literal["cnn", "resnet18"]
Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["constant", "cosine", "step"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
InferPrecision = Literal["auto", "fp32", "bf16"]
ProfileName = Literal["none", "chtc"]
GpuJobLength = Literal["short", "medium", "long"]


def with_options(
    *templates: Callable[..., None],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command, which ends in ``**options``, the parameters of ``templates`` too."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD
        ]
        hints = typing.get_type_hints(command)
        params, annotations = [], {p.name: hints[p.name] for p in own}
        for template in templates:
            template_hints = typing.get_type_hints(template)
            for p in inspect.signature(template).parameters.values():
                params.append(p.replace(annotation=template_hints[p.name]))
                annotations[p.name] = template_hints[p.name]
        own = [p.replace(annotation=annotations[p.name]) for p in own]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            return command(**kwargs)

        wrapper.__signature__ = inspect.Signature(own + params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**annotations, "return": hints.get("return")}
        return wrapper

    return decorate


def training_options(
    epochs: int = typer.Option(10, "--epochs", "-e", help="Total epochs to train."),
    checkpoint_every: int = typer.Option(
        5, "--checkpoint-every", help="Checkpoint (and exit 85) every N epochs."
    ),
    checkpoint_minutes: float | None = typer.Option(
        None,
        "--checkpoint-minutes",
        help="Also checkpoint at the first batch boundary after M minutes of this run, even mid-epoch; 0 or unset: only every --checkpoint-every epochs.",
    ),
    model: Model = typer.Option(
        "cnn",
        "--model",
        help="Architecture: the CHTC example's CNN or ResNet-18 for transfer learning.",
    ),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per batch."),
    optimizer: Optimizer = typer.Option("adam", "--optimizer", help="Optimizer."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Weight decay."),
    momentum: float = typer.Option(0.9, "--momentum", help="Momentum (sgd only)."),
    scheduler: Scheduler = typer.Option(
        "constant", "--scheduler", help="Learning-rate schedule, stepped once per epoch."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of initialisation and data order (one per ensemble member)."
    ),
    split_seed: int = typer.Option(
        0, "--split-seed", help="Seed of the validation split (keep it equal across members)."
    ),
    val_fraction: float = typer.Option(
        0.1, "--val-fraction", help="Fraction of the images held out for validation."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Image decoding threads [default: the CPUs this job was given]."
    ),
    device: Device = typer.Option("auto", "--device", help="auto picks cuda, then mps, then cpu."),
    precision: Precision = typer.Option(
        "auto",
        "--precision",
        help="auto: bf16 where the CPU/GPU computes it natively, fp16 on older GPUs, else fp32; recorded in the checkpoint.",
    ),
    image_size: int = typer.Option(224, "--image-size", help="Images are resized to SIZE x SIZE."),
    pretrained_weights: Path | None = typer.Option(
        None,
        "--pretrained-weights",
        help="ResNet-18 state_dict for transfer learning, a local file (nothing is downloaded).",
    ),
    freeze_backbone: bool = typer.Option(
        False,
        "--freeze-backbone/--no-freeze-backbone",
        help="Train only the new 2-class head (fixed-feature extraction).",
    ),
    member: str | None = typer.Option(
        None, "--member", help="Ensemble member id (a sweep sets it); recorded with the model."
    ),
) -> None:
    """Template: the options of a training run (TrainConfig's fields)."""


def inference_options(
    batch_size: int = typer.Option(
        256,
        "--batch-size",
        help="Images per batch (decoded together, then run through every model).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Decoding threads [default: the CPUs this job was given]."
    ),
    device: Device = typer.Option("auto", "--device", help="auto picks cuda, then mps, then cpu."),
    precision: InferPrecision = typer.Option(
        "auto", "--precision", help="auto: bf16 where the CPU/GPU computes it natively, else fp32."
    ),
    model_arch: Model | None = typer.Option(
        None,
        "--model-arch",
        help="Architecture of a bare state_dict [default: recognised from its parameter names].",
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Image size of a bare state_dict [default: 224]."
    ),
    with_stats: bool = typer.Option(
        False, "--with-stats", help="Add prob_std,n_models columns (spread over the ensemble)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Exit 2 if any image could not be decoded (the CSV is still written).",
    ),
) -> None:
    """Template: the options of an inference run."""


def resource_options(
    cpus: int = typer.Option(1, "--cpus", help="request_cpus."),
    memory: str = typer.Option(
        "8GB", "--memory", help="request_memory: MiB, or with a unit (8GB)."
    ),
    disk: str = typer.Option("10GB", "--disk", help="request_disk: KiB, or with a unit (10GB)."),
    gpus: int = typer.Option(0, "--gpus", help="request_gpus."),
    gpu_capability_min: float | None = typer.Option(
        None, "--gpu-capability-min", help="gpus_minimum_capability (e.g. 7.5)."
    ),
    gpu_capability_max: float | None = typer.Option(
        None, "--gpu-capability-max", help="gpus_maximum_capability."
    ),
    gpu_memory_min: str | None = typer.Option(
        None, "--gpu-memory-min", help="gpus_minimum_memory: MiB, or with a unit (16GB)."
    ),
    gpu_runtime_min: str | None = typer.Option(
        None,
        "--gpu-runtime-min",
        help="gpus_minimum_runtime: the CUDA version the driver must support (12.1).",
    ),
    require_gpus: str | None = typer.Option(
        None, "--require-gpus", help="require_gpus: any other ClassAd constraint on the GPU."
    ),
    container_image: str | None = typer.Option(
        None,
        "--container-image",
        help="docker://repo:tag, a .sif file or an osdf:/// URL (universe = container).",
    ),
    docker_image: str | None = typer.Option(
        None,
        "--docker-image",
        help="repo:tag for the docker universe (only when the pool needs it).",
    ),
    python: str | None = typer.Option(
        None,
        "--python",
        help="Run condorml on the execute point with this interpreter (a shared software area, a same-machine pool) [default: condorml on the job's PATH].",
    ),
    append: list[str] = typer.Option(
        [],
        "--append",
        "-a",
        help="Add a submit command, as condor_submit -a: 'accounting_group = group_ml', '+ProjectName = \"P\"', 'getenv = PATH'; repeatable (README: pass-through commands).",
    ),
    profile: ProfileName = typer.Option(
        "none",
        "--profile",
        help="chtc adds CHTC's GPU Lab attributes to GPU jobs; none adds nothing pool-specific.",
    ),
    gpu_job_length: GpuJobLength | None = typer.Option(
        None,
        "--gpu-job-length",
        help="CHTC GPU job length [default: the shortest that fits a run between checkpoints].",
    ),
    submit: bool = typer.Option(False, "--submit", help="Also hand the job to the local schedd."),
) -> None:
    """Template: what a job asks the pool for, and where it runs."""


def split(options: dict[str, Any], template: Callable[..., None]) -> dict[str, Any]:
    """Take the options that belong to ``template`` out of ``options``."""
    names = inspect.signature(template).parameters
    return {name: options.pop(name) for name in list(options) if name in names}
