"""``condorml run``: run a DAG and its submit files on this machine (the local backend)."""

from __future__ import annotations

from pathlib import Path

import typer


def run_dag_here(dag_file: Path) -> None:
    """Run a DAG with the local backend (see ``condorml run``)."""
    typer.echo("condorml: error: the local backend is not available yet", err=True)
    raise typer.Exit(2)
