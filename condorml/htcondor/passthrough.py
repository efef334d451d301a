"""Submit commands a user adds to condorml's jobs: validated, so they can never inject anything.

Pools differ in what a job must say: OSPool wants ``+ProjectName``, CHTC an accounting group,
a pool with a shared software area ``getenv = PATH``. condorml writes the commands that make
its jobs work (executable, arguments, transfers, checkpoints, logs, resources, container) and
passes through the others from this table, or any custom job attribute (``My.Name`` or
``+Name``). Everything else is refused with the option that does it instead, because a
command condorml does not know could break the job layout (a second ``executable``) or shadow a
macro the DAG's VARS define (``lr = 0.5`` would silently override the sweep).

Values go through the same checks as every other value (no newline, no ``$``), ClassAd
expressions are parsed with HTCondor's own ``classad2``, and the whole description is read
back by HTCondor's parser before a file is kept (:func:`condorml.htcondor.submit.write_job`).
"""

from __future__ import annotations

import re
from typing import Any

from condorml.errors import CondormlError
from condorml.htcondor.quoting import safe_value

# Submit commands passed through as given -> what the value is ("expr": a ClassAd expression,
# parsed before it is written; "text": any single-line value). The one table the spec, the CLI,
# the docs and the checks share.
PASSTHROUGH_COMMANDS: dict[str, str] = {
    # the job's environment on the execute point
    "getenv": "text",  # true, or variable names: getenv = PATH, LD_LIBRARY_PATH
    "environment": "text",  # "NAME=value NAME2='a b'"
    # accounting and bookkeeping
    "accounting_group": "text",
    "accounting_group_user": "text",
    "batch_name": "text",
    "priority": "text",
    "nice_user": "text",
    "concurrency_limits": "text",
    "notification": "text",
    "notify_user": "text",
    # matching
    "requirements": "expr",
    "rank": "expr",
    # policies: what the schedd does with the job
    "periodic_hold": "expr",
    "periodic_hold_reason": "expr",
    "periodic_hold_subcode": "expr",
    "periodic_release": "expr",
    "periodic_remove": "expr",
    "on_exit_hold": "expr",
    "on_exit_hold_reason": "expr",
    "on_exit_hold_subcode": "expr",
    "on_exit_remove": "expr",
    "max_retries": "text",
    "retry_until": "expr",
    "allowed_execute_duration": "text",
    "allowed_job_duration": "text",
    "job_max_vacate_time": "expr",
    "want_graceful_removal": "expr",
    "max_transfer_input_mb": "expr",
    "max_transfer_output_mb": "expr",
    "want_io_proxy": "text",
    "stream_output": "text",
    "stream_error": "text",
}

# Commands condorml writes itself -> how to set what they set instead.
_LAYOUT = "it is part of the job layout that condorml's jobs, monitoring and collect step rely on"
OWNED_COMMANDS: dict[str, str] = {
    "executable": _LAYOUT,
    "arguments": "set the training or inference options instead",
    "universe": "set --container-image or --docker-image ([resources] container_image) instead",
    "container_image": "set --container-image ([resources] container_image) instead",
    "docker_image": "set --docker-image ([resources] docker_image) instead",
    "initialdir": _LAYOUT,
    "should_transfer_files": _LAYOUT,
    "when_to_transfer_output": _LAYOUT,
    "transfer_input_files": "the inputs come from --data-dir, --model, --images ([data])",
    "transfer_output_files": _LAYOUT,
    "transfer_checkpoint_files": _LAYOUT,
    "checkpoint_exit_code": "the trainer exits 85 to checkpoint; it is always set",
    "output": _LAYOUT,
    "error": _LAYOUT,
    "log": _LAYOUT,
}
# What the resource options write (request_cpus, gpus_minimum_capability, require_gpus, ...):
# refused by prefix, so that no request or GPU constraint bypasses their checks
_RESOURCE_PREFIXES = ("request_", "gpus_", "require_gpus")
_RESOURCES = (
    "set it with condorml's resource options instead (--cpus, --memory, --disk, --gpus, "
    "--gpu-capability-min/max, --gpu-memory-min, --gpu-runtime-min, --require-gpus; [resources])"
)
_CUSTOM = re.compile(r"^(?:\+|my\.)([A-Za-z_][A-Za-z0-9_]*)$", re.IGNORECASE)


