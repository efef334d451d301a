"""What every command shares: error reporting, logging, progress display, help layout, and the
commands printed for the user to copy."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
import typer.core

from condorml.errors import CondormlError, ExitCode, is_transient
from condorml.htcondor.quoting import shell_line
from condorml.progress import LogProgress, Progress

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")
USAGE_ERROR = ExitCode.PERMANENT  # click's own usage errors exit 2 as well


@functools.cache
def stderr() -> Console:
    """The rich console on stderr, made at first use: a batch job (a training restart) that
    logs plain lines never imports rich."""
    from rich.console import Console

    return Console(stderr=True)


def _on_terminal() -> bool:
    """Whether stderr is a terminal (rich bars and log lines then), as rich decides it
    (``FORCE_TERMINAL``, ``TTY_COMPATIBLE``), without importing rich for a batch job."""
    if "FORCE_TERMINAL" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return stderr().is_terminal
    return sys.stderr.isatty()


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a library function; its failure becomes one line on stderr and the exit code of its kind.

    A :class:`CondormlError` exits 2 (permanent), or 75 when it is transient; the machine
    failing under any code (no memory, a full disk, an I/O error: :func:`is_transient`) exits 75
    too, so that a job's retry runs it again. Anything else is a bug: exit 1 with a traceback.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        if not isinstance(err, CondormlError) and not is_transient(err):
            raise
        message = str(err) if isinstance(err, CondormlError) else _describe_machine_failure(err)
        if is_transient(err):
            message += f" (transient, exit {int(ExitCode.TRANSIENT)}: another attempt may succeed)"
        typer.echo(f"condorml: error: {message}", err=True)
        raise typer.Exit(ExitCode.TRANSIENT if is_transient(err) else ExitCode.PERMANENT) from None


def _describe_machine_failure(err: BaseException) -> str:
    """One line for a resource failure that escaped the library's own messages."""
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    if isinstance(err, MemoryError):
        return "out of memory: request more (request_memory, --memory) or lower --batch-size"
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    if type(err).__name__ == "OutOfMemoryError" or "CUDA" in first:
        return f"out of GPU memory ({first}); lower --batch-size or ask for a larger GPU"
    return f"out of memory ({first}); request more (request_memory, --memory) or lower --batch-size"


def condorml_command() -> list[str]:
    """How to run this condorml from a fresh shell: ``condorml`` where that name on PATH is this
    installation, else its entry point's full path (``.venv/bin/condorml``: a shell that has not
    activated the virtualenv does not find the bare name), else ``python -m condorml``."""
    import shutil

    beside = Path(sys.executable).parent / "condorml"
    found = shutil.which("condorml")
    if found is not None and (not beside.exists() or Path(found).resolve() == beside.resolve()):
        return ["condorml"]
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "condorml"]


def print_command(label: str, *commands: Sequence[str | os.PathLike[str]]) -> None:
    """Print ``label`` and a command line to copy: quoted, on one line however narrow the terminal.

    Plain ``echo``, never a rich console: rich would break a long line into several (and colour
    parts of it), and a pasted half-command runs the wrong thing.
    """
    typer.echo(f"{label} {shell_line(*commands)}")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr: through rich on a terminal (so bars and lines mix), plain lines otherwise."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if _on_terminal():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=stderr(), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="%H:%M:%S"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
        )
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Pillow and others log at INFO/DEBUG about plugins; keep batch-job logs about our work.
    logging.getLogger("PIL").setLevel(logging.WARNING)


def make_progress() -> Progress:
    """A rich progress bar on a terminal, log lines in a batch job."""
    return RichProgress() if _on_terminal() else LogProgress()


