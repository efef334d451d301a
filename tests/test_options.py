"""One table per concept: the command line's options are the library's, defaults and choices too.

The option tables are dataclasses whose fields carry :class:`condorml.config.Option` metadata
(TrainConfig, InferConfig, the pool's Resources / Container / Profile); the CLI, the sweep
specification's keys and a job's arguments are derived from them. These tests walk the typer
commands' parameters and compare them with the tables, so that a default retyped anywhere fails.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import typer.main

from condorml.cli import app
from condorml.config import FIXED, SWEPT, InferConfig, TrainConfig, option_default, option_fields
from condorml.htcondor.resources import POOL_TABLES, pool_options
from condorml.sweep.spec import FIXED_ONLY, HYPERPARAMETERS, INFERENCE_KEYS, RESOURCE_KEYS

# TrainConfig fields that no option of `condorml train` sets, and why.
TRAIN_NOT_ON_THE_CLI = {
    "exit_on_checkpoint": "--no-exit-on-checkpoint sets it to False (the CLI's default is True)",
}
# TrainConfig fields that are not keys of a sweep specification, and why.
TRAIN_NOT_IN_A_SPEC = {
    "data_dir": "[data] train",
    "checkpoint_dir": "each member's folder (members/<id>/ckpt)",
    "seed": "[ensemble] members / seeds",
    "member": "the sweep names its members",
    "exit_on_checkpoint": "a job always exits at a checkpoint (exit 85)",
    "force_restart": "a job resumes its own checkpoint; nothing to set aside",
    "cache_dir": "a job caches in its scratch folder",
    "stop_after_epoch": "a search's rungs set it per node (successive halving)",
    "labels_csv": "[data] train_labels",
}
# Command-line names of library fields where they differ.
RENAMED = {"csv": "output"}


def _command(*path: str) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def _params(*path: str) -> dict[str, Any]:
    return {RENAMED.get(p.name, p.name): p for p in _command(*path).params if p.name != "help"}


def _defaults(*tables: type) -> dict[str, Any]:
    """Every field's library default, by its command-line/spec key."""
    found = {}
    for table in tables:
        keys = {item.name: key for key, (item, _) in option_fields(table).items()}
        for item in dataclasses.fields(table):
            if item.default is not dataclasses.MISSING:
                found[keys.get(item.name, item.name)] = item.default
    return found


def _library_tables(path: tuple[str, ...]) -> tuple[type, ...]:
    if path == ("train",):
        return (TrainConfig,)
    if path == ("infer",):
        return (InferConfig,)
    if path == ("submit", "train"):
        return (TrainConfig, *POOL_TABLES)
    return (InferConfig, *POOL_TABLES)


@pytest.mark.parametrize("path", [("train",), ("infer",), ("submit", "train"), ("submit", "infer")])
def test_cli_defaults_are_the_library_defaults(path: tuple[str, ...]) -> None:
    params = _params(*path)
    compared = 0
    for table in _library_tables(path):
        for key, default in _defaults(table).items():
            if key in params and key not in TRAIN_NOT_ON_THE_CLI:
                cli = params[key].default
                if isinstance(default, Path) and cli is not None:
                    cli = Path(cli)
                if isinstance(default, tuple):  # a repeatable option: typer's list
                    cli = tuple(cli)
                assert cli == default, f"condorml {' '.join(path)} --{key}: {cli!r} != {default!r}"
                compared += 1
    assert compared >= 8  # the walk found the options


@pytest.mark.parametrize("path", [("train",), ("infer",), ("submit", "train"), ("submit", "infer")])
def test_cli_choices_are_the_library_choices(path: tuple[str, ...]) -> None:
    params = _params(*path)
    rules = {key: meta.rule for t in _library_tables(path) if dataclasses.is_dataclass(t)
             for key, (_, meta) in option_fields(t).items()
             if meta.rule and (path[0] == "submit" or not meta.submission)}  # fmt: skip
    checked = 0
    for key, rule in rules.items():
        annotation = params[key].type_descriptor.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        if rule.choices:
            assert typing.get_origin(annotation) is Literal, key
            assert typing.get_args(annotation) == rule.choices, key
            checked += 1
    assert checked >= 2


def test_every_training_field_is_reachable_from_the_cli_and_the_spec() -> None:
    fields = {item.name for item in dataclasses.fields(TrainConfig)}
    cli = set(_params("train")) | set(TRAIN_NOT_ON_THE_CLI)
    assert fields - cli == set()
    spec = set(HYPERPARAMETERS + FIXED_ONLY)
    assert fields - spec == set(TRAIN_NOT_IN_A_SPEC)
    assert not spec & set(TRAIN_NOT_IN_A_SPEC)
    # submit train: every training option, plus --data-dir (the rest is the job's sandbox)
    assert set(option_fields(TrainConfig)) | {"data_dir"} <= set(_params("submit", "train"))


def test_the_spec_keys_are_the_tables_keys() -> None:
    swept = [k for k, (_, o) in option_fields(TrainConfig).items() if o.spec == SWEPT]
    fixed = [k for k, (_, o) in option_fields(TrainConfig).items() if o.spec == FIXED]
    assert (list(HYPERPARAMETERS), list(FIXED_ONLY)) == (swept, fixed)
    assert list(RESOURCE_KEYS) == list(pool_options())
    assert set(INFERENCE_KEYS) == {"shards", "batch_size", "precision", "with_stats",
                                   "resources", "submit"}  # fmt: skip


def test_every_pool_option_is_on_both_submit_commands() -> None:
    for path in (("submit", "train"), ("submit", "infer")):
        assert set(pool_options()) <= set(_params(*path)), path


def test_inference_has_one_options_type() -> None:
    """condorml infer, condorml submit infer and a sweep's infer.sub all use config.InferConfig."""
    from condorml.config import INFER_BATCH_SIZE
    from condorml.job import infer

    assert infer.InferConfig is InferConfig
    assert option_default(InferConfig, "batch_size") == INFER_BATCH_SIZE
    assert _params("infer")["batch_size"].default == INFER_BATCH_SIZE
    assert "shards" in _params("submit", "infer") and "shards" not in _params("infer")
