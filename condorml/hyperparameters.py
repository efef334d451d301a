"""A member's hyperparameters as a JSON file: how a search (TPE) hands a job the values it chose.

The file is one JSON object, ``{"lr": 0.003, "batch_size": 64}``, of swept options (the
TrainConfig fields a sweep may vary) and ``seed``. The search writes it into the member's folder
before the member's first job; the job receives it as an input file and ``condorml train
--hyperparameters FILE`` puts its values in place of the command line's. Every value is checked
against :data:`condorml.config.OPTION_RULES`, as the command line's are. No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from condorml.architectures import job_value
from condorml.config import OPTION_RULES, SWEPT, TrainConfig, option_fields
from condorml.errors import CondormlError
from condorml.fileio import atomic_write_text

HYPERPARAMETERS_FILE = "params.json"  # its name in a member's folder and a job's sandbox
# The options the file may set: those a sweep varies, and the seed.
FILE_OPTIONS = (
    *(key for key, (_, meta) in option_fields(TrainConfig).items() if meta.spec == SWEPT),
    "seed",
)


def hyperparameter_values(data: object, where: str) -> dict[str, Any]:
    """Check the parsed contents of a hyperparameters file; ``where`` names it in errors.

    Returns the values by TrainConfig field, whole numbers for number options made floats (as
    the command line gives them).

    Raises
    ------
    CondormlError
        Not an object, an option the file may not set, or an impossible value; the message
        names ``where`` and the key.
    """
    if not isinstance(data, dict):
        raise CondormlError(f"{where}: must be a JSON object of option names and values")
    values = {}
    for key, value in data.items():
        if key not in FILE_OPTIONS:
            raise CondormlError(
                f"{where}: {key!r} is not a hyperparameter; choose from {', '.join(FILE_OPTIONS)}"
            )
        rule = OPTION_RULES[key]
        problem = rule.problem(value)
        if problem is not None:
            raise CondormlError(f"{where}: {key} = {json.dumps(value)}: {problem}")
        is_whole = isinstance(value, int) and not isinstance(value, bool)
        values[key] = float(value) if rule.kind is float and is_whole else value
    return values


def read_hyperparameters(path: Path) -> dict[str, Any]:
    """The checked values of the hyperparameters file at ``path`` (see :func:`hyperparameter_values`).

    Raises
    ------
    CondormlError
        The file is missing, unreadable, not JSON, or holds a bad key or value; one line that
        names the file (and the key).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CondormlError(f"{path}: no such hyperparameters file") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise CondormlError(f"{path}: cannot read the hyperparameters file ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CondormlError(
            f"{path}: not JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    return hyperparameter_values(data, str(path))


def write_hyperparameters(path: Path, values: dict[str, Any]) -> None:
    """Write ``values`` (checked first, so that no job is handed a file it refuses), atomically;
    a model file as the job names it, at the top of its sandbox (``net.py:Net``)."""
    checked = hyperparameter_values(dict(values), str(path))
    if "model" in checked:
        checked["model"] = job_value(checked["model"])
    atomic_write_text(path, json.dumps(checked, indent=1, sort_keys=True) + "\n")
