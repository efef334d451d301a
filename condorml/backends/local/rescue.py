"""Rescue DAGs: what DAGMan writes when a DAG fails or is removed, and reads when it runs again.

A rescue file (``<dag>.rescue001``, ``002``...) marks the nodes that succeeded DONE and keeps
the retries left, so a second run does not run a succeeded node again. The newest is applied;
``--restart`` renames them all ``.old`` instead, and every node runs again.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from condorml.backends.local.dagfile import Dag
from condorml.errors import CondormlError
from condorml.fileio import atomic_write_text

RESCUE_PATTERN = re.compile(r"\.rescue(\d{3})$")


def use_newest_rescue(dag: Dag, restart: bool) -> None:
    """Apply the DAG's newest rescue file to it; with ``restart``, set them all aside (``.old``)."""
    rescues = rescue_files(dag.path)
    if rescues and restart:
        for path in rescues:
            path.rename(path.with_name(path.name + ".old"))
        return
    if rescues:
        apply_rescue(dag, rescues[-1])


def rescue_files(dag_path: Path) -> list[Path]:
    """The DAG's rescue files, oldest first (``sweep.dag.rescue001``, ...)."""
    found = [
        (int(m.group(1)), p)
        for p in dag_path.parent.glob(dag_path.name + ".rescue*")
        if (m := RESCUE_PATTERN.search(p.name))
    ]
    return [p for _, p in sorted(found)]


def apply_rescue(dag: Dag, rescue: Path) -> None:
    """Apply a rescue file (DONE lines, remaining RETRY counts) to a parsed DAG, as DAGMan does."""
    for number, line in enumerate(rescue.read_text().splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].upper()
        if keyword not in ("DONE", "RETRY"):
            raise _fail(rescue, number, line, f"{words[0]} in a rescue file")
        node = dag.nodes.get(words[1])
        if node is None:
            raise _fail(
                rescue,
                number,
                line,
                f"unknown node {words[1]} (the rescue file belongs to another DAG?)",
            )
        if keyword == "DONE":
            node.done = True
        else:
            node.retries = int(words[2])
    dag.rescue = rescue


def write_rescue(dag: Dag, done: list[str], failed: list[str]) -> Path:
    """Write the next ``<dag>.rescueNNN`` in DAGMan's (partial) format; return its path."""
    existing = rescue_files(dag.path)
    number = int(RESCUE_PATTERN.search(existing[-1].name).group(1)) + 1 if existing else 1
    path = dag.path.with_name(f"{dag.path.name}.rescue{number:03d}")

    lines = [
        "# Rescue DAG file, created after running",
        f"#   the {dag.path.name} DAG file",
        f"# Created {time.strftime('%m/%d/%Y %H:%M:%S UTC', time.gmtime())}",
        "# Rescue DAG version: 2.0.1 (partial)",
        "#",
        f"# Total number of Nodes: {len(dag.nodes)}",
        f"# Nodes premarked DONE: {len(done)}",
        f"# Nodes that failed: {len(failed)}",
        "#   " + ",".join([*failed, "<ENDLIST>"]),
        "",
        *[f"DONE {name}" for name in done],
        *[
            f"RETRY {n.name} {n.retries}"
            for n in dag.nodes.values()
            if n.retries and n.name not in done and not n.final
        ],
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _fail(path: Path, number: int, line: str, message: str) -> CondormlError:
    return CondormlError(f"{path}:{number}: {message}: {line.strip()}")
