"""A node's PRE and POST scripts and the macros (``$RETURN``, ``$RETRY``...) DAGMan gives them.

A script runs in the node's folder (its ``DIR``, else the DAG's) with the macros of its
``SCRIPT`` line substituted; ``DEFER status time`` runs it again after ``time`` seconds while it
exits with ``status``. The ``$``-macros are the ones DAGMan defines for scripts.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from condorml.backends.local.dagfile import Node, Script
from condorml.backends.local.starter import JobOutcome


def script_macros(
    node: Node, retry: int, statuses: Sequence[str], dag_status: int
) -> dict[str, str]:
    """The macros of a PRE script (and the POST script's before its own), for this attempt.

    Parameters
    ----------
    node : Node
        The node.
    retry : int
        The attempt number, 0 for the first.
    statuses : sequence of str
        Every node's state now (``done``, ``queued``, ``error``...).
    dag_status : int
        DAGMan's ``DAG_STATUS`` now.
    """
    return {
        "$NODE": node.name,
        "$JOB": node.name,
        "$RETRY": str(retry),
        "$MAX_RETRIES": str(node.retries),
        "$NODE_COUNT": str(len(statuses)),
        "$QUEUED_COUNT": str(statuses.count("queued")),
        "$DONE_COUNT": str(statuses.count("done")),
        "$FAILED_COUNT": str(statuses.count("error")),
        "$FUTILE_COUNT": str(statuses.count("futile")),
        "$DAGID": "0",
        "$DAG_STATUS": str(dag_status),
    }


def post_macros(
    macros: dict[str, str],
    outcomes: list[JobOutcome],
    cluster: int | None,
    pre_value: int | None,
) -> dict[str, str]:
    """The POST script's macros: ``macros`` plus what the node's jobs did."""
    failed = [o for o in outcomes if o.status != "exited" or o.return_value != 0]
    return {
        **macros,
        "$RETURN": str(failed[0].return_value if failed else 0),
        "$JOBID": f"{cluster}.{len(outcomes) - 1}" if cluster else "",
        "$CLUSTERID": str(cluster or ""),
        "$JOB_COUNT": str(len(outcomes)),
        "$JOB_ABORT_COUNT": str(sum(o.status == "removed" for o in outcomes)),
        "$SUCCESS": "true" if not failed else "false",
        "$EXIT_CODES": ",".join(str(o.return_value) for o in outcomes),
        "$PRE_SCRIPT_RETURN": str(pre_value) if pre_value is not None else "-1",
    }


def run_script(
    node: Node,
    script: Script,
    macros: dict[str, str],
    cwd: Path,
    cancel: threading.Event,
    report: Callable[[str], None],
    kind: str = "PRE",
) -> int:
    """Run a PRE or POST script in ``cwd`` and return its exit status (1 if it cannot start).

    ``report`` receives a line for ``dagman.out`` when the script cannot be run or is deferred
    (``kind``: PRE or POST, for that line); a set ``cancel`` ends a DEFER wait at once, and the
    deferral status is returned (the node did not finish). A deferral is no failure: it uses
    none of the node's RETRY count, as in DAGMan.
    """
    argv = [script.executable, *(macros.get(arg, arg) for arg in script.arguments)]
    if not os.path.isabs(argv[0]) and (cwd / argv[0]).exists():
        argv[0] = str(cwd / argv[0])
    while True:
        try:
            value = subprocess.run(argv, cwd=cwd, check=False, stdin=subprocess.DEVNULL).returncode
        except OSError as err:
            report(
                f"Node {node.name}: cannot run script {script.executable}: {err.strerror or err}"
            )
            return 1
        if script.defer_status is None or value != script.defer_status or cancel.is_set():
            return value
        report(
            f"Deferring {kind} script of node {node.name} for {script.defer_seconds} seconds "
            f"(exit status was {value})..."
        )  # DAGMan's words
        if cancel.wait(script.defer_seconds):
            return value
