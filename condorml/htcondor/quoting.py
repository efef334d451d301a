"""Validation and quoting of every value that reaches a submit file, a DAG file or a wrapper.

A submit description is line-oriented and expands ``$(...)`` macros everywhere, so a user value
with a newline could add a command (``queue``, ``executable = ...``) and one with ``$(...)`` could
read the submitter's environment or other macros. condorml therefore refuses newlines, NULs and
``$`` in user values outright, refuses separators where a value becomes one item of a list, and
quotes ``arguments`` by HTCondor's "new syntax" rules. Generated values that *should* expand
(``$(ProcId)``) are passed as :class:`Macro` and never come from the user.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from condorml.errors import CondormlError

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but tab
_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B?)?$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Macro:
    """A submit-language macro condorml writes on purpose, such as ``$(ProcId)``.

    Only this module's callers create these, from constants; user values are plain ``str``.
    """

    name: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"not a macro name: {self.name!r}")

    def __str__(self) -> str:
        return f"$({self.name})"


Token = str | Macro


def safe_value(value: str, what: str) -> str:
    """Return ``value`` if it can be written as the value of a submit command, else raise.

    Parameters
    ----------
    value : str
        A user-supplied value.
    what : str
        The option it came from, for the message.

    Raises
    ------
    CondormlError
        For a newline or other control character (it would start a new command), a ``$``
        (HTCondor would expand it as a macro) or a trailing backslash (it would continue the
        line, swallowing the next command: found by a property test).

    Example
    -------
    >>> safe_value("train.zip", "--data-dir")
    'train.zip'
    """
    _refuse_breakouts(value, what)
    if value != value.strip():
        raise CondormlError(f"{what} {value!r}: leading or trailing white space")
    if value.endswith("\\"):  # a line ending in a backslash continues on the next one
        raise CondormlError(
            f"{what} {value!r}: ends with a backslash, which would join the next line of the submit file"
        )
    return value


def _refuse_breakouts(value: str, what: str) -> None:
    if _CONTROL.search(value):
        raise CondormlError(
            f"{what} {value!r}: contains a newline or control character, which would end the submit command"
        )
    if "$" in value:
        raise CondormlError(
            f"{what} {value!r}: contains '$', which HTCondor would expand as a macro"
        )


def list_item(value: str, what: str) -> str:
    """A value that becomes one item of a comma-separated list (``transfer_input_files``).

    HTCondor splits these lists at commas only and strips each item, so a space inside a path
    is fine (``my runs/train.zip`` arrives as ``train.zip``; checked with HTCondor 25.0), while
    a quote is taken literally (``"a b/x.zip"`` is looked for under that name, quotes included:
    the job goes on hold). Commas, quotes and other white space are refused.
    """
    safe_value(value, what)
    if "," in value or any(c.isspace() and c != " " for c in value) or '"' in value or "'" in value:
        raise CondormlError(
            f"{what} {value!r}: commas, quotes and tabs cannot appear in a file HTCondor transfers; rename or link it"
        )
    if not value:
        raise CondormlError(f"{what}: empty path")
    return value


def plain_name(value: str, what: str) -> str:
    """A simple file or folder name: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.match(value):
        raise CondormlError(f"{what} {value!r}: use letters, digits, '.', '_' and '-' only")
    return value


# HTCondor's size units are powers of 1024 (K, M, G, T, with or without "i" and "B")
_UNIT_MIB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
_UNIT_NAMES = {"K": "KiB", "M": "MiB"}


