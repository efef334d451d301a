"""Submit descriptions for training and inference jobs, built as ``htcondor2.Submit`` objects.

Describing a job is pure: :func:`train_description` and :func:`infer_description` return a
:class:`JobDescription` (the ``htcondor2.Submit``, its wrapper script and notes) and touch no
file. :func:`write_job` writes both atomically and reads the submit file back with HTCondor's own
parser, refusing to leave a file that does not read back as the description it was made from.

The job's sandbox layout is fixed, and everything lands at its top level, so no path in a
transfer list depends on ``preserve_relative_paths``:

* inputs arrive under their file names (``train.zip``, ``model.pth``; URLs pass through);
* a training job keeps its checkpoint in the folder ``ckpt/`` (``transfer_checkpoint_files =
  ckpt``: the folder comes back whole after an eviction) and returns it as its output; a
  sweep's, removed, stays in the queue with its last checkpoint (``leave_in_queue``);
* an inference job writes into the folder ``out/`` and returns it.

The wrapper creates those folders before anything else, so a declared output always exists
and a failing job fails (its exit code reaches DAGMan) instead of going on hold.

Local paths are written relative to the submit file's folder: submit from there
(``cd submit && condor_submit train.sub``), as DAGMan does for node jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from condorml import __version__
from condorml.architectures import is_model_file, job_value
from condorml.config import (
    ALWAYS,
    IF_SET,
    InferConfig,
    TrainConfig,
    option_fields,
    option_flag,
)
from condorml.errors import CondormlError, ExitCode
from condorml.fileio import atomic_write, atomic_write_text
from condorml.htcondor.inputs import input_entry, preserved_entry
from condorml.htcondor.quoting import (
    Macro,
    Token,
    classad_string,
    condor_arguments,
    plain_name,
    safe_value,
)
from condorml.htcondor.resources import (
    CHTC_DEFAULT_CHECKPOINT_MINUTES,
    Container,
    Profile,
    Resources,
    chtc_job_length,
)
from condorml.htcondor.wrappers import wrapper_script
from condorml.job.files import (
    CHECKPOINT_FOLDER,
    RESULTS_FOLDER,
    job_log_name,
    job_stream_name,
    shard_part_name,
)

log = logging.getLogger(__name__)

# Days a removed training job that has checkpointed stays in the queue ("X") with its spooled
# checkpoint: HTCondor's own choice for spooled output that nobody fetched (leave_in_queue of
# ``condor_submit -spool``: 10 days).
REMOVED_CHECKPOINT_DAYS = 10
# leave_in_queue of a sweep's training jobs. HTCondor deletes a job's spool, its last checkpoint,
# when the job leaves the queue; condor_rm of a job or of its DAG would take every running
# member's training with it. Checked on HTCondor 25.0.13: a removed job whose leave_in_queue is
# true stays (JobStatus 3) with its spool, DAGMan still ends (FINAL node, rescue DAG), and
# `condor_evicted_files dir` names the folder the checkpoint is in; `condor_rm -forcex` then lets
# the job go (its spool with it), as does the expression turning false (CheckpointNumber is
# undefined before a first checkpoint: a job with nothing to keep goes at once).
KEEP_REMOVED_CHECKPOINT = (
    "(JobStatus == 3) && (CheckpointNumber =!= undefined) && "
    f"(time() - EnteredCurrentStatus < {REMOVED_CHECKPOINT_DAYS} * 86400)"
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
        # Chirp: the trainer publishes its progress into its own job ad (condorml.job.chirp).
        commands["want_io_proxy"] = "true"
        if commands.get("universe") in ("container", "docker"):
            # The starter's Chirp proxy listens on the execute point's loopback, which a Docker
            # container on its own bridge network cannot reach ("Connection refused" on the
            # pool); with the host's network it can (HTCondor 25.0.13: docker create
            # --network=host). Apptainer shares the host's network without it.
            commands["docker_network_type"] = "host"
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
    params_file: str | None = None,
    searched: tuple[str, ...] = (),
    model_files: tuple[str, ...] = (),
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
        checkpoint that came back, instead of starting over; and, removed after a checkpoint,
        it stays in the queue with it (:data:`KEEP_REMOVED_CHECKPOINT`).
    extra : dict, optional
        Further submit commands, validated by
        :func:`condorml.htcondor.passthrough.extra_commands` (``[submit]``, ``--append``).
    params_file : str, optional
        A JSON file of hyperparameters in ``initialdir`` (TPE's ``params.json``): an input of the
        job, passed as ``--hyperparameters``.
    searched : tuple of str
        Options left out of the arguments because ``params_file`` gives them.
    model_files : tuple of str
        Model files (``FILE.py`` of ``--model FILE.py:CLASS``) the job receives besides the one
        ``config.model`` names: those of every member, when the model is swept.

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
    for option, value in (("--labels-csv", config.labels_csv),
                          ("--pretrained-weights", config.pretrained_weights)):  # fmt: skip
        if value is not None:
            entry, name = input_entry(str(value), submit_dir, option)
            inputs.append(entry)
            names.append(name)
            args += [option, name]
    code = [config.model.rpartition(":")[0]] if is_model_file(config.model) else []
    code_inputs, code_names = _model_file_inputs(list(dict.fromkeys([*code, *model_files])),
                                                 submit_dir, "--model")  # fmt: skip
    inputs += code_inputs
    names += code_names
    if initialdir is not None:
        inputs.append(CHECKPOINT_FOLDER)
        names.append(CHECKPOINT_FOLDER)
    if params_file is not None:
        inputs.append(safe_value(params_file, "params_file"))
        names.append(params_file)
        args += ["--hyperparameters", params_file]
    _unique_names(names)
    args += _training_arguments(config, swept, omit=searched)
    commands = _common(
        "train", TRAIN_WRAPPER, args, inputs, CHECKPOINT_FOLDER, resources, container, submit_dir
    )
    if initialdir is not None:
        commands = {"initialdir": initialdir, **commands}
        # its checkpoint outlives a condor_rm (of the job or its DAG) in the spool, so that a
        # stopped sweep can bring it back into the member's folder (README: stopping a sweep)
        commands["leave_in_queue"] = KEEP_REMOVED_CHECKPOINT
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
    their shortest round-tripping text, a model file its name in the job's sandbox
    (``models/net.py:Net`` -> ``net.py:Net``).
    """
    if isinstance(value, bool):
        return option_flag(name) if value else "--no-" + name.replace("_", "-")
    if isinstance(value, float):
        return repr(value)
    if name == "model":  # a model file by its name in the sandbox, where the job receives it
        value = job_value(str(value))
    return safe_value(str(value), option_flag(name))


