"""The DAGMan workflow of a sweep: train every member, infer with each, collect the ensemble.

Pure describe code: :func:`sweep_workflow` returns the DAG's lines and the three submit
descriptions; :mod:`condorml.sweep.plan` writes them.

The graph, for members ``m000`` .. ``mNNN``::

    train_m000 -> infer_m000 ┐
    train_m001 -> infer_m001 ├─> FINAL collect
    ...                      ┘

* ``train_<id>`` runs ``train.sub`` with VARS ``member``, ``member_dir`` (its ``initialdir``,
  ``members/<id>``), ``seed`` and the swept hyperparameters; ``RETRY n UNLESS-EXIT 2``: a
  permanent error (exit 2: options, spec, data, a checkpoint of another configuration) fails the
  node at once, every other failure (exit 75 transient, 1 a bug, a signal) is retried, and the
  retry resumes from the checkpoint the failed job brought back (:class:`~condorml.errors.ExitCode`);
  CATEGORY ``train``, throttled by MAXJOBS.
* ``infer_<id>`` runs ``infer.sub`` in the same folder on ``ckpt/model.pth`` (one job, or
  ``shards`` jobs of one cluster), writing ``out/dog_probs.csv`` (``out/probs.csv`` for classes
  other than cat and dog).
* ``collect`` is the FINAL node: it always runs, also when members failed, and its exit code is
  the DAG's: 0 when at least ``min_members`` members produced predictions (it averages those
  into the ensemble ``dog_probs.csv`` or ``probs.csv`` and lists the others as failed), 1
  otherwise.

Nodes, VARS (quoted, ``"`` and ``\\`` escaped), RETRY, CATEGORY, edges and FINAL come from
``htcondor2.dags``. MAXJOBS is written here: ``htcondor2.dags`` writes a category throttle as
``CATEGORY <name> <n>`` (HTCondor 25.14), which DAGMan reads as putting a node in a category.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml.architectures import is_model_file
from condorml.config import InferConfig, TrainConfig
from condorml.errors import CondormlError, ExitCode, ScriptExit
from condorml.htcondor.inputs import local_path
from condorml.htcondor.quoting import safe_value
from condorml.htcondor.resources import RESOURCE_FIELDS, Container, Profile, Resources
from condorml.htcondor.submit import (
    CHECKPOINT_FOLDER,
    JobDescription,
    argument_text,
    collect_description,
    infer_description,
    train_description,
)
from condorml.job.files import CHECKPOINT_FILE
from condorml.sweep.members import Member
from condorml.sweep.rundir import MEMBERS_FOLDER, PARAMS_FILE, NodeName
from condorml.sweep.spec import SweepSpec

_RUNG_SUBMIT = re.compile(r"^(JOB \S+ )train_r\d+\.sub$")
DEFAULT_RETRIES = 2
DEFAULT_GPU_MAXJOBS = 20  # polite on a shared GPU pool (CHTC has ~150); raise in [throttle]
USAGE_ERROR_EXIT = int(ExitCode.PERMANENT)  # the one exit code RETRY does not retry


@dataclass
class SweepWorkflow:
    """What a sweep's run folder holds, before it is written."""

    dag_lines: list[str]
    jobs: dict[str, JobDescription]  # "train", "infer", "collect" -> description
    members: list[Member]
    maxjobs: dict[str, int]


def member_dir(member: Member) -> str:
    """The member's folder, relative to the run folder."""
    return f"{MEMBERS_FOLDER}/{member.member}"


def _pool(table: dict[str, Any], where: str) -> tuple[Resources, Container, Profile]:
    """Resources, container and profile from a spec table (``[resources]``)."""
    try:
        resources = Resources(**{k: v for k, v in table.items() if k in RESOURCE_FIELDS})
    except TypeError as err:
        raise CondormlError(f"{where}: {err}") from None
    container = Container(
        table.get("container_image"), table.get("docker_image"), table.get("python")
    )
    profile = Profile(table.get("profile", "none"), table.get("gpu_job_length"))
    return resources, container, profile


