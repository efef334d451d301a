"""Reading DAG files for the local backend (rescue files: :mod:`.rescue`).

Supported: JOB, FINAL, VARS, PARENT/CHILD, RETRY [UNLESS-EXIT], SCRIPT PRE/POST (with DEFER),
PRE_SKIP, CATEGORY, MAXJOBS, PRIORITY, ABORT-DAG-ON, DONE, NOOP, DIR, ``ALL_NODES``. Anything
else (SUBDAG, SPLICE, SERVICE, PROVISIONER, INCLUDE, CONFIG, ...) is refused with the line.
Like DAGMan, a node may be referred to before its JOB line: the file is read in two passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from condorml.errors import CondormlError

ALL_NODES = "ALL_NODES"
_NODE_KEYWORDS = {"JOB", "FINAL"}
_SUPPORTED = {
    "VARS",
    "PARENT",
    "RETRY",
    "SCRIPT",
    "PRE_SKIP",
    "CATEGORY",
    "MAXJOBS",
    "PRIORITY",
    "ABORT-DAG-ON",
    "DONE",
}
_VARS_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.+]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


@dataclass
class Script:
    """A PRE or POST script: executable and arguments, with DAGMan's ``$`` macros unexpanded."""

    executable: str
    arguments: list[str]
    defer_status: int | None = None
    defer_seconds: int = 0


@dataclass
class Node:
    """One DAG node as written in the file."""

    name: str
    submit_file: str
    directory: str | None = None
    noop: bool = False
    done: bool = False
    final: bool = False
    vars: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    retry_unless_exit: int | None = None
    pre: Script | None = None
    post: Script | None = None
    pre_skip: int | None = None
    category: str | None = None
    priority: int = 0
    abort_on: tuple[int, int | None] | None = None
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass
class Dag:
    """A parsed DAG: nodes by name (in file order), throttles, the FINAL node."""

    path: Path
    nodes: dict[str, Node]
    maxjobs: dict[str, int]
    final: str | None = None
    rescue: Path | None = None  # the rescue file applied, if any

    @property
    def folder(self) -> Path:
        return self.path.parent


def _fail(path: Path, number: int, line: str, message: str) -> CondormlError:
    return CondormlError(f"{path}:{number}: {message}: {line.strip()}")


def find_dag(path: Path) -> Path:
    """The DAG file ``path`` names: itself, or the one ``*.dag`` of a run folder.

    Raises
    ------
    CondormlError
        For a folder with no ``*.dag`` or with several, or a path that does not exist.
    """
    if not path.is_dir():
        if not path.exists():
            raise CondormlError(
                f"{path}: no such file or folder; give a DAG file or its run folder"
            )
        return path
    dags = sorted(path.glob("*.dag"))
    if len(dags) != 1:
        found = ", ".join(d.name for d in dags) if dags else "none"
        raise CondormlError(
            f"{path}: {'several' if dags else 'no'} *.dag files here ({found}); "
            "give the DAG file to run (e.g. RUN_DIR/sweep.dag)"
        )
    return dags[0]


