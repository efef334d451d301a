"""Sweep specifications: a TOML file in, a deterministic list of ensemble members out.

Pure describe code: :func:`load_spec` reads and validates the file, :func:`expand` turns it into
:class:`Member` records with stable ids. Nothing here writes a file or imports torch.

Expansion order (documented in the README, relied on by resumed runs): the grid's combinations
in the order its keys and values are written (the last key varies fastest), each crossed with
the random samples in the order they are drawn, each crossed with the ensemble seeds. Member
``k`` is ``m{k:03d}`` (wider when there are 1,000 or more), so the same spec always gives the
same ids, hyperparameters and folders.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from condorml.config import TrainConfig
from condorml.errors import CondormlError
from condorml.htcondor.passthrough import extra_commands

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Options a sweep may vary (grid / random) or fix ([train]); the rest belong to the job layout.
HYPERPARAMETERS = (
    "epochs", "model", "image_size", "lr", "batch_size", "optimizer", "weight_decay", "momentum",
    "scheduler", "val_fraction", "freeze_backbone", "precision",
)  # fmt: skip
FIXED_ONLY = (
    "checkpoint_every",
    "checkpoint_minutes",
    "split_seed",
    "workers",
    "device",
    "pretrained_weights",
)
SECTIONS = ("data", "train", "grid", "random", "ensemble", "resources", "submit", "inference",
            "throttle")  # fmt: skip
DATA_KEYS = ("train", "test", "labels")
ENSEMBLE_KEYS = ("members", "seeds", "min_members")
RESOURCE_KEYS = (
    "cpus", "memory", "disk", "gpus", "gpu_capability_min", "gpu_capability_max", "gpu_memory_min",
    "gpu_runtime_min", "require_gpus", "container_image", "docker_image", "python", "profile",
    "gpu_job_length",
)  # fmt: skip
INFERENCE_KEYS = ("shards", "batch_size", "precision", "with_stats", "resources", "submit")
THROTTLE_KEYS = ("max_train_jobs", "max_infer_jobs", "retries")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform")
SIGNIFICANT_DIGITS = 4  # random floats are rounded: readable ids, CSVs and command lines
_TYPES = {f.name: f.type for f in fields(TrainConfig)}


@dataclass(frozen=True)
class Member:
    """One ensemble member: its id, its seed, and every training option that differs by member."""

    member: str
    seed: int
    hyperparameters: dict[str, Any]  # the swept values (and nothing fixed)

    def options(self, fixed: dict[str, Any]) -> dict[str, Any]:
        """All training options of this member: the fixed ones, its hyperparameters, its seed."""
        return {**fixed, **self.hyperparameters, "seed": self.seed, "member": self.member}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep specification (see ``dags/example.toml``)."""

    path: Path
    text: str
    data: dict[str, str]
    train: dict[str, Any]
    grid: dict[str, list[Any]]
    random: dict[str, Any]
    samples: int
    random_seed: int
    seeds: tuple[int, ...]
    min_members: int
    resources: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    throttle: dict[str, Any] = field(default_factory=dict)
    submit: dict[str, str] = field(default_factory=dict)  # extra commands of every job

    @property
    def swept(self) -> tuple[str, ...]:
        """The hyperparameters that vary, in spec order (grid, then random)."""
        return (*self.grid, *self.random)


def _fail(where: str, message: str) -> CondormlError:
    return CondormlError(f"{where}: {message}")


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise _fail(
                f"{where}.{key}" if where else key, f"unknown key; valid keys: {', '.join(allowed)}"
            )


def _table(doc: dict[str, Any], name: str, where: Path) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise _fail(f"{where}: [{name}]", "must be a table")
    return value