def extra_commands(items: dict[str, Any], where: str) -> dict[str, str]:
    """Validate user-given submit commands; return them as ``{command: value}`` text.

    Parameters
    ----------
    items : dict
        Command -> value (TOML strings, numbers and booleans; booleans become true/false).
        Custom attributes may be written ``+Name`` or ``My.Name``; both become ``My.Name``.
    where : str
        Where they came from (``spec.toml: [submit]``, ``--append``), for messages.

    Raises
    ------
    CondormlError
        For a command condorml writes itself (naming the option to use), one it does not pass
        through (listing those it does), a value with a newline or ``$``, or an expression
        HTCondor cannot parse.

    Example
    -------
    >>> extra_commands({"+ProjectName": "My_Project", "getenv": "PATH"}, "--append")
    {'My.ProjectName': '"My_Project"', 'getenv': 'PATH'}
    """
    commands: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, raw in items.items():
        name = _command_name(key, where)
        label = f"{where} {key}"
        if name.lower() in seen:
            raise CondormlError(f"{label}: given twice (also as {seen[name.lower()]})")
        seen[name.lower()] = key
        value = _text(raw, label)
        if name.startswith("My."):
            value = _attribute_value(value, label)
        elif PASSTHROUGH_COMMANDS[name] == "expr":
            value = classad_expression(value, label)
        commands[name] = value
    return commands


def _command_name(key: str, where: str) -> str:
    custom = _CUSTOM.match(key.strip())
    if custom:
        return f"My.{custom.group(1)}"
    name = key.strip().lower()
    if name in OWNED_COMMANDS or name.startswith(_RESOURCE_PREFIXES):
        reason = OWNED_COMMANDS.get(name, _RESOURCES)
        raise CondormlError(f"{where} {key}: condorml writes this command itself ({reason})")
    if name not in PASSTHROUGH_COMMANDS:
        raise CondormlError(
            f"{where} {key}: not a submit command condorml passes through; use one of "
            f"{', '.join(PASSTHROUGH_COMMANDS)}, or a job attribute as My.Name (or +Name)"
        )
    return name


def _text(raw: Any, label: str) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return repr(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise CondormlError(f"{label}: expected a non-empty string, number or boolean")
    return safe_value(raw, label)


def _attribute_value(value: str, label: str) -> str:
    """A custom attribute's value: a ClassAd expression; a bare word becomes a string literal.

    ``+ProjectName = My_Project`` would be an attribute *reference* in the job ad (undefined),
    never what is meant, so a plain word (letters, digits, ``_``, ``-``) is written as a string;
    anything else (``"text"``, ``3``, ``TARGET.Memory > 4096``) must parse as an expression.
    """
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", value) and value.lower() not in (
        "true",
        "false",
        "undefined",
        "error",
    ):
        return '"' + value + '"'
    return classad_expression(value, label)


def classad_expression(text: str, what: str) -> str:
    """Return ``text`` if HTCondor's ClassAd parser reads it as one expression, else raise."""
    import classad2

    safe_value(text, what)
    try:
        classad2.ExprTree(text)
    except Exception as err:  # classad2 raises ClassAdException or ValueError for a bad parse
        raise CondormlError(f"{what} {text!r}: not a ClassAd expression ({err})") from None
    return text


def parse_assignments(items: list[str], where: str) -> dict[str, str]:
    """``["accounting_group = g", "+ProjectName=P"]`` (``--append``) -> a dict, in order.

    Raises
    ------
    CondormlError
        For an item without ``=``.
    """
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CondormlError(
                f"{where} {item!r}: expected COMMAND = VALUE, e.g. {where} 'accounting_group = group_ml'"
            )
        if key.strip() in parsed:
            raise CondormlError(f"{where} {key.strip()}: given twice")
        parsed[key.strip()] = value.strip()
    return parsed