class RichProgress:
    """:class:`~condorml.progress.Progress` drawn as one live rich bar; finished tasks become lines."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self._bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=stderr(),
            transient=True,
        )
        self._task = None
        self._description = ""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        if self._task is None:
            self._bars.start()
        else:
            self._bars.remove_task(self._task)
        self._description = description
        self._task = self._bars.add_task(description, total=total, completed=completed, status="")

    def advance(self, steps: int = 1, status: str = "") -> None:
        if self._task is not None:
            self._bars.update(self._task, advance=steps, status=status)

    def finish(self, summary: str = "") -> None:
        if self._task is not None:
            self._bars.remove_task(self._task)
            self._task = None
            self._bars.console.print(f"{self._description}: {summary or 'done'}", highlight=False)

    def close(self) -> None:
        """Stop drawing (call once, after the last task)."""
        self._bars.stop()


# --- help layout ---------------------------------------------------------------------------------
# typer's rich panels share 80 columns between five fixed columns and cut option names to
# "--checkpoint-d…"; click's plain layout puts a long name on its own line and wraps only the help.
_LIST_TYPE = re.compile(r"<list\[(.+?)\]>")


def _argument_label(param: Any, usage: bool = False) -> str:
    """An argument as click writes it: ``OUT``, ``PARTS...``, in usage ``[RUN_DIR]`` when optional
    (typer writes ``{out}`` and ``[run_dir]``)."""
    label = (param.metavar or param.name or "").upper()
    label = f"[{label}]" if usage and not param.required else label
    return f"{label}..." if param.nargs != 1 else label


# click's exceptions, from wherever this typer takes click (recent typers vendor it privately)
_clicks = importlib.import_module(typer.BadParameter.__module__)


class UsageProblem(_clicks.ClickException):  # type: ignore[name-defined,misc]
    """A command line click cannot parse, shown as condorml's one-line error (exit 2).

    typer draws these in a boxed panel after the usage line; condorml says every mistake in one
    line, naming the option and what to do, as its own errors do.
    """

    exit_code = USAGE_ERROR

    def __init__(self, err: Any) -> None:
        param = getattr(err, "param", None)
        if isinstance(err, _clicks.MissingParameter) and param is not None:
            what = _argument_label(param) if param.param_type_name == "argument" else param.opts[0]
            message = f"missing {what}"
        else:
            message = err.format_message().rstrip(".").replace("Value error, ", "")
        self.command_path = err.ctx.command_path if err.ctx is not None else "condorml"
        super().__init__(message)

    def show(self, file: Any = None) -> None:
        typer.echo(f"condorml: error: {self.message} (see: {self.command_path} -h)", err=True)


class _PlainHelp:
    """Help in click's plain layout: option names whole, arguments in capitals, no ``<bool>``;
    command-line mistakes as one line (:class:`UsageProblem`)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)  # type: ignore[misc]
        except _clicks.NoArgsIsHelpError:
            raise  # prints the help: not a mistake
        except _clicks.UsageError as err:
            raise UsageProblem(err) from None

    def resolve_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().resolve_command(*args, **kwargs)  # type: ignore[misc]
        except _clicks.UsageError as err:  # no such command
            raise UsageProblem(err) from None

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.format_usage(ctx, formatter)  # type: ignore[attr-defined]
        self.format_help_text(ctx, formatter)  # type: ignore[attr-defined]
        self.format_options(ctx, formatter)  # type: ignore[attr-defined]
        self.format_epilog(ctx, formatter)  # type: ignore[attr-defined]

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []  # type: ignore[attr-defined]
        pieces += [
            _argument_label(p, usage=True)
            for p in self.get_params(ctx)  # type: ignore[attr-defined]
            if p.param_type_name == "argument"
        ]
        subcommands = getattr(self, "subcommand_metavar", None)
        return [*pieces, subcommands] if subcommands else pieces

    def format_parameters(self, ctx: Any, formatter: Any) -> None:
        """The Arguments and Options sections."""
        arguments, options = [], []
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_label(param), record[1]))
            else:  # a repeatable option takes one value each time: <path>, not <list[Path]>
                names = _LIST_TYPE.sub(lambda m: f"<{m.group(1).lower()}>", record[0])
                options.append((names, record[1]))
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class HelpCommand(_PlainHelp, typer.core.TyperCommand):
    """A command whose ``--help`` reads at 80 columns (see :class:`_PlainHelp`)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        self.format_parameters(ctx, formatter)


class HelpGroup(_PlainHelp, typer.core.TyperGroup):
    """A group whose ``--help`` reads at 80 columns (see :class:`_PlainHelp`)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        self.format_parameters(ctx, formatter)
        self.format_commands(ctx, formatter)


def use_plain_help(app: typer.Typer) -> None:
    """Give every command and group under ``app`` (sub-apps included) the plain help layout."""
    for command in app.registered_commands:
        if command.cls in (None, typer.core.TyperCommand):  # typer's default; keep a custom one
            command.cls = HelpCommand
    for group in app.registered_groups:
        group.cls = HelpGroup
        if group.typer_instance is not None:
            use_plain_help(group.typer_instance)


def warn_missing_images(descriptions: Sequence[Any]) -> None:
    """Before a submission to a pool: one warning per Docker image its registry says it does
    not have (:mod:`condorml.backends.registry`; a registry that cannot be asked says nothing)."""
    from condorml.backends.registry import job_images, missing_image

    for image in job_images(descriptions):
        warning = missing_image(image)
        if warning is not None:
            typer.echo(f"warning: {warning}", err=True)
