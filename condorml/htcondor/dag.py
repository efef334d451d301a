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
  ``shards`` jobs of one cluster), writing ``out/dog_probs.csv``.
* ``collect`` is the FINAL node: it always runs, also when members failed, and its exit code is
  the DAG's: 0 when at least ``min_members`` members produced predictions (it averages those
  into the ensemble ``dog_probs.csv`` and lists the others as failed), 1 otherwise.

Nodes, VARS (quoted, ``"`` and ``\\`` escaped), RETRY, CATEGORY, edges and FINAL come from
``htcondor2.dags``. MAXJOBS is written here: ``htcondor2.dags`` writes a category throttle as
``CATEGORY <name> <n>`` (HTCondor 25.14), which DAGMan reads as putting a node in a category.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml.config import TrainConfig
from condorml.errors import CondormlError, ExitCode
from condorml.htcondor.inputs import local_path
from condorml.htcondor.quoting import safe_value
from condorml.htcondor.resources import RESOURCE_FIELDS, Container, Profile, Resources
from condorml.htcondor.submit import (
    CHECKPOINT_FOLDER,
    InferJob,
    JobDescription,
    argument_text,
    collect_description,
    infer_description,
    train_description,
)
from condorml.job.files import CHECKPOINT_FILE
from condorml.sweep.members import Member
from condorml.sweep.rundir import MEMBERS_FOLDER
from condorml.sweep.spec import SweepSpec

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
    """Node names ``<layer>_<member id>`` (a NodeNameFormatter for htcondor2.dags)."""

    def __init__(self, members: list[Member]) -> None:
        self.ids = [m.member for m in members]
        self.index = {m: i for i, m in enumerate(self.ids)}

    def generate(self, layer_name: str, node_index: int) -> str:
        return f"{layer_name}_{self.ids[node_index]}"

    def parse(self, node_name: str) -> tuple[str, int]:
        layer, _, member = node_name.rpartition("_")
        return layer, self.index[member]


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
              _EXIT_CODES_NOTE]  # fmt: skip
    return SweepWorkflow(
        header + lines, {"train": train, "infer": infer, "collect": collect}, members, maxjobs
    )


def _train_job(spec: SweepSpec, member: Member, first: Path) -> tuple[JobDescription, Resources]:
    """The training jobs' submit description (swept options as VARS) and their resources.

    ``member`` is any member: its values stand for the swept ones when the options are checked.
    """
    train_resources, container, profile = _pool(spec.resources, f"{spec.path}: [resources]")
    swept = (*spec.swept, "seed", "member")
    options = member.options(spec.train)
    config = TrainConfig(
        data_dir=Path(spec.data["train"]), checkpoint_dir=Path(CHECKPOINT_FOLDER), **options
    )
    train = train_description(config, spec.data["train"], train_resources, container, profile, first,
                              swept=swept, initialdir="$(member_dir)", extra=spec.submit)  # fmt: skip
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
    job = InferJob(**inference)
    model = os.path.relpath(
        os.path.abspath(first / CHECKPOINT_FOLDER / CHECKPOINT_FILE)
    )  # -> ckpt/model.pth
    infer = infer_description([model], spec.data["test"], job, infer_resources, infer_container,
                              infer_profile, first, initialdir="$(member_dir)", extra=infer_extra)  # fmt: skip
    return infer, with_stats


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
    train_layer = dag.layer(
        name="train", submit_description=train.submit, vars=[_train_vars(m, spec.swept) for m in members],
        retries=retries or None, retry_unless_exit=USAGE_ERROR_EXIT if retries else None, category="train",
    )  # fmt: skip
    train_layer.child_layer(
        name="infer", submit_description=infer.submit,
        vars=[{"member": m.member, "member_dir": member_dir(m)} for m in members], edge=dags.OneToOne(),
        retries=retries or None, retry_unless_exit=USAGE_ERROR_EXIT if retries else None, category="infer",
    )  # fmt: skip
    dag.final(name="collect", submit_description=collect.submit)
    return list(dags.writer.DAGWriter(dag, _MemberNames(members)).yield_dag_file_lines())


_EXIT_CODES_NOTE = (
    f"# Jobs exit {', '.join(f'{int(code)} {code.name.lower()}' for code in ExitCode)}; "
    f"RETRY retries all failures but {USAGE_ERROR_EXIT}."
)


def _train_vars(member: Member, swept: tuple[str, ...]) -> dict[str, str]:
    values = {"member": member.member, "member_dir": member_dir(member), "seed": str(member.seed)}
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
