"""Submit descriptions for training and inference jobs, built as ``htcondor2.Submit`` objects.

Describing a job is pure: :func:`train_description` and :func:`infer_description` return a
:class:`JobDescription` (the ``htcondor2.Submit``, its wrapper script and notes) and touch no
file. :func:`write_job` writes both atomically and reads the submit file back with HTCondor's own
parser, refusing to leave a file that does not read back as the description it was made from.

The job's sandbox layout is fixed, and everything lands at its top level, so no path in a
transfer list depends on ``preserve_relative_paths``:

* inputs arrive under their file names (``train.zip``, ``model.pth``; URLs pass through);
* a training job keeps its checkpoint in the folder ``ckpt/`` (``transfer_checkpoint_files =
  ckpt``: the folder comes back whole after an eviction) and returns it as its output;
* an inference job writes into the folder ``out/`` and returns it.

The wrapper creates those folders before anything else, so a declared output always exists
and a failing job fails (its exit code reaches DAGMan) instead of going on hold.

Local paths are written relative to the submit file's folder: submit from there
(``cd submit && condor_submit train.sub``), as DAGMan does for node jobs.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from condorml import __version__
from condorml.config import (
    ALWAYS,
    FIXED,
    IF_SET,
    InferOptions,
    Option,
    OptionRule,
    TrainConfig,
    option,
    option_fields,
)
from condorml.errors import CondormlError, ExitCode
from condorml.fileio import atomic_write, atomic_write_text
from condorml.htcondor.passthrough import classad_expression
from condorml.htcondor.quoting import (
    Macro,
    Token,
    classad_string,
    condor_arguments,
    list_item,
    plain_name,
    safe_value,
    size_value,
)
from condorml.htcondor.wrappers import PYTHON_OPTION, wrapper_script
from condorml.job.files import PREDICTIONS_FILE
from condorml.sweep.rundir import (
    CHECKPOINT_FOLDER,
    RESULTS_FOLDER,
    job_log_name,
    job_stream_name,
    shard_part_name,
)

log = logging.getLogger(__name__)

URL_SCHEMES = ("osdf://", "file://", "pelican://", "https://", "http://", "s3://", "stash://")
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


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


# The rules a sweep specification checks [resources] values against (the classes check more).
_TEXT = OptionRule(str)
_SIZE = OptionRule(str)  # a spec may also give a number: [resources] memory = 8192 (MiB)
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
    memory: str = option("8GB", "request_memory: MiB, or with a unit (8GB).", rule=_SIZE)
    disk: str = option("10GB", "request_disk: KiB, or with a unit (10GB).", rule=_SIZE)
    gpus: int = option(0, "request_gpus.", rule=OptionRule(int, low=0))
    gpu_capability_min: float | None = option(
        None, "gpus_minimum_capability (e.g. 7.5).", rule=_CAPABILITY
    )
    gpu_capability_max: float | None = option(None, "gpus_maximum_capability.", rule=_CAPABILITY)
    gpu_memory_min: str | None = option(
        None, "gpus_minimum_memory: MiB, or with a unit (16GB).", rule=_SIZE
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
                f"{_option(given[0])} without --gpus: HTCondor ignores GPU constraints of a job that requests no GPU; add --gpus 1"
            )
        values = {
            "cpus": str(self.cpus),
            "memory": size_value(self.memory, "--memory"),
            "disk": size_value(self.disk, "--disk"),
        }
        if self.gpus:
            values["gpus"] = str(self.gpus)
        for name in ("gpu_capability_min", "gpu_capability_max"):
            value = getattr(self, name)
            if value is not None:
                if not 1.0 <= value < 100:
                    raise CondormlError(
                        f"{_option(name)} {value}: a CUDA compute capability such as 7.5"
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
            # The image's entry point is condorml; the job's executable is the wrapper.
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


def is_url(value: str) -> bool:
    """Whether HTCondor fetches this input through a transfer plugin (``osdf:///...``)."""
    return value.startswith(URL_SCHEMES)


def local_path(value: str, submit_dir: Path, what: str, transferred: bool = True) -> str:
    """A local path written relative to the submit file's folder (absolute paths stay so).

    A ``transferred`` path becomes an item of ``transfer_input_files``: the path as written
    there (not as typed: a run folder may have a space in its name that the relative path
    does not) must be one HTCondor can read as one item.
    """
    safe_value(value, what)
    path = Path(value)
    if path.is_absolute():
        written = path.as_posix()
    else:
        written = Path(
            os.path.relpath(os.path.abspath(path), os.path.abspath(submit_dir))
        ).as_posix()
    if transferred:
        list_item(written, what if written == value else f"{what} {value!r}, written as")
    return written


def check_exists(value: str, what: str) -> None:
    """Refuse a local input that does not exist now (URLs pass): its job would go on hold.

    Raises
    ------
    CondormlError
        Naming the option, the path as given and where it was looked for.
    """
    safe_value(value, what)  # a hostile value is refused as such, before it reaches a message
    if is_url(value) or os.path.exists(value):
        return
    raise CondormlError(
        f"{what} {value}: no such file or folder (looked for {os.path.abspath(value)}); give an existing path, or a URL such as osdf:///path"
    )


def input_entry(value: str, submit_dir: Path, what: str) -> tuple[str, str]:
    """(entry for ``transfer_input_files``, the file's name in the sandbox)."""
    if is_url(value):
        list_item(value, what)
        name = PurePosixPath(value.split("://", 1)[1]).name
    else:
        name = Path(value).name
        value = local_path(value, submit_dir, what)
    if not name:
        raise CondormlError(f"{what} {value!r}: names a folder, not a file")
    return value, name


def _preserved(entry: str, name: str, submit_dir: Path) -> tuple[str, str]:
    """(entry, where it lands in the sandbox) with ``preserve_relative_paths``.

    A relative entry lands at its own path, an absolute one or a URL at the top, under its
    name. An entry that climbs (``../x``) would put the job on hold ("illegal sandbox path"),
    so it is written absolute (all three checked with HTCondor 25.0 on a pool).
    """
    if is_url(entry):
        return entry, name
    if PurePosixPath(entry).parts[:1] == ("..",):
        entry = Path(os.path.abspath(submit_dir / entry)).as_posix()
    return entry, name if PurePosixPath(entry).is_absolute() else entry


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


@dataclass
class JobDescription:
    """A job ready to write: the submit description, its wrapper script, and notes for the user."""

    submit: object  # htcondor2.Submit (imported lazily: the bindings load a native library)
    wrapper_name: str
    wrapper_text: str
    notes: list[str] = field(default_factory=list)


def _submit(commands: dict[str, str], queue: int):
    import htcondor2

    description = htcondor2.Submit(commands)
    description.setQArgs(str(queue))
    return description


def _common(
    kind: str,
    wrapper_name: str,
    arguments: list[Token],
    inputs: list[str],
    output_folder: str,
    resources: Resources,
    container: Container,
    submit_dir: Path,
) -> dict[str, str]:
    commands = dict(container.commands(submit_dir))
    commands.update(
        {
            "executable": wrapper_name,
            "arguments": condor_arguments([*container.wrapper_arguments(), *arguments]),
            "should_transfer_files": "YES",
            # Files come back when the job exits, not when it is evicted: with checkpoint_exit_code
            # the checkpoint already reached the access point at every exit 85.
            "when_to_transfer_output": "ON_EXIT",
        }
    )
    if inputs:
        commands["transfer_input_files"] = ", ".join(inputs)
    if kind == "train":
        commands["checkpoint_exit_code"] = str(int(ExitCode.CHECKPOINTED))
        commands["transfer_checkpoint_files"] = output_folder
    commands["transfer_output_files"] = output_folder
    commands.update(resources.commands())
    stem = "$(ClusterId).$(ProcId)"
    commands.update(
        {
            "output": job_stream_name(kind, "out", stem),
            "error": job_stream_name(kind, "err", stem),
            "log": job_log_name(kind),
        }
    )
    return commands


def _unique_names(names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise CondormlError(
                f"two inputs would arrive in the job as {name}: rename one (e.g. m000.pth), or, for models, keep them in distinct folders below the submit file's folder"
            )
        seen.add(name)


def train_description(
    config: TrainConfig,
    data: str,
    resources: Resources,
    container: Container,
    profile: Profile,
    submit_dir: Path,
    swept: tuple[str, ...] = (),
    initialdir: str | None = None,
    extra: dict[str, str] | None = None,
) -> JobDescription:
    """Describe a self-checkpointing training job.

    Parameters
    ----------
    config : TrainConfig
        The training options (``data_dir``, ``checkpoint_dir`` and ``cache_dir`` are replaced
        by the sandbox layout).
    data : str
        The training zip: a local path or an ``osdf:///`` / ``file:///`` URL.
    resources, container, profile
        What to ask the pool for, where to run, pool-specific additions.
    submit_dir : Path
        Folder the job's local paths are written relative to: the submit file's, or with
        ``initialdir`` that folder.
    swept : tuple of str
        Options written as macros (``$(lr)``) for DAG VARS to set per node; ``config`` gives
        them valid example values.
    initialdir : str, optional
        A generated ``initialdir`` (a DAG's ``$(member_dir)``). The job then also receives its
        ``ckpt`` folder from there, so that a re-run (RETRY, rescue DAG) resumes from the last
        checkpoint that came back, instead of starting over.
    extra : dict, optional
        Further submit commands, validated by
        :func:`condorml.htcondor.passthrough.extra_commands` (``[submit]``, ``--append``).

    Raises
    ------
    CondormlError
        For invalid options or values that cannot be written safely.
    """
    notes = []
    if profile.name == "chtc" and resources.gpus and config.checkpoint_minutes is None:
        config = replace(config, checkpoint_minutes=float(CHTC_DEFAULT_CHECKPOINT_MINUTES))
        notes.append(
            f"--profile chtc: checkpointing every {CHTC_DEFAULT_CHECKPOINT_MINUTES} minutes too, so that every run fits a GPU job length"
        )
    config.validate()
    if config.device == "cuda" and not resources.gpus:
        raise CondormlError("--device cuda without --gpus: the job would get no GPU")
    data_entry, data_name = input_entry(data, submit_dir, "--data-dir")
    inputs, names = [data_entry], [data_name]
    args: list[Token] = ["train", "--data-dir", data_name, "--checkpoint-dir", CHECKPOINT_FOLDER]
    if config.pretrained_weights is not None:
        entry, name = input_entry(
            str(config.pretrained_weights), submit_dir, "--pretrained-weights"
        )
        inputs.append(entry)
        names.append(name)
        args += ["--pretrained-weights", name]
    if initialdir is not None:
        inputs.append(CHECKPOINT_FOLDER)
        names.append(CHECKPOINT_FOLDER)
    _unique_names(names)
    args += _training_arguments(config, swept)
    commands = _common(
        "train", TRAIN_WRAPPER, args, inputs, CHECKPOINT_FOLDER, resources, container, submit_dir
    )
    if initialdir is not None:
        commands = {"initialdir": initialdir, **commands}
    if profile.name == "chtc" and resources.gpus:
        if not profile.gpu_job_length and not config.checkpoint_minutes:
            raise CondormlError(
                "--checkpoint-minutes 0 (no time-based checkpoints) with --profile chtc --gpus: a run "
                "between checkpoints has no bound, so no GPU job length fits; give --gpu-job-length, "
                "or a number of minutes"
            )
        length = profile.gpu_job_length or chtc_job_length(config.checkpoint_minutes)  # type: ignore[arg-type]
        commands.update(
            {
                "My.WantGPULab": "true",
                "My.GPUJobLength": classad_string(length, "--gpu-job-length"),
                "My.is_resumable": "true",
            }
        )
    elif profile.name == "chtc":
        notes.append("--profile chtc adds GPU Lab attributes only to jobs that request GPUs")
    commands = _with_extra(commands, extra)
    return JobDescription(
        _submit(commands, 1), TRAIN_WRAPPER, wrapper_script("train", CHECKPOINT_FOLDER), notes
    )


def _with_extra(commands: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """Add the user's pass-through commands; one that condorml already wrote is refused."""
    written = {key.lower(): key for key in commands}
    for key in extra or {}:
        if key.lower() in written:
            raise CondormlError(
                f"submit command {key}: condorml already writes {written[key.lower()]} for this job (from its options or --profile); set it there"
            )
    return {**commands, **(extra or {})}


def argument_text(name: str, value: object) -> str:
    """How an option's value is written on a job's command line (and in DAG VARS).

    Booleans become the flag itself (``--freeze-backbone`` / ``--no-freeze-backbone``), floats
    their shortest round-tripping text.
    """
    if isinstance(value, bool):
        return _option(name) if value else "--no-" + name.replace("_", "-")
    if isinstance(value, float):
        return repr(value)
    return safe_value(str(value), _option(name))


def job_arguments(options: object, written: str, swept: tuple[str, ...] = ()) -> list[Token]:
    """The options of ``options`` (a dataclass) that a job's command line carries as ``written``.

    :data:`~condorml.config.ALWAYS` options are written every time, so that a job never depends
    on condorml's defaults; :data:`~condorml.config.IF_SET` ones only when not None (or False).
    A swept option is a macro the DAG's VARS define, whatever its example value.
    """
    args: list[Token] = []
    for name, (_, meta) in option_fields(type(options)).items():
        if meta.job != written:
            continue
        value = getattr(options, name)
        if name not in swept and written == IF_SET and (value is None or value is False):
            continue
        if isinstance(value, bool):  # a flag: the macro (or the value) is the whole token
            args.append(Macro(name) if name in swept else argument_text(name, value))
        else:
            args += [_option(name), Macro(name) if name in swept else argument_text(name, value)]
    return args


def _training_arguments(config: TrainConfig, swept: tuple[str, ...] = ()) -> list[Token]:
    """The training options as tokens (``momentum`` only where the optimizer uses it)."""
    if config.optimizer != "sgd" and "momentum" not in swept:
        config = replace(config, momentum=None)  # type: ignore[arg-type]
    return job_arguments(config, ALWAYS, swept) + job_arguments(config, IF_SET, swept)


@dataclass(frozen=True)
class InferJob(InferOptions):
    """The options of an inference job (the models and images are given separately)."""

    output_name: str = PREDICTIONS_FILE
    shards: int = option(
        1,
        "Spread the images over N jobs (queue N, --shard $(ProcId)/N).",
        rule=OptionRule(int, low=1),
        spec=FIXED,
    )


def infer_description(
    models: list[str],
    images: str,
    job: InferJob,
    resources: Resources,
    container: Container,
    profile: Profile,
    submit_dir: Path,
    initialdir: str | None = None,
    extra: dict[str, str] | None = None,
) -> JobDescription:
    """Describe an inference job, or ``job.shards`` of them (``queue N``, ``--shard $(ProcId)/N``).

    The CSV and its sidecar come back as ``out/<output_name>`` (sharded:
    ``out/<stem>.part<ProcId>.csv``, to be joined with ``condorml merge``). ``extra`` as for
    :func:`train_description`.

    Raises
    ------
    CondormlError
        For invalid options or values that cannot be written safely.
    """
    if not models:
        raise CondormlError("--model: give at least one model")
    if job.shards < 1:
        raise CondormlError(f"--shards {job.shards}: must be 1 or more")
    if job.batch_size < 1:
        raise CondormlError(f"--batch-size {job.batch_size}: must be 1 or more")
    if job.device == "cuda" and not resources.gpus:
        raise CondormlError("--device cuda without --gpus: the job would get no GPU")
    output = PurePosixPath(safe_value(job.output_name, "--output"))
    if output.name != job.output_name or output.suffix != ".csv":
        raise CondormlError(
            f"--output {job.output_name!r}: a file name ending in .csv (it is written to out/)"
        )
    plain_name(job.output_name, "--output")  # also inside a macro of the arguments: no spaces
    entries = [input_entry(m, submit_dir, "--model") for m in models]
    image_entry, image_name = input_entry(images, submit_dir, "--images")
    names = [name for _, name in entries]
    # An ensemble's models are often all model.pth (members/<id>/model.pth): they keep their
    # folders in the sandbox (preserve_relative_paths) instead of colliding at its top.
    preserve = len(set(names)) != len(names)
    if preserve:
        entries = [_preserved(entry, name, submit_dir) for entry, name in entries]
        image_entry, image_name = _preserved(image_entry, image_name, submit_dir)
        names = [name for _, name in entries]
    _unique_names([*names, image_name])
    args: list[Token] = ["infer"]
    for name in names:
        args += ["--model", name]
    args += ["--images", image_name, *job_arguments(job, ALWAYS)]
    if job.shards > 1:
        args += ["--output", Macro("condorml_output"), "--shard", Macro("condorml_shard")]
    else:
        args += ["--output", f"{RESULTS_FOLDER}/{job.output_name}"]
    args += job_arguments(job, IF_SET)
    inputs = [entry for entry, _ in entries] + [image_entry]
    commands = _common(
        "infer", INFER_WRAPPER, args, inputs, RESULTS_FOLDER, resources, container, submit_dir
    )
    if preserve:
        commands["preserve_relative_paths"] = "true"
    if initialdir is not None:
        commands = {"initialdir": initialdir, **commands}
    if job.shards > 1:
        # Helper macros, defined before the arguments that use them (they expand per job).
        commands = {
            "condorml_shard": f"$(ProcId)/{job.shards}",
            "condorml_output": f"{RESULTS_FOLDER}/{shard_part_name(output.name, '$(ProcId)')}",
            **commands,
        }
    if profile.name == "chtc" and resources.gpus:
        length = profile.gpu_job_length or "short"
        commands.update(
            {"My.WantGPULab": "true", "My.GPUJobLength": classad_string(length, "--gpu-job-length")}
        )
    commands = _with_extra(commands, extra)
    notes = []
    if job.shards > 1:
        notes.append(
            f"{job.shards} jobs write out/{output.stem}.part<N>.csv; join them with: condorml merge {job.output_name} out/{output.stem}.part*.csv"
        )
    return JobDescription(
        _submit(commands, job.shards), INFER_WRAPPER, wrapper_script("infer", RESULTS_FOLDER), notes
    )


TRAIN_WRAPPER = "condorml_train.sh"
INFER_WRAPPER = "condorml_infer.sh"
COLLECT_WRAPPER = "condorml_collect.sh"


def collect_description(arguments: list[str], python: str) -> JobDescription:
    """The collect step of a sweep: ``condorml collect`` in the run folder, on the access point.

    It runs in the local universe (in the run folder, with no file transfer) because it reads
    every member's results there. HTCondor gives it a minimal environment (no PATH of the
    submitting shell), so it runs condorml with ``python``: the interpreter that wrote the
    files (``sys.executable``), which is on the access point by definition; the wrapper says
    so clearly if it moved.
    """
    commands = {
        "universe": "local",
        "executable": COLLECT_WRAPPER,
        "arguments": condor_arguments(
            [*Container(python=python).wrapper_arguments(), "collect", *arguments]
        ),
        "output": "collect.out",
        "error": "collect.err",
        "log": job_log_name("collect"),
    }
    return JobDescription(_submit(commands, 1), COLLECT_WRAPPER, wrapper_script("collect", None))


def render_submit(job: JobDescription) -> str:
    """The submit file's text: a header comment and HTCondor's own rendering of the description."""
    where = (
        "# Paths are relative to initialdir (a member's folder), the executable to this file's folder.\n"
        if "initialdir" in job.submit  # type: ignore[operator]
        else "# Paths are relative to this file's folder: submit from there, e.g. condor_submit <this file>.\n"
    )
    header = f"# Generated by condorml {__version__}; regenerate rather than edit.\n" + where
    return header + str(job.submit)


def check_reads_back(text: str, job: JobDescription, path: Path) -> None:
    """Parse ``text`` with HTCondor and compare every command, expanded, with the description.

    Raises
    ------
    CondormlError
        If the file would not mean what was described (an extra or altered command).
    """
    import htcondor2

    parsed = htcondor2.Submit(text)
    intended = job.submit
    if set(parsed.keys()) != set(intended.keys()) or parsed.getQArgs() != intended.getQArgs():  # type: ignore[attr-defined]
        raise CondormlError(
            f"{path}: the written description does not read back as generated; refusing to keep it"
        )
    for key in intended:  # type: ignore[attr-defined]
        if parsed[key] != intended[key] or _expanded(parsed, key) != _expanded(intended, key):  # type: ignore[index]
            raise CondormlError(f"{path}: {key} reads back as {parsed[key]!r}; refusing to keep it")


def _expanded(description: object, key: str) -> str | None:
    """``Submit.expand``, or None where a macro is left for DAGMan's VARS to define."""
    try:
        return description.expand(key)  # type: ignore[attr-defined]
    except KeyError:
        return None


@dataclass(frozen=True)
class WrittenJob:
    """Paths :func:`write_job` wrote."""

    submit_file: Path
    wrapper: Path


def write_job(job: JobDescription, path: Path) -> WrittenJob:
    """Write the submit file and its wrapper (beside it), atomically, after checking the text.

    Raises
    ------
    CondormlError
        If the text does not read back as the description, or a file cannot be written.
    """
    text = render_submit(job)
    check_reads_back(text, job, path)
    wrapper = path.parent / job.wrapper_name
    try:
        with atomic_write(wrapper, "w") as handle:
            handle.write(job.wrapper_text)
        wrapper.chmod(0o755)
        atomic_write_text(path, text)
    except OSError as err:
        raise CondormlError(f"{path}: cannot write ({err.strerror or err})") from err
    return WrittenJob(path, wrapper)
