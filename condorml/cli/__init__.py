"""The ``condorml`` command: a thin typer app over the library.

Each command adapts its options, calls one library function and renders what it returns. Heavy
modules (torch, pandas, htcondor2) are imported inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import typer

from condorml.cli import (
    data,
    demo,
    evaluate,
    infer,
    merge,
    report,
    run,
    search,
    submit,
    sweep,
    train,
    watch,
)
from condorml.cli._common import HelpGroup, use_plain_help

app = typer.Typer(
    name="condorml",
    help="Train PyTorch image classifiers on HTCondor pools: checkpointing jobs, sweeps, one CSV.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain --help (HelpGroup, HelpCommand), one-line usage errors
    cls=HelpGroup,
    # help wraps to the terminal, up to 100 columns (click's default stops at 80)
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
app.add_typer(data.app, name="data")
app.add_typer(submit.app, name="submit")
app.command("train")(train.train_command)
app.command("infer")(infer.infer_command)
app.command("merge")(merge.merge_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("sweep")(sweep.sweep_command)
app.command("collect")(sweep.collect_command)
app.command("run")(run.run_command)
app.command("watch")(watch.watch_command)
app.command("report")(report.report_command)
app.command("demo")(demo.demo_command)
app.add_typer(search.app, name="search")
use_plain_help(app)  # sub-apps' commands too: help that reads at 80 columns


def _version(value: bool) -> None:
    if value:
        from condorml import __version__

        typer.echo(f"condorml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train PyTorch image classifiers on HTCondor pools: checkpointing jobs, sweeps, one CSV."""


def main() -> None:
    """Console-script entry point."""
    app()
