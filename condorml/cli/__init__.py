"""The ``condorml`` command: a thin typer app over the library.

Each command adapts its options, calls one library function and renders what it returns. Heavy
modules (torch, pandas, htcondor2) are imported inside the commands, so ``--help`` is instant.
``condorml train``, which a training job runs again after every checkpoint exit, is built on its
own by :func:`main`, without the other commands' modules and options.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from condorml.cli._common import HelpGroup, use_plain_help

TRAIN = "train"


def _version(value: bool) -> None:
    if value:
        from condorml import __version__

        typer.echo(f"condorml {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train PyTorch image classifiers on HTCondor pools: checkpointing jobs, sweeps, one CSV."""


def _new_app() -> typer.Typer:
    """The root group, its options and settings, without commands."""
    root = typer.Typer(
        name="condorml",
        help="Train PyTorch image classifiers on HTCondor pools: checkpointing jobs, sweeps, one CSV.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain --help (HelpGroup, HelpCommand), one-line usage errors
        cls=HelpGroup,
        # help wraps to the terminal, up to 100 columns (click's default stops at 80)
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    root.callback()(_root)
    return root


def _train_app() -> typer.Typer:
    """The root group with ``train`` alone: what a training job's start needs."""
    from condorml.cli import train

    root = _new_app()
    root.command(TRAIN)(train.train_command)
    use_plain_help(root)
    return root


def _full_app() -> typer.Typer:
    """The root group with every command."""
    from condorml.cli import (
        data,
        demo,
        evaluate,
        infer,
        merge,
        report,
        run,
        search,
        stop,
        submit,
        sweep,
        train,
        watch,
    )

    root = _new_app()
    root.add_typer(data.app, name="data")
    root.add_typer(submit.app, name="submit")
    root.command(TRAIN)(train.train_command)
    root.command("infer")(infer.infer_command)
    root.command("merge")(merge.merge_command)
    root.command("evaluate")(evaluate.evaluate_command)
    root.command("sweep")(sweep.sweep_command)
    root.command("collect")(sweep.collect_command)
    root.command("run")(run.run_command)
    root.command("stop")(stop.stop_command)
    root.command("watch")(watch.watch_command)
    root.command("report")(report.report_command)
    root.command("demo")(demo.demo_command)
    root.add_typer(search.app, name="search")
    use_plain_help(root)  # sub-apps' commands too: help that reads at 80 columns
    return root


def __getattr__(name: str) -> Any:
    """``app``, the typer app of every command, made at its first use."""
    if name == "app":
        made = globals()["app"] = _full_app()
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point.

    ``condorml train ...`` runs with the ``train`` command alone: its usage, help and errors
    are the same, and a start saves the import of the other commands' modules (sweeps, the
    monitor, the submit files) and the building of their options.
    """
    if sys.argv[1:2] == [TRAIN]:
        _train_app()()
    else:
        (globals().get("app") or __getattr__("app"))()