class _MemberNames:
    """Node names :class:`~condorml.sweep.rundir.NodeName` (``train_m007``, ``train_m007_r2``)
    from layers ``train``, ``train_r2``, ``infer`` (a NodeNameFormatter for htcondor2.dags)."""

    def __init__(self, members: list[Member]) -> None:
        self.ids = [m.member for m in members]
        self.index = {m: i for i, m in enumerate(self.ids)}

    def generate(self, layer_name: str, node_index: int) -> str:
        kind, _, rung = layer_name.partition("_r")
        return str(NodeName(kind, self.ids[node_index], int(rung) if rung else None))

    def parse(self, node_name: str) -> tuple[str, int]:
        node = NodeName.parse(node_name)
        if node is None:
            raise ValueError(f"not a member's node: {node_name}")
        layer = node.kind if node.rung is None else f"{node.kind}_r{node.rung}"
        return layer, self.index[node.member]


def generating_python() -> str:
    """The interpreter running condorml now, as an absolute path (a virtualenv's own, unresolved).

    The collect step runs on the access point with this interpreter: it is where the condorml
    that writes the files is installed.
    """
    return os.path.abspath(sys.executable)


def sweep_workflow(spec: SweepSpec, members: list[Member], run_dir: Path) -> SweepWorkflow:
    """Describe the DAG and submit files of a sweep whose run folder is ``run_dir``.

    Raises
    ------
    CondormlError
        For resources, containers or values that cannot be written safely.
    """
    first = run_dir / member_dir(members[0])  # every member folder is at this depth
    train, train_resources = _train_job(spec, members[0], first)
    infer, with_stats = _infer_job(spec, first)
    collect = _collect_job(spec, run_dir, with_stats)
    lines = _dag_lines(spec, members, train, infer, collect)
    maxjobs = _maxjobs(spec, train_resources)
    lines += [f"MAXJOBS {category} {n}" for category, n in maxjobs.items()]
    header = [f"# condorml sweep of {len(members)} member(s) from {spec.path.name}; generated, do not edit.",
              "# Submit from this folder: condor_submit_dag sweep.dag (or: condorml run sweep.dag).",
              _EXIT_CODES_NOTE, *([_SCRIPT_CODES_NOTE] if spec.search else [])]  # fmt: skip
    return SweepWorkflow(
        header + lines, {"train": train, "infer": infer, "collect": collect}, members, maxjobs
    )


def _train_job(spec: SweepSpec, member: Member, first: Path) -> tuple[JobDescription, Resources]:
    """The training jobs' submit description (swept options as VARS) and their resources.

    ``member`` is any member: its values stand for the swept ones when the options are checked.
    """
    train_resources, container, profile = _pool(spec.resources, f"{spec.path}: [resources]")
    search = spec.search
    tpe = search is not None and search.method == "tpe"
    swept = (*(() if tpe else spec.swept), "seed", "member")  # TPE's values: params.json
    options = member.options(spec.train)
    if search is not None and search.halving is not None:  # each rung's VARS: where it stops
        swept += ("stop_after_epoch",)
        options["stop_after_epoch"] = search.rungs(spec.epochs)[0]
    model = options.get("model")
    if isinstance(model, str) and is_model_file(model):  # the file as resolved: a job input
        file, _, class_name = model.rpartition(":")
        options["model"] = f"{spec.model_paths[file]}:{class_name}"
    labels = spec.data.get("train_labels")
    config = TrainConfig(
        data_dir=Path(spec.data["train"]), checkpoint_dir=Path(CHECKPOINT_FOLDER),
        labels_csv=Path(labels) if labels else None, **options,
    )  # fmt: skip
    train = train_description(config, spec.data["train"], train_resources, container, profile, first,
                              swept=swept, initialdir="$(member_dir)", extra=spec.submit,
                              params_file=PARAMS_FILE if tpe else None,
                              searched=spec.swept if tpe else (),
                              model_files=tuple(spec_model_files(spec)))  # fmt: skip
    return train, train_resources