def load_spec(path: Path) -> SweepSpec:
    """Read and validate a sweep specification.

    Relative data paths are taken relative to the spec file's folder.

    Raises
    ------
    CondormlError
        For a missing or malformed file, unknown sections or keys, unknown hyperparameters, empty
        grids, impossible ranges or member counts, naming the key and the valid choices.
    """
    try:
        text = path.read_text()
        doc = tomllib.loads(text)
    except FileNotFoundError:
        raise CondormlError(f"{path}: no such sweep specification") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CondormlError(f"{path}: not valid TOML ({err})") from None
    _check_keys(doc, SECTIONS, f"{path}: section")
    data = _table(doc, "data", path)
    _check_keys(data, DATA_KEYS, f"{path}: data")
    for key in ("train", "test"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(
                f"{path}: data.{key}",
                "required: the training zip and the test images (a path or an osdf:/// URL)",
            )
    if "labels" in data and not isinstance(data["labels"], str):
        raise _fail(f"{path}: data.labels", "a path to a fileid,is_dog CSV")
    data = {key: _resolve(value, path.parent) for key, value in data.items()}

    train = dict(_table(doc, "train", path))
    _check_keys(train, HYPERPARAMETERS + FIXED_ONLY, f"{path}: train")
    grid = _grid(_table(doc, "grid", path), path)
    random_table = dict(_table(doc, "random", path))
    samples = random_table.pop("samples", 1 if random_table else 0)
    random_seed = random_table.pop("seed", 0)
    if not isinstance(samples, int) or samples < (1 if random_table else 0):
        raise _fail(f"{path}: random.samples", "a positive integer")
    if not isinstance(random_seed, int):
        raise _fail(f"{path}: random.seed", "an integer")
    random = {name: _distribution(name, spec, path) for name, spec in random_table.items()}
    for name in set(train) & (set(grid) | set(random)):
        raise _fail(
            f"{path}: train.{name}", "is also swept in [grid] or [random]; give it in one place"
        )
    for name in set(grid) & set(random):
        raise _fail(f"{path}: random.{name}", "is also in [grid]; give it in one place")

    ensemble = _table(doc, "ensemble", path)
    _check_keys(ensemble, ENSEMBLE_KEYS, f"{path}: ensemble")
    seeds = _seeds(ensemble, path)
    min_members = ensemble.get("min_members", 1)
    if not isinstance(min_members, int) or min_members < 1:
        raise _fail(f"{path}: ensemble.min_members", "a positive integer")

    resources = _table(doc, "resources", path)
    _check_keys(resources, RESOURCE_KEYS, f"{path}: resources")
    inference = dict(_table(doc, "inference", path))
    _check_keys(inference, INFERENCE_KEYS, f"{path}: inference")
    _check_keys(inference.get("resources", {}), RESOURCE_KEYS, f"{path}: inference.resources")
    submit = extra_commands(_table(doc, "submit", path), f"{path}: [submit]")
    if "submit" in inference:
        if not isinstance(inference["submit"], dict):
            raise _fail(f"{path}: [inference.submit]", "must be a table")
        inference["submit"] = extra_commands(inference["submit"], f"{path}: [inference.submit]")
    throttle = _table(doc, "throttle", path)
    _check_keys(throttle, THROTTLE_KEYS, f"{path}: throttle")
    for key, value in throttle.items():
        if not isinstance(value, int) or value < 0:
            raise _fail(f"{path}: throttle.{key}", "a non-negative integer")
    return SweepSpec(path, text, data, train, grid, random, samples, random_seed, seeds,
                     min_members, dict(resources), inference, dict(throttle), submit)  # fmt: skip


def _resolve(value: str, folder: Path) -> str:
    """A spec-relative path as a path relative to the working directory (URLs, absolute as given).

    Kept relative so that the submit files, which write local paths relative to each member's
    folder, stay relative too: a run folder can move with its data.
    """
    if "://" in value or Path(value).is_absolute():
        return value
    return os.path.relpath(os.path.abspath(folder / value))


def _grid(table: dict[str, Any], path: Path) -> dict[str, list[Any]]:
    _check_keys(table, HYPERPARAMETERS, f"{path}: grid")
    for name, values in table.items():
        if not isinstance(values, list) or not values:
            raise _fail(f"{path}: grid.{name}", "an empty grid; give a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise _fail(
                f"{path}: grid.{name}", "lists a value twice: the members would be duplicates"
            )
        for value in values:
            _check_value(name, value, f"{path}: grid.{name}")
    return dict(table)


def _distribution(name: str, spec: Any, path: Path) -> Any:
    where = f"{path}: random.{name}"
    if name not in HYPERPARAMETERS:
        raise _fail(where, f"unknown hyperparameter; valid names: {', '.join(HYPERPARAMETERS)}")
    if isinstance(spec, list):
        if not spec:
            raise _fail(where, "an empty list of choices")
        for value in spec:
            _check_value(name, value, where)
        return list(spec)
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise _fail(
            where,
            f"a list of choices or one of {{{' | '.join(f'{d} = [low, high]' for d in DISTRIBUTIONS)}}}",
        )
    kind, bounds = next(iter(spec.items()))
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)):  # fmt: skip
        raise _fail(where, f"{kind} needs [low, high]")
    low, high = bounds
    if not low < high:
        raise _fail(where, f"impossible range [{low}, {high}]: low must be below high")
    if kind == "log_uniform" and low <= 0:
        raise _fail(where, f"log_uniform needs positive bounds, not [{low}, {high}]")
    if kind == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
        raise _fail(where, "int_uniform needs integer bounds")
    expected = _TYPES[name]
    if kind != "int_uniform" and "float" not in str(expected):
        raise _fail(where, f"{name} takes whole numbers or choices, not a {kind} range")
    for bound in bounds:
        _check_value(name, bound, where)
    return {kind: [low, high]}


