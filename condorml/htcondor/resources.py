"""What a job asks of an execute point: resources, software (a container or an interpreter) and
pool-specific additions (profiles), as option tables whose fields carry their CLI option, spec key,
help and range (see :mod:`condorml.config`).

:class:`Resources`, :class:`Container` and :class:`Profile` check their values when made and turn
them into submit commands; :data:`RESOURCE_COMMANDS` maps condorml's names to HTCondor's.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from condorml.config import (
    Option,
    OptionRule,
    option,
    option_fields,
    option_flag,
)
from condorml.errors import CondormlError
from condorml.htcondor.inputs import local_path
from condorml.htcondor.passthrough import classad_expression
from condorml.htcondor.quoting import (
    Token,
    list_item,
    safe_value,
    size_problem,
    size_value,
)
from condorml.htcondor.wrappers import PYTHON_OPTION

log = logging.getLogger(__name__)

PROFILES = ("none", "chtc")
# CHTC's GPU job lengths and their run-time limits in hours (chtc.cs.wisc.edu, gpu-jobs).
CHTC_GPU_JOB_LENGTHS = {"short": 12, "medium": 24, "long": 7 * 24}
CHTC_DEFAULT_CHECKPOINT_MINUTES = 60  # HTCondor's manual: checkpoint about once an hour

# Generic resource names -> submit commands; the one table the CLI, docs and checks share.
RESOURCE_COMMANDS = {
    "cpus": "request_cpus",
    "memory": "request_memory",
    "disk": "request_disk",
    "gpus": "request_gpus",
    "gpu_capability_min": "gpus_minimum_capability",
    "gpu_capability_max": "gpus_maximum_capability",
    "gpu_memory_min": "gpus_minimum_memory",
    "gpu_runtime_min": "gpus_minimum_runtime",
    "require_gpus": "require_gpus",
}
_GPU_OPTIONS = (
    "gpu_capability_min",
    "gpu_capability_max",
    "gpu_memory_min",
    "gpu_runtime_min",
    "require_gpus",
)
_DOCKER_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?$"
)


# The rules a sweep specification checks [resources] values against (the classes check more).
_TEXT = OptionRule(str)
# Sizes: a number with an optional unit; a spec may also give a number ([resources] memory =
# 8192, in MiB). Without a unit HTCondor reads MiB for memory and KiB for disk.
_MEMORY = OptionRule(str, check=functools.partial(size_problem, unit="M"),
                     means="a size such as 8GB or 8192 (MiB)")  # fmt: skip
_DISK = OptionRule(str, check=functools.partial(size_problem, unit="K", least_mib=1.0),
                   means="a size such as 10GB or 10485760 (KiB)")  # fmt: skip
_CAPABILITY = OptionRule(float, low=1, below=100)


@dataclass(frozen=True)
class Resources:
    """What a job asks the pool for. ``memory``, ``disk`` and ``gpu_memory_min`` take units.

    Example
    -------
    >>> Resources(cpus=4, gpus=1, gpu_capability_min=7.5).commands()["gpus_minimum_capability"]
    '7.5'
    """

    cpus: int = option(1, "request_cpus.", rule=OptionRule(int, low=1))
    memory: str = option("8GB", "request_memory: MiB, or with a unit (8GB).", rule=_MEMORY)
    disk: str = option("10GB", "request_disk: KiB, or with a unit (10GB).", rule=_DISK)
    gpus: int = option(0, "request_gpus.", rule=OptionRule(int, low=0))
    gpu_capability_min: float | None = option(
        None, "gpus_minimum_capability (e.g. 7.5).", rule=_CAPABILITY
    )
    gpu_capability_max: float | None = option(None, "gpus_maximum_capability.", rule=_CAPABILITY)
    gpu_memory_min: str | None = option(
        None, "gpus_minimum_memory: MiB, or with a unit (16GB).", rule=_MEMORY
    )
    gpu_runtime_min: str | None = option(
        None,
        "gpus_minimum_runtime: the CUDA version the driver must support (12.1).",
        rule=_TEXT,
    )
    require_gpus: str | None = option(
        None, "require_gpus: any other ClassAd constraint on the GPU.", rule=_TEXT
    )

    def commands(self) -> dict[str, str]:
        """The submit commands, validated.

        Raises
        ------
        CondormlError
            For impossible values, or GPU constraints without ``--gpus`` (HTCondor would
            silently ignore them).
        """
        if self.cpus < 1 or self.gpus < 0:
            raise CondormlError("--cpus must be 1 or more and --gpus 0 or more")
        given = [name for name in _GPU_OPTIONS if getattr(self, name) is not None]
        if given and self.gpus == 0:
            raise CondormlError(
                f"{option_flag(given[0])} without --gpus: HTCondor ignores GPU constraints of a job that requests no GPU; add --gpus 1"
            )
        values = {
            "cpus": str(self.cpus),
            "memory": size_value(self.memory, "--memory"),
            "disk": size_value(self.disk, "--disk", unit="K", least_mib=1.0),
        }
        if self.gpus:
            values["gpus"] = str(self.gpus)
        for name in ("gpu_capability_min", "gpu_capability_max"):
            value = getattr(self, name)
            if value is not None:
                if not 1.0 <= value < 100:
                    raise CondormlError(
                        f"{option_flag(name)} {value}: a CUDA compute capability such as 7.5"
                    )
                values[name] = f"{value:g}"
        if (
            self.gpu_capability_min
            and self.gpu_capability_max
            and self.gpu_capability_min > self.gpu_capability_max
        ):
            raise CondormlError(
                "--gpu-capability-min is above --gpu-capability-max: no GPU can match"
            )
        if self.gpu_memory_min is not None:
            values["gpu_memory_min"] = size_value(self.gpu_memory_min, "--gpu-memory-min")
        if self.gpu_runtime_min is not None:
            runtime = safe_value(self.gpu_runtime_min, "--gpu-runtime-min")
            if not re.fullmatch(r"\d+\.\d+|\d{4,}", runtime):
                raise CondormlError(
                    f"--gpu-runtime-min {runtime!r}: a CUDA version such as 12.1 (or 12010)"
                )
            values["gpu_runtime_min"] = runtime
        if self.require_gpus is not None:
            values["require_gpus"] = classad_expression(self.require_gpus, "--require-gpus")
        return {RESOURCE_COMMANDS[name]: value for name, value in values.items()}


@dataclass(frozen=True)
class Container:
    """The job's software: ``container_image`` (any runtime) or ``docker_image``, and ``python``.

    ``python`` is the interpreter that runs condorml on the execute point (a shared software
    area, a same-machine pool, or a Python inside the image); without it the wrapper looks for
    ``condorml`` on the job's PATH, which HTCondor does not set unless asked (``getenv``).
    """

    image: str | None = option(
        None,
        "docker://repo:tag, a .sif file or an osdf:/// URL (universe = container).",
        rule=_TEXT,
        key="container_image",
    )
    docker_image: str | None = option(
        None, "repo:tag for the docker universe (only when the pool needs it).", rule=_TEXT
    )
    python: str | None = option(
        None,
        "Run condorml on the execute point with this interpreter (a shared software area, a same-machine pool) [default: condorml on the job's PATH].",
        rule=_TEXT,
    )

    def wrapper_arguments(self) -> list[Token]:
        """The wrapper's own leading arguments (``--python PATH``), before condorml's.

        Raises
        ------
        CondormlError
            For an interpreter path that cannot be written safely.
        """
        if self.python is None:
            return []
        python = safe_value(self.python, "--python")
        if not python or python.startswith("-") or "://" in python:
            raise CondormlError(
                f"--python {python!r}: the path of a Python interpreter on the execute point, e.g. /software/condorml/bin/python"
            )
        return [PYTHON_OPTION, python]

    def commands(self, submit_dir: Path) -> dict[str, str]:
        """``universe`` and the image command; vanilla (nothing) without an image.

        Raises
        ------
        CondormlError
            For both images at once, or an image reference HTCondor would reject.
        """
        if self.image and self.docker_image:
            raise CondormlError(
                "--container-image and --docker-image: give one (HTCondor refuses both)"
            )
        if self.docker_image:
            ref = safe_value(self.docker_image, "--docker-image").removeprefix("docker://")
            _check_docker_ref(ref, "--docker-image")
            # The job's executable is the wrapper, whatever entry point an image has.
            return {"universe": "docker", "docker_image": ref, "docker_override_entrypoint": "true"}
        if not self.image:
            return {}
        image = safe_value(self.image, "--container-image")
        if image.startswith("docker://"):
            _check_docker_ref(image.removeprefix("docker://"), "--container-image")
        elif image.startswith(("osdf://", "file://", "pelican://", "https://", "http://")):
            list_item(image, "--container-image")
        elif image.endswith(".sif"):
            image = local_path(image, submit_dir, "--container-image")
        else:
            raise CondormlError(
                f"--container-image {image!r}: expected docker://repo:tag, a .sif file or an osdf:/// URL"
            )
        return {"universe": "container", "container_image": image}


def _check_docker_ref(ref: str, what: str) -> None:
    if not _DOCKER_REF.match(ref):
        raise CondormlError(
            f"{what} {ref!r}: not a Docker image reference (repository[:tag]), lower case"
        )
    name = ref.rsplit("/", 1)[-1]
    if ":" not in name or name.endswith(":latest"):
        log.warning(
            "%s %s: pin a tag other than 'latest', so that every job runs the same software",
            what,
            ref,
        )


@dataclass(frozen=True)
class Profile:
    """Pool-specific additions; ``none`` writes nothing pool-specific."""

    name: str = option(
        "none",
        "chtc adds CHTC's GPU Lab attributes to GPU jobs; none adds nothing pool-specific.",
        rule=OptionRule(str, choices=PROFILES),
        key="profile",
    )
    gpu_job_length: str | None = option(  # CHTC: chosen from the checkpoint interval when None
        None,
        "CHTC GPU job length [default: the shortest that fits a run between checkpoints].",
        rule=OptionRule(str, choices=tuple(CHTC_GPU_JOB_LENGTHS), optional=True),
    )

    def __post_init__(self) -> None:
        if self.name not in PROFILES:
            raise CondormlError(f"--profile {self.name}: choose one of {', '.join(PROFILES)}")
        if self.gpu_job_length is not None and self.gpu_job_length not in CHTC_GPU_JOB_LENGTHS:
            raise CondormlError(
                f"--gpu-job-length {self.gpu_job_length}: choose one of {', '.join(CHTC_GPU_JOB_LENGTHS)}"
            )


# The pool options of a job (a spec's [resources] keys, `condorml submit`'s options), in order.
POOL_TABLES = (Resources, Container, Profile)
RESOURCE_FIELDS = tuple(option_fields(Resources))


def pool_options() -> dict[str, Option]:
    """Every pool option by its key (``container_image``, ``profile``), in command-line order."""
    return {key: meta for table in POOL_TABLES for key, (_, meta) in option_fields(table).items()}


def chtc_job_length(run_minutes: float) -> str:
    """The shortest CHTC GPU job length whose limit exceeds one run (between checkpoints) by 25%.

    Example
    -------
    >>> chtc_job_length(60), chtc_job_length(15 * 60), chtc_job_length(3 * 24 * 60)
    ('short', 'medium', 'long')
    """
    for length, hours in CHTC_GPU_JOB_LENGTHS.items():
        if run_minutes * 1.25 <= hours * 60:
            return length
    raise CondormlError(
        f"a run of {run_minutes:g} minutes between checkpoints exceeds CHTC's longest GPU job (7 days); lower --checkpoint-minutes"
    )