def job_arguments(
    options: object, written: str, swept: tuple[str, ...] = (), omit: tuple[str, ...] = ()
) -> list[Token]:
    """The options of ``options`` (a dataclass) that a job's command line carries as ``written``.

    :data:`~condorml.config.ALWAYS` options are written every time, so that a job never depends
    on condorml's defaults; :data:`~condorml.config.IF_SET` ones only when not None (or False).
    A swept option is a macro the DAG's VARS define, whatever its example value; an ``omit``
    one is not written (a hyperparameters file gives it).
    """
    args: list[Token] = []
    for name, (_, meta) in option_fields(type(options)).items():
        if meta.job != written or name in omit:
            continue
        value = getattr(options, name)
        if name not in swept and written == IF_SET and (value is None or value is False):
            continue
        if isinstance(value, bool):  # a flag: the macro (or the value) is the whole token
            args.append(Macro(name) if name in swept else argument_text(name, value))
        else:
            args += [
                option_flag(name),
                Macro(name) if name in swept else argument_text(name, value),
            ]
    return args


def _training_arguments(
    config: TrainConfig, swept: tuple[str, ...] = (), omit: tuple[str, ...] = ()
) -> list[Token]:
    """The training options as tokens.

    Every member runs the same ``train.sub``, written from one member's values: an option left
    out because of that member's value (``momentum`` with adam) would be left out for every
    member, and another member would silently train with the default. So every option a job
    depends on is written, used or not; a member's checkpoint records what members.csv says.
    """
    swept = tuple(name for name in swept if name not in omit)
    return job_arguments(config, ALWAYS, swept, omit) + job_arguments(config, IF_SET, swept, omit)


def _check_infer_job(config: InferConfig, resources: Resources) -> str | None:
    """Refuse an inference job that cannot work; the predictions CSV's name (None: the name the
    models' classes give, ``dog_probs.csv`` or ``probs.csv``)."""
    if not config.models:
        raise CondormlError("--model: give at least one model")
    if config.shards < 1:
        raise CondormlError(f"--shards {config.shards}: must be 1 or more")
    if config.batch_size < 1:
        raise CondormlError(f"--batch-size {config.batch_size}: must be 1 or more")
    if config.device == "cuda" and not resources.gpus:
        raise CondormlError("--device cuda without --gpus: the job would get no GPU")
    if config.output is None:
        return None
    name = str(config.output)
    output = PurePosixPath(safe_value(name, "--output"))
    if output.name != name or output.suffix != ".csv":
        raise CondormlError(
            f"--output {name!r}: a file name ending in .csv (it is written to out/)"
        )
    plain_name(name, "--output")  # also inside a macro of the arguments: no spaces
    return name


