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

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condorml.architectures import is_model_file
from condorml.config import (
    FIXED,
    OPTION_RULES,
    SWEPT,
    InferConfig,
    OptionRule,
    TrainConfig,
    option_default,
    option_fields,
)
from condorml.errors import CondormlError
from condorml.htcondor.passthrough import extra_commands
from condorml.htcondor.resources import pool_options
from condorml.sweep.search import Search, read_search

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The spec's keys come from the option tables' field metadata (condorml.config.Option.spec).
# Options a sweep may vary (grid / random) or fix ([train]); the rest belong to the job layout.
HYPERPARAMETERS = tuple(k for k, (_, o) in option_fields(TrainConfig).items() if o.spec == SWEPT)
FIXED_ONLY = tuple(k for k, (_, o) in option_fields(TrainConfig).items() if o.spec == FIXED)
SECTIONS = ("data", "train", "grid", "random", "search", "ensemble", "resources", "submit",
            "inference", "throttle")  # fmt: skip
DATA_KEYS = ("train", "test", "labels", "train_labels")
ENSEMBLE_KEYS = ("members", "seeds", "min_members", "top_k")
# [resources]: what a job asks the pool for (htcondor.submit's Resources, Container, Profile)
RESOURCE_RULES = {key: o.rule for key, o in pool_options().items() if o.rule is not None}
RESOURCE_KEYS = tuple(RESOURCE_RULES)
SIZE_KEYS = ("memory", "disk", "gpu_memory_min")  # text with a unit, or a number (MiB, KiB)
# [inference]: the options of the inference jobs, and their own pool options and commands
INFERENCE_RULES = {
    k: o.rule for k, (_, o) in option_fields(InferConfig).items() if o.spec and o.rule is not None
}
INFERENCE_KEYS = (*INFERENCE_RULES, "resources", "submit")
THROTTLE_KEYS = ("max_train_jobs", "max_infer_jobs", "retries")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform")
SIGNIFICANT_DIGITS = 4  # random floats are rounded: readable ids, CSVs and command lines
# A run folder's copy of a spec names the folder its relative paths are relative to.
RELATIVE_TO = "relative_to"
_RELATIVE_TO_LINE = re.compile(rf"^{RELATIVE_TO}\s*=.*(\n|$)", re.MULTILINE)
_COPY_HEADER = (
    "# Copied by condorml sweep. Relative paths below are relative to relative_to (itself relative\n"
    "# to this file's folder): this copy reads the same files as the spec it was copied from.\n"
)


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
    search: Search | None = None  # [search]; its grid or random space is also in grid / random
    top_k: int | None = None  # [ensemble] top_k: the ensemble of the best members by the metric
    # model files (FILE.py of model = "FILE.py:CLASS"), as written -> resolved: the jobs' inputs
    model_paths: dict[str, str] = field(default_factory=dict)

    @property
    def swept(self) -> tuple[str, ...]:
        """The hyperparameters that vary, in spec order (grid, then random; TPE's space)."""
        if self.search is not None and self.search.method == "tpe":
            return tuple(self.search.space)
        return (*self.grid, *self.random)

    @property
    def epochs(self) -> int:
        """The training budget of every member (``[train] epochs`` or its default)."""
        return int(self.train.get("epochs", option_default(TrainConfig, "epochs")))


def spec_error(path: Path, table: str, key: str | None, message: str) -> CondormlError:
    """``<spec>: [table] key: what is wrong; what to do`` (``[table]:`` for a whole table)."""
    return CondormlError(f"{path}: [{table}]{f' {key}' if key else ''}: {message}")


def written_table(spec: SweepSpec, name: str) -> dict[str, Any]:
    """A table of the spec as its file writes it (paths not yet resolved)."""
    return tomllib.loads(spec.text).get(name, {})