def read_dag(path: Path) -> Dag:
    """Parse a DAG file.

    Raises
    ------
    CondormlError
        For a missing file, an unsupported command (naming it and its line), a syntax error, or a
        reference to an unknown node.
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise CondormlError(f"{path}: no such DAG file") from None
    dag = Dag(path, {}, {})
    numbered = [
        (n, line)
        for n, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for number, line in numbered:  # pass 1: the nodes
        words = line.split()
        keyword = words[0].upper()
        if keyword in _NODE_KEYWORDS:
            _parse_node(dag, words, number, line)
        elif keyword not in _SUPPORTED:
            raise _fail(
                path,
                number,
                line,
                f"{words[0]} is not supported by the local backend (run this DAG with condor_submit_dag)",
            )
    for number, line in numbered:  # pass 2: everything that refers to them
        words = line.split()
        keyword = words[0].upper()
        if keyword not in _NODE_KEYWORDS:
            try:
                _PARSERS[keyword](dag, line, words, number)
            except (IndexError, ValueError):
                raise _fail(path, number, line, f"malformed {words[0]} line") from None
    return dag


def _parse_node(dag: Dag, words: list[str], number: int, line: str) -> None:
    if len(words) < 3:
        raise _fail(dag.path, number, line, f"{words[0]} needs a node name and a submit file")
    name, submit_file, rest = words[1], words[2], [w.upper() for w in words[3:]]
    if "." in name or "+" in name or name.upper() in ("PARENT", "CHILD"):
        raise _fail(
            dag.path, number, line, f"node name {name!r} is not allowed ('.' and '+' are reserved)"
        )
    if name in dag.nodes:
        raise _fail(dag.path, number, line, f"node {name} is defined twice")
    node = Node(name, submit_file, final=words[0].upper() == "FINAL")
    i = 0
    while i < len(rest):
        if rest[i] == "DIR" and i + 1 < len(rest):
            node.directory = words[3 + i + 1]
            i += 2
        elif rest[i] == "NOOP":
            node.noop, i = True, i + 1
        elif rest[i] == "DONE" and not node.final:
            node.done, i = True, i + 1
        else:
            raise _fail(dag.path, number, line, f"unexpected {words[3 + i]!r}")
    if node.final:
        if dag.final is not None:
            raise _fail(dag.path, number, line, "a DAG has at most one FINAL node")
        dag.final = name
    dag.nodes[name] = node


def _targets(dag: Dag, name: str, number: int, line: str, allow_final: bool = True) -> list[Node]:
    if name == ALL_NODES:
        return [n for n in dag.nodes.values() if not n.final]
    node = dag.nodes.get(name)
    if node is None:
        raise _fail(dag.path, number, line, f"unknown node {name}")
    if node.final and not allow_final:
        raise _fail(dag.path, number, line, "not allowed for the FINAL node")
    return [node]


def _parse_vars(dag: Dag, line: str, words: list[str], number: int) -> None:
    rest = line.split(None, 2)[2] if len(words) > 2 else ""
    first = rest.split(None, 1)[0].upper() if rest else ""
    if first in ("PREPEND", "APPEND"):
        rest = rest.split(None, 1)[1] if len(rest.split(None, 1)) > 1 else ""
    pairs, position = {}, 0
    while position < len(rest):
        match = _VARS_PAIR.match(rest, position)
        if match is None:
            if rest[position:].strip():
                raise _fail(
                    dag.path,
                    number,
                    line,
                    'VARS values must be name="value" pairs (\\" and \\\\ escaped)',
                )
            break
        key, raw = match.group(1), match.group(2)
        if key.lower().startswith("queue"):
            raise _fail(dag.path, number, line, f"VARS name {key} may not start with 'queue'")
        pairs[key] = re.sub(r"\\(.)", r"\1", raw)
        position = match.end()
    for node in _targets(dag, words[1], number, line):
        node.vars.update(pairs)


def _parse_parent(dag: Dag, line: str, words: list[str], number: int) -> None:
    upper = [w.upper() for w in words]
    if "CHILD" not in upper:
        raise _fail(dag.path, number, line, "PARENT without CHILD")
    split = upper.index("CHILD")
    parents, children = words[1:split], words[split + 1 :]
    if not parents or not children:
        raise _fail(dag.path, number, line, "PARENT and CHILD each need at least one node")
    for p in parents:
        for c in children:
            parent, child = (
                _targets(dag, p, number, line, False)[0],
                _targets(dag, c, number, line, False)[0],
            )
            if c not in parent.children:
                parent.children.append(c)
                child.parents.append(p)


def _parse_retry(dag: Dag, line: str, words: list[str], number: int) -> None:
    count = int(words[2])
    unless = int(words[4]) if len(words) > 4 and words[3].upper() == "UNLESS-EXIT" else None
    for node in _targets(dag, words[1], number, line, False):
        node.retries, node.retry_unless_exit = count, unless


def _parse_script(dag: Dag, line: str, words: list[str], number: int) -> None:
    i, defer = 1, (None, 0)
    if words[i].upper() == "DEFER":
        defer = (int(words[i + 1]), int(words[i + 2]))
        i += 3
    if words[i].upper() == "DEBUG":
        i += 3
    kind = words[i].upper()
    if kind not in ("PRE", "POST"):
        raise _fail(
            dag.path,
            number,
            line,
            f"SCRIPT {words[i]} is not supported by the local backend (PRE and POST are)",
        )
    # split at spaces only: DAGMan (25.0, checked) keeps quotes and does not group by them
    command = line.split(None, i + 2)[i + 2].split()
    script = Script(command[0], command[1:], *defer)
    for node in _targets(dag, words[i + 1], number, line):
        setattr(node, kind.lower(), script)


def _parse_pre_skip(dag: Dag, line: str, words: list[str], number: int) -> None:
    for node in _targets(dag, words[1], number, line):
        node.pre_skip = int(words[2])


def _parse_category(dag: Dag, line: str, words: list[str], number: int) -> None:
    for node in _targets(dag, words[1], number, line, False):
        node.category = words[2]


def _parse_maxjobs(dag: Dag, line: str, words: list[str], number: int) -> None:
    dag.maxjobs[words[1]] = int(words[2])


def _parse_priority(dag: Dag, line: str, words: list[str], number: int) -> None:
    for node in _targets(dag, words[1], number, line, False):
        node.priority = int(words[2])


def _parse_abort(dag: Dag, line: str, words: list[str], number: int) -> None:
    value = int(words[2])
    returned = int(words[4]) if len(words) > 4 and words[3].upper() == "RETURN" else None
    for node in _targets(dag, words[1], number, line, False):
        node.abort_on = (value, returned)


def _parse_done(dag: Dag, line: str, words: list[str], number: int) -> None:
    _targets(dag, words[1], number, line, False)[0].done = True


_PARSERS = {
    "VARS": _parse_vars,
    "PARENT": _parse_parent,
    "RETRY": _parse_retry,
    "SCRIPT": _parse_script,
    "PRE_SKIP": _parse_pre_skip,
    "CATEGORY": _parse_category,
    "MAXJOBS": _parse_maxjobs,
    "PRIORITY": _parse_priority,
    "ABORT-DAG-ON": _parse_abort,
    "DONE": _parse_done,
}