def _infer_inputs(
    models: list[str], images: str, submit_dir: Path
) -> tuple[list[str], list[str], str, bool]:
    """(transfer_input_files entries, the models' sandbox paths, the images' sandbox path,
    whether the job needs ``preserve_relative_paths``)."""
    entries = [input_entry(m, submit_dir, "--model") for m in models]
    image_entry, image_name = input_entry(images, submit_dir, "--images")
    names = [name for _, name in entries]
    # An ensemble's models are often all model.pth (members/<id>/model.pth): they keep their
    # folders in the sandbox (preserve_relative_paths) instead of colliding at its top.
    preserve = len(set(names)) != len(names)
    if preserve:
        entries = [preserved_entry(entry, name, submit_dir) for entry, name in entries]
        image_entry, image_name = preserved_entry(image_entry, image_name, submit_dir)
        names = [name for _, name in entries]
    _unique_names([*names, image_name])
    return [entry for entry, _ in entries] + [image_entry], names, image_name, preserve


def _model_file_inputs(
    files: list[str], submit_dir: Path, option: str
) -> tuple[list[str], list[str]]:
    """(transfer_input_files entries, sandbox names) of model files (``FILE.py`` of ``--model
    FILE.py:CLASS``): each lands at the top of the sandbox under its name."""
    found = [input_entry(safe_value(str(f), option), submit_dir, option) for f in files]
    return [entry for entry, _ in found], [name for _, name in found]


def infer_description(
    config: InferConfig,
    resources: Resources,
    container: Container,
    profile: Profile,
    submit_dir: Path,
    initialdir: str | None = None,
    extra: dict[str, str] | None = None,
) -> JobDescription:
    """Describe an inference job, or ``config.shards`` of them (``queue N``, ``--shard $(ProcId)/N``).

    The CSV and its sidecar come back in ``out/``: ``config.output`` if it names one, else
    the name the models' classes give (``dog_probs.csv`` for cat/dog, ``probs.csv``); sharded,
    ``<stem>.part<ProcId>.csv``, to be joined with ``condorml merge``. ``config.model_files``
    (the code of models trained from a file) travel with the job. ``extra`` as for
    :func:`train_description`.

    Raises
    ------
    CondormlError
        For invalid options or values that cannot be written safely.
    """
    name = _check_infer_job(config, resources)
    models = [str(m) for m in config.models]
    inputs, names, image_name, preserve = _infer_inputs(models, str(config.images), submit_dir)
    code_inputs, code_names = _model_file_inputs(
        list(config.model_files), submit_dir, "--model-file"
    )
    _unique_names([*names, image_name, *code_names])
    args: list[Token] = ["infer"]
    for model in names:
        args += ["--model", model]
    args += ["--images", image_name, *job_arguments(config, ALWAYS)]
    for code in code_names:
        args += ["--model-file", code]
    if config.shards > 1:
        args += ["--output", Macro("condorml_output"), "--shard", Macro("condorml_shard")]
    else:
        args += ["--output", f"{RESULTS_FOLDER}/{name or ''}"]
    args += job_arguments(config, IF_SET)
    commands = _common("infer", INFER_WRAPPER, args, [*inputs, *code_inputs], RESULTS_FOLDER,
                       resources, container, submit_dir)  # fmt: skip
    if preserve:
        commands["preserve_relative_paths"] = "true"
    if initialdir is not None:
        commands = {"initialdir": initialdir, **commands}
    if config.shards > 1:
        part = (
            f"{RESULTS_FOLDER}/{shard_part_name(name, '$(ProcId)')}"
            if name
            else f"{RESULTS_FOLDER}/"
        )
        # Helper macros, defined before the arguments that use them (they expand per job).
        commands = {
            "condorml_shard": f"$(ProcId)/{config.shards}",
            "condorml_output": part,
            **commands,
        }
    if profile.name == "chtc" and resources.gpus:
        length = profile.gpu_job_length or "short"
        commands.update(
            {"My.WantGPULab": "true", "My.GPUJobLength": classad_string(length, "--gpu-job-length")}
        )
    commands = _with_extra(commands, extra)
    notes = []
    if config.shards > 1:
        shown = PurePosixPath(name).stem if name else "<dog_probs|probs>"
        notes.append(
            f"{config.shards} jobs write out/{shown}.part<N>.csv; join them with: condorml merge {name or 'PREDICTIONS.csv'} out/{shown}.part*.csv"
        )
    return JobDescription(
        _submit(commands, config.shards),
        INFER_WRAPPER,
        wrapper_script("infer", RESULTS_FOLDER),
        notes,
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
        with atomic_write(wrapper, "w", executable=True) as handle:  # executable when it appears
            handle.write(job.wrapper_text)
        atomic_write_text(path, text)
    except OSError as err:
        raise CondormlError(f"{path}: cannot write ({err.strerror or err})") from err
    return WrittenJob(path, wrapper)