def size_problem(value: object, unit: str = "M", least_mib: float = 32.0) -> str | None:
    """What is wrong with a memory or disk size, or None.

    ``value`` is a number with an optional K/M/G/T unit; without one it is in ``unit``
    (HTCondor's: MiB for memory, KiB for disk). Less than ``least_mib`` MiB is no job's size
    but a forgotten unit (``memory = 2`` asks for 2 MiB), refused with the unit to add.

    Example
    -------
    >>> size_problem("2")
    "2 without a unit is 2 MiB, too little for a job: write the unit, e.g. '2GB'"
    >>> size_problem("8GB") is None
    True
    """
    if not isinstance(value, str) or not _SIZE.match(value.strip()):
        return "expected a number with an optional unit, e.g. 4096 (MiB) or 8GB"
    text = value.strip()
    number = float(re.match(r"[\d.]+", text).group())  # type: ignore[union-attr]
    letter = text[len(re.match(r"[\d.]+\s*", text).group()) :][:1].upper() or unit  # type: ignore[union-attr]
    if number * _UNIT_MIB[letter] >= least_mib:
        return None
    if text[-1].isdigit():
        number_text = text.rstrip("0").rstrip(".") if "." in text else text
        return (
            f"{text} without a unit is {text} {_UNIT_NAMES[unit]}, too little for a job: write "
            f"the unit, e.g. '{number_text}GB'"
        )
    return f"{text} is less than {least_mib:g} MiB, too little for a job"


def size_value(value: str, what: str, unit: str = "M", least_mib: float = 32.0) -> str:
    """A memory or disk size, checked (:func:`size_problem`): a number with an optional K/M/G/T
    unit (``6GB``, ``4096``)."""
    safe_value(value, what)
    problem = size_problem(value, unit, least_mib)
    if problem is not None:
        raise CondormlError(f"{what} {value!r}: {problem}")
    return value


def condor_arguments(tokens: list[Token]) -> str:
    """Quote a command line for the ``arguments`` submit command, new syntax.

    The whole list is enclosed in double quotes and a double quote inside is doubled; an argument
    holding white space or a single quote (or an empty one) is enclosed in single quotes with any
    single quote doubled. User tokens go through :func:`safe_value`; :class:`Macro` tokens are
    written as ``$(name)`` so that HTCondor expands them.

    Example
    -------
    >>> condor_arguments(["train", "--data-dir", "my data.zip", "--seed", Macro("ProcId")])
    '"train --data-dir \\'my data.zip\\' --seed $(ProcId)"'
    """
    quoted = []
    for token in tokens:
        if isinstance(token, Macro):
            quoted.append(str(token))
            continue
        _refuse_breakouts(token, "argument")  # leading or trailing spaces are fine: quoted
        if token == "" or any(c in token for c in " \t'"):
            token = "'" + token.replace("'", "''") + "'"
        quoted.append(token.replace('"', '""'))
    return '"' + " ".join(quoted) + '"'


def split_condor_arguments(text: str) -> list[str]:
    """Split an ``arguments`` value written in the new syntax (the inverse of condor_arguments).

    Implements the four rules of HTCondor's manual (condor_submit, "New Syntax"), for checking
    what a job will receive.

    Raises
    ------
    ValueError
        If ``text`` is not in the new syntax or a quote is unbalanced.
    """
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError("new-syntax arguments are enclosed in double quotes")
    body = text[1:-1]
    args: list[str] = []
    current: list[str] | None = None
    in_single = False
    i = 0
    while i < len(body):
        c = body[i]
        if c == '"':
            if body[i + 1 : i + 2] != '"':
                raise ValueError("a double quote inside must be doubled")
            current = (current or []) + ['"']
            i += 2
            continue
        if in_single:
            if c == "'":
                if body[i + 1 : i + 2] == "'":
                    current.append("'")  # type: ignore[union-attr]
                    i += 2
                    continue
                in_single = False
            else:
                current.append(c)  # type: ignore[union-attr]
        elif c in " \t":
            if current is not None:
                args.append("".join(current))
                current = None
        elif c == "'":
            in_single = True
            current = current or []
        else:
            current = (current or []) + [c]
        i += 1
    if in_single:
        raise ValueError("unbalanced single quote")
    if current is not None:
        args.append("".join(current))
    return args


def classad_string(value: str, what: str) -> str:
    """A ClassAd string literal (``"short"``) for a ``My.`` attribute."""
    safe_value(value, what)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_line(*commands: Sequence[str | os.PathLike[str]]) -> str:
    """Commands (argument lists) as one POSIX shell line, each argument quoted, joined by ``&&``.

    Every command condorml prints for the user to copy goes through this, so a folder with a
    space or a quote pastes back as the same path.
    """
    return " && ".join(shlex.join(os.fspath(arg) for arg in command) for command in commands)
