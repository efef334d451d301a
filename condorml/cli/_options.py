"""Option groups shared by several commands, declared once.

``condorml train`` and ``condorml submit train`` take the same training options; ``condorml
infer`` and ``condorml submit infer`` the same inference options; both ``submit`` commands the
same resource options. Each group is a *template*: a function whose parameters are typer
options and which is never called. :func:`with_options` gives a command the parameters of its
templates, and the command receives them as keyword arguments, named like the fields of
:class:`~condorml.config.TrainConfig` and friends so that they pass straight through.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

import typer

from condorml.config import (
    DEVICES,
    INFER_PRECISIONS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULERS,
    InferConfig,
    Option,
    TrainConfig,
    option_fields,
    option_flag,
)
from condorml.htcondor.resources import CHTC_GPU_JOB_LENGTHS, POOL_TABLES, PROFILES

# The choices as types, for typer; made from condorml.config's tables.
Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
Scheduler = Literal[SCHEDULERS]  # type: ignore[valid-type]
Device = Literal[DEVICES]  # type: ignore[valid-type]
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]
InferPrecision = Literal[INFER_PRECISIONS]  # type: ignore[valid-type]
ProfileName = Literal[PROFILES]  # type: ignore[valid-type]
GpuJobLength = Literal[tuple(CHTC_GPU_JOB_LENGTHS)]  # type: ignore[valid-type]


def with_options(
    *templates: Callable[..., None],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command, which ends in ``**options``, the parameters of ``templates`` too."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD
        ]
        hints = typing.get_type_hints(command)
        params, annotations = [], {p.name: hints[p.name] for p in own}
        for template in templates:
            template_hints = typing.get_type_hints(template)
            for p in inspect.signature(template).parameters.values():
                params.append(p.replace(annotation=template_hints[p.name]))
                annotations[p.name] = template_hints[p.name]
        own = [p.replace(annotation=annotations[p.name]) for p in own]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            return command(**kwargs)

        wrapper.__signature__ = inspect.Signature(own + params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**annotations, "return": hints.get("return")}
        return wrapper

    return decorate


def _parameter(
    key: str, item: dataclasses.Field[Any], meta: Option, hint: Any
) -> inspect.Parameter:
    """One typer option made from a field of an option table: its default, help and choices."""
    if meta.rule is not None and meta.rule.choices:
        hint = Literal[meta.rule.choices]  # type: ignore[valid-type]
        hint = hint | None if item.default is None else hint
    default_value = item.default
    if typing.get_origin(hint) is tuple:  # a repeatable option: typer takes it as a list
        hint, default_value = list[typing.get_args(hint)[0]], list(item.default)
    negatable = [flag for flag in meta.flags if "/" in flag]  # --x/--no-x replaces --x
    flags = [*(negatable or [option_flag(key)]), *(f for f in meta.flags if "/" not in f)]
    extra = {} if meta.cli_min is None else {"min": meta.cli_min}
    default = typer.Option(default_value, *flags, help=meta.help, **extra)
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)


def _template(
    *tables: type,
    extra: Callable[..., None] | None = None,
    doc: str,
    submission: bool = True,
) -> Callable[..., None]:
    """A template whose parameters are the options of ``tables`` (then those of ``extra``);
    without ``submission``, not the options only a submitted job has (``--shards``)."""
    params = []
    for table in tables:
        hints = typing.get_type_hints(table)
        params += [_parameter(key, item, meta, hints[item.name])
                   for key, (item, meta) in option_fields(table).items()
                   if submission or not meta.submission]  # fmt: skip
    if extra is not None:
        extra_hints = typing.get_type_hints(extra)
        params += [p.replace(annotation=extra_hints[p.name], kind=p.KEYWORD_ONLY)
                   for p in inspect.signature(extra).parameters.values()]  # fmt: skip

    def template(**options: Any) -> None:
        """Never called: its signature is the options."""

    template.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    template.__annotations__ = {p.name: p.annotation for p in params}
    template.__doc__ = doc
    return template


training_options = _template(
    TrainConfig, doc="Template: the options of a training run (TrainConfig's fields)."
)
inference_options = _template(
    InferConfig, doc="Template: the options of an inference run.", submission=False
)
submit_inference_options = _template(
    InferConfig, doc="Template: the options of a submitted inference job."
)


def _command_line_only(
    append: list[str] = typer.Option(
        [],
        "--append",
        "-a",
        help="Add a submit command, as condor_submit -a: 'accounting_group = group_ml', '+ProjectName = \"P\"', 'getenv = PATH'; repeatable (README: pass-through commands).",
    ),
    submit: bool = typer.Option(False, "--submit", help="Also hand the job to the local schedd."),
) -> None:
    """The submit commands' own options, after the pool options."""


resource_options = _template(
    *POOL_TABLES,
    extra=_command_line_only,
    doc="Template: what a job asks the pool for, and where it runs.",
)


def split(options: dict[str, Any], template: Callable[..., None]) -> dict[str, Any]:
    """Take the options that belong to ``template`` out of ``options``."""
    names = inspect.signature(template).parameters
    return {name: options.pop(name) for name in list(options) if name in names}