def _check_value(name: str, value: Any, where: str) -> None:
    """Validate one value by building the training configuration it belongs to."""
    expected = str(_TYPES[name])
    ok = (
        (isinstance(value, bool) and "bool" in expected)
        or (isinstance(value, int) and not isinstance(value, bool) and ("int" in expected or "float" in expected))
        or (isinstance(value, float) and "float" in expected)
        or (isinstance(value, str) and "str" in expected)
    )  # fmt: skip
    if not ok:
        raise _fail(where, f"{value!r} is not a valid {name} ({expected})")
    try:
        TrainConfig(Path("."), Path("."), **{name: value}).validate()
    except CondormlError as err:
        raise _fail(where, str(err)) from None


def _seeds(ensemble: dict[str, Any], path: Path) -> tuple[int, ...]:
    if "seeds" in ensemble and "members" in ensemble:
        raise _fail(f"{path}: ensemble", "give members (seeds 0..N-1) or seeds, not both")
    if "seeds" in ensemble:
        seeds = ensemble["seeds"]
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        ):
            raise _fail(f"{path}: ensemble.seeds", "a non-empty list of integers")
        if len(set(seeds)) != len(seeds):
            raise _fail(
                f"{path}: ensemble.seeds", "lists a seed twice: the members would be duplicates"
            )
        return tuple(seeds)
    members = ensemble.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise _fail(f"{path}: ensemble.members", "a positive integer (seeds 0 .. members-1)")
    return tuple(range(members))


def _sample(spec: SweepSpec) -> list[dict[str, Any]]:
    """The random section's samples, drawn in key order from one seeded generator."""
    if not spec.random:
        return [{}]
    rng = np.random.default_rng(spec.random_seed)
    samples = []
    for _ in range(spec.samples):
        sample = {}
        for name, dist in spec.random.items():
            if isinstance(dist, list):
                sample[name] = dist[int(rng.integers(len(dist)))]
                continue
            ((kind, (low, high)),) = dist.items()
            if kind == "int_uniform":
                sample[name] = int(rng.integers(low, high + 1))
            elif kind == "uniform":
                sample[name] = _round(float(rng.uniform(low, high)))
            else:
                sample[name] = _round(float(math.exp(rng.uniform(math.log(low), math.log(high)))))
        samples.append(sample)
    return samples


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def member_id(index: int, total: int) -> str:
    """``m000``-style id, zero-padded to at least 3 digits.

    Example
    -------
    >>> member_id(7, 12), member_id(7, 2000)
    ('m007', 'm0007')
    """
    return f"m{index:0{max(3, len(str(total - 1)))}d}"


def expand(spec: SweepSpec) -> list[Member]:
    """The members of a sweep, in the documented order, with stable ids.

    Raises
    ------
    CondormlError
        If two members would be identical (e.g. a random choice drawn twice) or a member's
        options are invalid together.
    """
    grid_points = [
        dict(zip(spec.grid, values, strict=True))
        for values in itertools.product(*spec.grid.values())
    ]
    configurations = [{**point, **sample} for point in grid_points for sample in _sample(spec)]
    total = len(configurations) * len(spec.seeds)
    members, seen = [], {}
    for config in configurations:
        for seed in spec.seeds:
            member = Member(member_id(len(members), total), seed, config)
            key = repr(sorted({**config, "seed": seed}.items()))
            if key in seen:
                raise CondormlError(
                    f"{spec.path}: members {seen[key]} and {member.member} would be identical ({key}); "
                    "widen [random] ranges, lower random.samples, or use a grid"
                )
            seen[key] = member.member
            _validate_combination(spec, member)
            members.append(member)
    return members


def _validate_combination(spec: SweepSpec, member: Member) -> None:
    options = member.options(spec.train)
    options.pop("pretrained_weights", None)
    try:
        TrainConfig(Path("."), Path("."), **options).validate()
    except (CondormlError, TypeError) as err:
        raise CondormlError(f"{spec.path}: member {member.member}: {err}") from None