def _infer_job(spec: SweepSpec, first: Path) -> tuple[JobDescription, bool]:
    """The inference jobs' submit description, and whether collect adds ensemble statistics."""
    inference = dict(spec.inference)
    # Inference is light: a CPU job unless [inference.resources] says otherwise; the container
    # and pool profile are the training jobs'.
    shared = {k: v for k, v in spec.resources.items() if k not in RESOURCE_FIELDS}
    infer_table = {"cpus": 4, **shared, **inference.pop("resources", {})}
    infer_resources, infer_container, infer_profile = _pool(
        infer_table, f"{spec.path}: [inference.resources]"
    )
    with_stats = inference.pop("with_stats", False)  # an ensemble statistic: the collect step's
    infer_extra = {**spec.submit, **inference.pop("submit", {})}
    model = os.path.relpath(
        os.path.abspath(first / CHECKPOINT_FOLDER / CHECKPOINT_FILE)
    )  # -> ckpt/model.pth
    # No output name: the job writes dog_probs.csv or probs.csv into out/ as the classes say.
    config = InferConfig(models=(model,), images=spec.data["test"],
                         model_files=tuple(Path(f) for f in spec_model_files(spec)), **inference)  # fmt: skip
    infer = infer_description(config, infer_resources, infer_container, infer_profile, first,
                              initialdir="$(member_dir)", extra=infer_extra)  # fmt: skip
    return infer, with_stats


def spec_model_files(spec: SweepSpec) -> list[str]:
    """The model files (``FILE.py`` of ``model = "FILE.py:CLASS"``) any member of the sweep may
    train: every training and inference job receives them all (a few kilobytes each)."""
    return list(spec.model_paths.values())


def _collect_job(spec: SweepSpec, run_dir: Path, with_stats: bool) -> JobDescription:
    """The FINAL collect step's submit description, run in the run folder."""
    collect_args = [".", "--min-members", str(spec.min_members)]
    if "labels" in spec.data:
        collect_args += [
            "--labels",
            local_path(spec.data["labels"], run_dir, "[data] labels", transferred=False),
        ]
    if with_stats:
        collect_args.append("--with-stats")
    if spec.top_k is not None:
        collect_args += ["--top-k", str(spec.top_k)]
    if spec.search is not None:
        collect_args += ["--metric", spec.search.metric]
    if "labels" not in spec.data and "://" not in spec.data["test"]:
        # the test set's own labels score the members if it is laid out with them
        collect_args += [
            "--test-images",
            local_path(spec.data["test"], run_dir, "[data] test", transferred=False),
        ]
    return collect_description(collect_args, generating_python())


def _dag_lines(
    spec: SweepSpec,
    members: list[Member],
    train: JobDescription,
    infer: JobDescription,
    collect: JobDescription,
) -> list[str]:
    """The DAG's nodes, VARS, RETRY, CATEGORY, edges and FINAL, as htcondor2.dags writes them."""
    import htcondor2.dags as dags

    retries = spec.throttle.get("retries", DEFAULT_RETRIES)
    dag = dags.DAG()
    search = spec.search
    rungs = search.rungs(spec.epochs) if search else (spec.epochs,)
    halving = search is not None and search.halving is not None
    in_vars = spec.swept if search is None or search.method != "tpe" else ()  # TPE: params.json
    retry = {"retries": retries or None, "retry_unless_exit": USAGE_ERROR_EXIT if retries else None}
    layer: Any = dag
    for rung, end in enumerate(rungs, start=1):
        layer_vars = [_train_vars(m, in_vars, end if halving else None) for m in members]
        scripts = _search_scripts(spec, rung) if search else {}
        layer = layer.child_layer if rung > 1 else layer.layer
        layer = layer(
            name=f"train_r{rung}" if halving else "train", submit_description=train.submit,
            vars=layer_vars, category="train", **retry, **scripts,
            **({"edge": dags.OneToOne()} if rung > 1 else {}),
        )  # fmt: skip
    layer.child_layer(
        name="infer", submit_description=infer.submit,
        vars=[{"member": m.member, "member_dir": member_dir(m)} for m in members], edge=dags.OneToOne(),
        category="infer", **retry, **(_search_scripts(spec, None) if halving else {}),
    )  # fmt: skip
    dag.final(name="collect", submit_description=collect.submit)
    lines = dags.writer.DAGWriter(dag, _MemberNames(members)).yield_dag_file_lines()
    # htcondor2.dags names a layer's submit file after the layer: every rung runs train.sub
    return [_RUNG_SUBMIT.sub(r"\1train.sub", line) for line in lines]