def toml_text(value: Any) -> str:
    """A value as the spec would write it (``"3"``, ``true``, ``3.5``), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    return repr(value)


def check_keys(table: dict[str, Any], allowed: tuple[str, ...], path: Path, name: str) -> None:
    """Every key of ``table`` is one of ``allowed``, else ``[name] key: unknown key; valid keys``."""
    for key in table:
        if key not in allowed:
            raise spec_error(path, name, key, f"unknown key; valid keys: {', '.join(allowed)}")


def _table(doc: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise spec_error(
            path,
            name,
            None,
            f"must be a table, not {toml_text(value)}; write [{name}] and its keys below it",
        )
    return value


def check_rule(rule: OptionRule, value: Any, path: Path, table: str, key: str) -> Any:
    """``value`` if ``rule`` accepts it (a float option's whole number as a float), else raise."""
    problem = rule.problem(value)
    if problem is not None:
        raise spec_error(path, table, key, f"got {toml_text(value)}; {problem}")
    return float(value) if rule.kind is float and isinstance(value, int) else value


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text()
        return text, tomllib.loads(text)
    except FileNotFoundError:
        raise CondormlError(f"{path}: no such sweep specification") from None
    except IsADirectoryError:
        raise CondormlError(
            f"{path}: a folder; give the sweep specification (.toml) file"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CondormlError(f"{path}: not valid TOML ({err})") from None


def spec_folder(path: Path, doc: dict[str, Any]) -> Path:
    """The folder a spec's relative paths are relative to: its own, or ``relative_to`` from it.

    A run folder's copy of a spec (``RUN_DIR/spec.toml``) records ``relative_to`` so that it
    reads the same files as the spec it was copied from.
    """
    base = doc.get(RELATIVE_TO, ".")
    if not isinstance(base, str) or not base:
        raise CondormlError(
            f"{path}: {RELATIVE_TO}: got {toml_text(base)}; a folder, relative to this file's folder"
        )
    return Path(os.path.normpath(os.path.abspath(path.parent / base)))


def load_spec(path: Path, check_paths: bool = True) -> SweepSpec:
    """Read and validate a sweep specification.

    Relative paths (``[data]``, ``[train] pretrained_weights``, a local ``.sif`` image) are
    taken relative to the spec file's folder (or its ``relative_to``); with ``check_paths``
    each must exist (URLs pass through unchecked): a job would otherwise go on hold.

    Raises
    ------
    CondormlError
        For a missing or malformed file, unknown sections or keys, values of the wrong type or
        out of range (checked against :data:`condorml.config.OPTION_RULES`), empty or
        impossible grids and ranges, member counts that can never succeed, or a missing file:
        ``<spec>: [table] key: what is wrong; what to do``.
    """
    text, doc = _read(path)
    base = spec_folder(path, doc)
    doc = {k: v for k, v in doc.items() if k != RELATIVE_TO}
    _check_sections(doc, path)
    where = _Where(path, base, check_paths)
    data = _data(_table(doc, "data", path), where)
    train = _train(_table(doc, "train", path), where)
    grid = _grid(_table(doc, "grid", path), path)
    random, samples, random_seed = _random(_table(doc, "random", path), path)
    search = None
    if "search" in doc:
        search, grid, random, samples, random_seed = _search(doc, train, len(_seeds(
            _table(doc, "ensemble", path), path)), path)  # fmt: skip
    _check_swept_once(train, grid, random, path)
    if search is not None and search.method == "tpe":
        _check_swept_once(train, {}, search.space, path)
    seeds, min_members = _ensemble(_table(doc, "ensemble", path), grid, samples, path)
    top_k = _top_k(_table(doc, "ensemble", path), min_members, search, train, path)
    resources = _resources(_table(doc, "resources", path), where, "resources")
    inference = _inference(_table(doc, "inference", path), where)
    submit = extra_commands(_table(doc, "submit", path), f"{path}: [submit]")
    if "submit" in inference:
        inference["submit"] = extra_commands(
            _table(inference, "submit", path), f"{path}: [inference.submit]"
        )
    throttle = _throttle(_table(doc, "throttle", path), path)
    model_paths = _model_files(train, grid, random, search, where)
    return SweepSpec(path, text, data, train, grid, random, samples, random_seed, seeds,
                     min_members, resources, inference, throttle, submit, search, top_k,
                     model_paths)  # fmt: skip


def _model_files(train: dict[str, Any], grid: dict[str, list[Any]], random: dict[str, Any],
                 search: Search | None, where: _Where) -> dict[str, str]:  # fmt: skip
    """Every model file the spec names (``model = "FILE.py:CLASS"`` wherever models are given),
    as written -> resolved like the spec's other paths (and, with ``check_paths``, checked to
    exist). The values stay as written, so that members.csv and a search's choices read the same
    from any folder; the jobs receive the resolved files and name them by their file names."""
    found: dict[str, str] = {}

    def note(values: Any, table: str) -> None:
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and is_model_file(value):
                file = value.rpartition(":")[0]
                found.setdefault(file, where.input(table, "model", file))

    note(train.get("model"), "train")
    note(grid.get("model"), "grid")
    note(random.get("model"), "random")
    if search is not None:
        note(search.space.get("model"), "search.space")
    return found


def _top_k(table: dict[str, Any], min_members: int, search: Search | None, train: dict[str, Any],
           path: Path) -> int | None:  # fmt: skip
    """``[ensemble] top_k``, and ``min_members`` against the members that can finish."""
    if search is not None and search.halving is not None:
        epochs = int(train.get("epochs", option_default(TrainConfig, "epochs")))
        trials = search.trials * (1 if search.method == "tpe" else max(1, len(_seeds(table, path))))
        finishing = search.survivors(trials, epochs)[-1]
        if min_members > finishing:
            raise spec_error(path, "ensemble", "min_members",
                             f"{min_members} is more than the {finishing} member(s) that successive halving trains to the end; lower it, or lower [search.halving] eta")  # fmt: skip
    if "top_k" not in table:
        return None
    top_k = check_rule(OptionRule(int, low=1), table["top_k"], path, "ensemble", "top_k")
    if top_k < min_members:
        raise spec_error(path, "ensemble", "top_k",
                         f"{top_k} is below min_members = {min_members}, so the sweep could never succeed; raise it or lower min_members")  # fmt: skip
    return top_k


def _search(
    doc: dict[str, Any], train: dict[str, Any], seeds: int, path: Path
) -> tuple[Search, dict[str, list[Any]], dict[str, Any], int, int]:
    """``[search]``, and the grid or random table its space stands for (TPE: none)."""
    for table in ("grid", "random"):
        if table in doc:
            raise spec_error(path, table, None,
                             "not with [search]: give the hyperparameters in [search.space] and the method in [search] method")  # fmt: skip
    epochs = int(train.get("epochs", option_default(TrainConfig, "epochs")))
    space = doc["search"].get("space") if isinstance(doc["search"], dict) else None
    swept = isinstance(space, dict) and "epochs" in space
    search = read_search(doc["search"], path, epochs, swept,
                         lambda name, value, table: _distribution(name, value, path, table), seeds)  # fmt: skip
    if search.method == "grid":
        return search, dict(search.space), {}, 0, 0
    if search.method == "random":
        return search, {}, dict(search.space), search.trials, search.seed
    return search, {}, {}, search.trials, search.seed


def _check_sections(doc: dict[str, Any], path: Path) -> None:
    """Every top-level name is a known table (a bare key or an unknown table is an error)."""
    for name, value in doc.items():
        if name not in SECTIONS and not isinstance(value, dict):
            raise CondormlError(
                f"{path}: {name} = {toml_text(value)}: a key outside any table; put it under its table, e.g. [train]"
            )
        if name not in SECTIONS:
            raise spec_error(
                path, name, None, f"unknown section; valid sections: {', '.join(SECTIONS)}"
            )


def _data(table: dict[str, Any], where: _Where) -> dict[str, str]:
    """``[data]``: the training zip and test images (required) and labels, resolved."""
    check_keys(table, DATA_KEYS, where.path, "data")
    for key in ("train", "test"):
        if key not in table:
            raise spec_error(
                where.path, "data", key,
                "required: the training data and the test images (a path or an osdf:/// URL)",
            )  # fmt: skip
    return {key: where.input("data", key, value) for key, value in table.items()}


def _train(table: dict[str, Any], where: _Where) -> dict[str, Any]:
    """``[train]``: fixed training options, checked; ``pretrained_weights`` resolved."""
    check_keys(table, HYPERPARAMETERS + FIXED_ONLY, where.path, "train")
    train = dict(table)
    for key, value in train.items():
        if key == "pretrained_weights":
            train[key] = where.input("train", key, value)
        else:
            train[key] = check_rule(OPTION_RULES[key], value, where.path, "train", key)
    return train


def _random(table: dict[str, Any], path: Path) -> tuple[dict[str, Any], int, int]:
    """``[random]``: its distributions by hyperparameter, the number of samples, and the seed."""
    random_table = dict(table)
    samples = random_table.pop("samples", 1 if random_table else 0)
    random_seed = random_table.pop("seed", 0)
    check_rule(OptionRule(int, low=1 if random_table else 0), samples, path, "random", "samples")
    check_rule(OptionRule(int), random_seed, path, "random", "seed")
    random = {name: _distribution(name, spec, path) for name, spec in random_table.items()}
    return random, samples, random_seed


def _check_swept_once(
    train: dict[str, Any], grid: dict[str, list[Any]], random: dict[str, Any], path: Path
) -> None:
    """Each option is given in one place: fixed in [train], or swept in [grid] or [random]."""
    for name in set(train) & (set(grid) | set(random)):
        raise spec_error(
            path,
            "train",
            name,
            "is also swept ([grid], [random] or [search.space]); give it in one place",
        )
    for name in set(grid) & set(random):
        raise spec_error(path, "random", name, "is also in [grid]; give it in one place")


def _ensemble(
    table: dict[str, Any], grid: dict[str, list[Any]], samples: int, path: Path
) -> tuple[tuple[int, ...], int]:
    """``[ensemble]``: the seeds and ``min_members``, which must not exceed the member count."""
    check_keys(table, ENSEMBLE_KEYS, path, "ensemble")
    seeds = _seeds(table, path)
    min_members = check_rule(
        OptionRule(int, low=1), table.get("min_members", 1), path, "ensemble", "min_members"
    )
    configurations = math.prod(len(values) for values in grid.values()) * max(samples, 1)
    total = configurations * len(seeds)
    if min_members > total:
        raise spec_error(
            path, "ensemble", "min_members",
            f"{min_members} is more than the {total} member(s) this spec makes, so the sweep could never succeed; lower it to {total} or add members",
        )  # fmt: skip
    return seeds, min_members


def _inference(table: dict[str, Any], where: _Where) -> dict[str, Any]:
    """``[inference]``: its options checked and its own ``[inference.resources]``."""
    inference = dict(table)
    check_keys(inference, INFERENCE_KEYS, where.path, "inference")
    for key, rule in INFERENCE_RULES.items():
        if key in inference:
            inference[key] = check_rule(rule, inference[key], where.path, "inference", key)
    if "resources" in inference:
        inference["resources"] = _resources(
            _table(inference, "resources", where.path), where, "inference.resources"
        )
    return inference


def _throttle(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """``[throttle]``: job limits and retries, whole numbers from 0."""
    check_keys(table, THROTTLE_KEYS, path, "throttle")
    for key, value in table.items():
        check_rule(OptionRule(int, low=0), value, path, "throttle", key)
    return dict(table)


@dataclass(frozen=True)
class _Where:
    """Resolves and checks the local paths of one spec."""

    path: Path  # the spec file
    base: Path  # the folder its relative paths are relative to (absolute)
    check: bool

    def input(self, table: str, key: str, value: Any) -> str:
        """A file a job transfers: a URL as given, a local path resolved (and checked)."""
        if not isinstance(value, str) or not value.strip():
            raise spec_error(
                self.path, table, key,
                f"got {toml_text(value)}; a path (relative to {self.base}) or a URL such as osdf:///path",
            )  # fmt: skip
        if "://" in value:
            return value
        resolved = _resolve(value, self.base)
        if self.check and not os.path.exists(resolved):
            raise spec_error(
                self.path, table, key,
                f"{toml_text(value)} does not exist (looked for {os.path.abspath(resolved)}); give an existing path or a URL such as osdf:///path",
            )  # fmt: skip
        return resolved


def _resources(table: dict[str, Any], where: _Where, name: str) -> dict[str, Any]:
    """A ``[resources]`` table with its types checked; sizes may be numbers (MiB, KiB)."""
    check_keys(table, RESOURCE_KEYS, where.path, name)
    checked = {}
    for key, value in table.items():
        if key in SIZE_KEYS and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        checked[key] = check_rule(RESOURCE_RULES[key], value, where.path, name, key)
    image = checked.get("container_image")
    if isinstance(image, str) and image.endswith(".sif") and "://" not in image:
        checked["container_image"] = where.input(name, "container_image", image)
    return checked


def _resolve(value: str, folder: Path) -> str:
    """A spec-relative path as a path relative to the working directory (absolute as given).

    Kept relative so that the submit files, which write local paths relative to each member's
    folder, stay relative too: a run folder can move with its data.
    """
    if Path(value).is_absolute():
        return value
    return os.path.relpath(os.path.abspath(folder / value))


def _grid(table: dict[str, Any], path: Path) -> dict[str, list[Any]]:
    check_keys(table, HYPERPARAMETERS, path, "grid")
    grid = {}
    for name, values in table.items():
        if not isinstance(values, list):
            raise spec_error(
                path, "grid", name,
                f"got {toml_text(values)}; expected a list of values, e.g. {name} = [{toml_text(values)}] (a single value belongs in [train])",
            )  # fmt: skip
        if not values:
            raise spec_error(path, "grid", name, "an empty list; give at least one value")
        grid[name] = [check_rule(OPTION_RULES[name], v, path, "grid", name) for v in values]
        if len({repr(v) for v in grid[name]}) != len(values):
            raise spec_error(
                path,
                "grid",
                name,
                "lists a value twice: the members would be duplicates; remove one",
            )
    return grid


def _distribution(name: str, spec: Any, path: Path, table: str = "random") -> Any:
    """A hyperparameter's random distribution or list of choices, checked (``[random]``,
    ``[search.space]``)."""
    if name not in HYPERPARAMETERS:
        raise spec_error(
            path,
            table,
            name,
            f"unknown hyperparameter; valid names: {', '.join(HYPERPARAMETERS)}",
        )
    rule = OPTION_RULES[name]
    if isinstance(spec, list):
        if not spec:
            raise spec_error(path, table, name, "an empty list of choices; give at least one")
        return [check_rule(rule, value, path, table, name) for value in spec]
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise spec_error(
            path, table, name,
            f"got {toml_text(spec)}; give a list of choices or one of {{{' | '.join(f'{d} = [low, high]' for d in DISTRIBUTIONS)}}}",
        )  # fmt: skip
    kind, bounds = next(iter(spec.items()))
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)):  # fmt: skip
        raise spec_error(path, table, name, f"{kind} needs [low, high], two numbers")
    low, high = bounds
    if not low < high:
        raise spec_error(
            path, table, name, f"impossible range [{low}, {high}]: low must be below high"
        )
    if kind == "log_uniform" and low <= 0:
        raise spec_error(
            path, table, name, f"log_uniform needs positive bounds, not [{low}, {high}]"
        )
    if kind == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
        raise spec_error(path, table, name, "int_uniform needs whole-number bounds")
    if kind != "int_uniform" and rule.kind is not float:
        raise spec_error(
            path, table, name,
            f"{name} takes whole numbers or choices, not a {kind} range; use int_uniform or a list",
        )  # fmt: skip
    bounds = [check_rule(rule, bound, path, table, name) for bound in bounds]
    return {kind: bounds}


def _seeds(ensemble: dict[str, Any], path: Path) -> tuple[int, ...]:
    if "seeds" in ensemble and "members" in ensemble:
        raise spec_error(path, "ensemble", None, "give members (seeds 0..N-1) or seeds, not both")
    if "seeds" in ensemble:
        seeds = ensemble["seeds"]
        if not isinstance(seeds, list) or not seeds:
            raise spec_error(
                path,
                "ensemble",
                "seeds",
                f"got {toml_text(seeds)}; give a non-empty list of whole numbers",
            )
        for seed in seeds:
            check_rule(OPTION_RULES["seed"], seed, path, "ensemble", "seeds")
        if len(set(seeds)) != len(seeds):
            raise spec_error(
                path, "ensemble", "seeds", "lists a seed twice: the members would be duplicates"
            )
        return tuple(seeds)
    members = ensemble.get("members", 1)
    check_rule(OptionRule(int, low=1), members, path, "ensemble", "members")
    return tuple(range(members))


def spec_copy_text(spec: SweepSpec, run_dir: Path) -> str:
    """The text of ``RUN_DIR/spec.toml``: the spec, reading the same files from the run folder.

    A copy elsewhere than the spec's folder records ``relative_to`` (the spec's base folder,
    relative to the run folder), so that ``condorml sweep spec.toml`` run on the copy, from any
    folder, writes the same jobs; the rest of the text, comments included, is unchanged.
    """
    base = spec_folder(spec.path, tomllib.loads(spec.text))
    text = _RELATIVE_TO_LINE.sub("", spec.text, count=1).removeprefix(_COPY_HEADER)
    target = os.path.relpath(base, os.path.abspath(run_dir))
    if target == ".":
        return text
    return _COPY_HEADER + f"{RELATIVE_TO} = {json.dumps(Path(target).as_posix())}\n" + text


def same_spec(old: Path, spec: SweepSpec) -> bool:
    """Whether the spec ``old`` (a run folder's copy) describes the same sweep as ``spec``.

    Compared as data, with every relative path resolved, so that the copy (with its
    ``relative_to``) and the spec it came from are the same, whichever folder they are read from.
    """
    _, doc = _read(old)
    new = tomllib.loads(spec.text)
    if {k: v for k, v in doc.items() if k != RELATIVE_TO} == new:
        return True  # also a copy written before relative_to existed
    return _canonical(old, doc) == _canonical(spec.path, new)


def _canonical(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    base = spec_folder(path, doc)
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in doc.items() if k != RELATIVE_TO}
    for table, key in (*(("data", k) for k in DATA_KEYS), ("train", "pretrained_weights"),
                       ("resources", "container_image")):  # fmt: skip
        value = doc.get(table, {}).get(key) if isinstance(doc.get(table), dict) else None
        if isinstance(value, str) and "://" not in value:
            doc[table][key] = os.path.normpath(os.path.abspath(base / value))
    return doc
