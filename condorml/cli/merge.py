"""``condorml merge``: join the CSVs of sharded inference into one."""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, setup_logging


def merge_command(
    output: Path = typer.Argument(..., help="The merged CSV."),
    parts: list[Path] = typer.Argument(..., help="Shard CSVs from `condorml infer --shard I/N`."),
) -> None:
    """Merge shard CSVs (and their .json sidecars) into one sorted CSV, refusing overlapping ids,
    missing or incomplete shards, and shards of other models or images."""
    from condorml.results.merge import merge_predictions

    setup_logging()
    result = call(merge_predictions, output, parts)
    note = "" if result.verified else " (no sidecars: completeness not checked)"
    typer.echo(f"wrote {result.output}: {result.rows} rows from {result.parts} part(s){note}")