_EXIT_CODES_NOTE = (
    f"# Jobs exit {', '.join(f'{int(code)} {code.name.lower()}' for code in ExitCode)}; "
    f"RETRY retries all failures but {USAGE_ERROR_EXIT}."
)
_SCRIPT_CODES_NOTE = (
    f"# condorml search PRE scripts exit 0 run, {int(ScriptExit.SKIP)} skip (PRE_SKIP: the member "
    f"stopped), {int(ScriptExit.DEFER)} wait (SCRIPT DEFER)."
)


def _search_scripts(spec: SweepSpec, rung: int | None) -> dict[str, Any]:
    """The PRE/POST scripts of a search's node: training rung ``rung``, or inference (None).

    PRE (``condorml search pre``) before TPE's first rung (its choice), before every later rung
    (halving's decision; ``PRE_SKIP`` when the member stopped) and before inference (skipped for
    a stopped member); deciding PRE scripts wait with ``SCRIPT DEFER``. POST (``condorml search
    post``) after every training rung records its result and passes the job's exit code on.
    """
    import htcondor2.dags as dags

    assert spec.search is not None
    python = safe_value(generating_python(), "the Python interpreter running condorml")
    if any(c.isspace() for c in python):
        raise CondormlError(
            f"{python}: DAGMan splits SCRIPT lines at spaces; run condorml from an interpreter whose path has none"
        )
    command = [python, "-m", "condorml", "search"]
    scripts: dict[str, Any] = {}
    decides = rung is None or rung > 1 or spec.search.method == "tpe"
    if decides:
        defer = rung is not None  # inference only skips or runs
        scripts["pre"] = dags.Script(python, [*command[1:], "pre", ".", "$NODE"], retry=defer,
                                     retry_status=int(ScriptExit.DEFER), retry_delay=spec.search.recheck_seconds)  # fmt: skip
        if rung is None or rung > 1:
            scripts["pre_skip_exit_code"] = int(ScriptExit.SKIP)
    if rung is not None:
        scripts["post"] = dags.Script(python, [*command[1:], "post", ".", "$NODE", "$RETURN", "$RETRY", "$MAX_RETRIES"])  # fmt: skip
    return scripts


def _train_vars(member: Member, swept: tuple[str, ...], stop: int | None = None) -> dict[str, str]:
    values = {"member": member.member, "member_dir": member_dir(member), "seed": str(member.seed)}
    if stop is not None:
        values["stop_after_epoch"] = str(stop)
    for name in swept:
        values[name] = argument_text(name, member.hyperparameters[name])
    for name, value in values.items():
        safe_value(value, f"VARS {name}")  # htcondor2.dags escapes quotes, not newlines
    return values


def _maxjobs(spec: SweepSpec, train_resources: Resources) -> dict[str, int]:
    maxjobs = {}
    train = spec.throttle.get("max_train_jobs", DEFAULT_GPU_MAXJOBS if train_resources.gpus else 0)
    if train:
        maxjobs["train"] = train
    if spec.throttle.get("max_infer_jobs"):
        maxjobs["infer"] = spec.throttle["max_infer_jobs"]
    return maxjobs
