"""``condorml sweep`` and ``condorml collect``: sweeps and ensembles as DAGMan workflows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from condorml.cli._common import call, print_command, setup_logging, warn_missing_images
from condorml.cli.run import INJECT_EVICTIONS_OPTION, MAX_JOBS_OPTION, local_options, run_here
from condorml.errors import CondormlError, ExitCode

if TYPE_CHECKING:
    from condorml.backends.base import Backend

BackendName = Literal["local", "condor"]  # condorml.backends.BACKENDS


def sweep_command(
    spec: Path = typer.Argument(..., help="Sweep specification (TOML; see dags/example.toml)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder: sweep.dag, submit files, members/ID/."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan and the files it would write; write nothing."
    ),
    submit: bool = typer.Option(
        False, "--submit", help="Run the DAG: on a schedd (condor) or on this machine (local)."
    ),
    backend: BackendName | None = typer.Option(
        None,
        "--backend",
        help="Where --submit runs it [default: condor when a schedd answers and condor_dagman is on PATH, else local].",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Start over in a run folder made from another spec (the old run is kept in previous-N).",
    ),
    epoch_minutes: float | None = typer.Option(
        None,
        "--epoch-minutes",
        help="Minutes per training epoch, to estimate GPU hours in --dry-run.",
    ),
    max_jobs: int | None = MAX_JOBS_OPTION,  # the local backend's, as condorml run
    inject_evictions: float = INJECT_EVICTIONS_OPTION,
) -> None:
    """Expand a sweep specification into ensemble members and write a DAGMan workflow: a training
    node per member, an inference node per member, and a FINAL collect node that averages the
    members into dog_probs.csv and writes leaderboard.csv."""
    from condorml.sweep.plan import plan_sweep, write_sweep

    setup_logging()
    plan = call(plan_sweep, spec, out)
    if dry_run:
        _print_plan(plan, epoch_minutes)
        return
    from condorml.backends.condor import check_dag_folder

    chosen = _choose_backend(backend, max_jobs, inject_evictions) if submit else None
    if chosen is not None:  # before writing anything: DAGMan would refuse a folder under /tmp
        call(chosen.check_dag, plan.dag_file)
    call(write_sweep, plan, force)
    typer.echo(f"wrote {plan.dag_file} for {len(plan.members)} member(s) in {out}")
    if chosen is None:
        try:
            check_dag_folder(plan.dag_file)
        except CondormlError as err:
            typer.echo(f"note: {err}")
        print_command("run it:", ["cd", out], ["condor_submit_dag", plan.dag_file.name])
        print_command("or here:", ["condorml", "run", plan.dag_file])
        return
    if chosen.detached:  # a schedd runs it: say how to follow it
        warn_missing_images([job.submit for job in plan.workflow.jobs.values()])
        typer.echo(call(chosen.submit_dag, plan.dag_file).message)
        return
    run_here(chosen, plan.dag_file)  # this machine: runs it now, exits with its result


def _choose_backend(name: str | None, max_jobs: int | None, evictions: float) -> Backend:
    from condorml.backends import choose_backend

    backend = call(choose_backend, name, local_options(max_jobs, evictions))
    if name is None:
        typer.echo(f"no --backend: using {backend.name} ({backend.why})")
    return backend


def _print_plan(plan, epoch_minutes: float | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = plan.member_rows()
    swept = [*plan.spec.swept]
    table = Table(title=f"{len(rows)} member(s) of {plan.spec.path}")
    for column in ["member", "seed", *swept]:
        table.add_column(column, justify="right")
    for row in rows[:20]:
        table.add_row(
            *(str(row[c]) if row[c] != "" else "(TPE)" for c in ["member", "seed", *swept])
        )
    if len(rows) > 20:
        table.add_row("...", f"{len(rows) - 20} more", *["" for _ in swept])
    console.print(table)
    console.print("nodes: " + ", ".join(f"{k} {v}" for k, v in plan.node_counts().items()))
    for line in plan.search_lines():
        console.print(line, highlight=False)
    for kind, job in plan.workflow.jobs.items():
        requests = {
            k: job.submit[k]
            for k in job.submit
            if k.startswith(("request_", "gpus_", "require_gpus", "universe", "container_image"))
        }
        console.print(
            f"{kind} jobs: "
            + (", ".join(f"{k} = {v}" for k, v in requests.items()) or "(defaults)"),
            highlight=False,
        )
    if plan.workflow.maxjobs:
        console.print(
            "throttles: " + ", ".join(f"MAXJOBS {k} {v}" for k, v in plan.workflow.maxjobs.items())
        )
    if epoch_minutes is not None:
        hours, gpu_hours = plan.training_hours(epoch_minutes)
        console.print(
            f"training estimate at {epoch_minutes:g} min/epoch: {hours:.1f} job hours, {gpu_hours:.1f} GPU hours"
        )
    console.print(
        "would write: "
        + ", ".join(str(p) for p in plan.files())
        + f", and {len(rows)} member folder(s) under {plan.run_dir / 'members'}"
    )


def collect_command(
    run_dir: Path = typer.Argument(Path("."), help="The sweep's run folder."),
    min_members: int = typer.Option(
        1, "--min-members", help="Fail (exit 1) if fewer members produced predictions."
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="fileid,label (or fileid,is_dog) CSV: score the members and the ensemble.",
    ),
    with_stats: bool = typer.Option(
        False, "--with-stats", help="Add prob_std,n_models to the ensemble CSV."
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", min=1, help="Only the K best members (by --metric) join the ensemble."
    ),
    metric: str = typer.Option(
        "val_loss",
        "--metric",
        help="What ranks the members: val_loss (lowest first), val_acc, val_macro_f1 or val_top5_acc.",
    ),
    test_images: Path | None = typer.Option(
        None,
        "--test-images",
        help="The test set the members predicted: without --labels, its own labels score them if it is laid out with labels.",
    ),
) -> None:
    """Average the members' predictions into RUN_DIR/dog_probs.csv (probs.csv for classes other
    than cat, dog) and write leaderboard.csv (the DAG's FINAL node runs this; members that failed
    are listed, not fatal)."""
    from condorml.sweep.collect import collect

    setup_logging()
    result = call(collect, run_dir, min_members, labels, with_stats, top_k, metric, test_images)
    others = [f"{len(result.failed)} failed"]
    if result.stopped:
        others.append(f"{len(result.stopped)} stopped early by the search")
    if result.left_out:
        others.append(f"{len(result.left_out)} outside the top {top_k}")
    typer.echo(
        f"{len(result.joined)} member(s) joined the ensemble, {', '.join(others)}; wrote {result.leaderboard}"
        + (f" and {result.ensemble}" if result.ensemble else "")
    )
    if result.scores:
        typer.echo(
            f"ensemble: accuracy {result.scores['accuracy']:.4f}, log loss {result.scores['log_loss']:.4f}"
        )
    if not result.succeeded(min_members):
        typer.echo(
            f"condorml: error: only {len(result.joined)} member(s) produced predictions; --min-members is {min_members}",
            err=True,
        )
        raise typer.Exit(ExitCode.TOO_FEW_MEMBERS)
