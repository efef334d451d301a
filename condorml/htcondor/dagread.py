"""Read the nodes of any DAG file a pool accepts, for monitoring: names, kinds, DONE marks.

This reads HTCondor's DAG language tolerantly, as a monitor needs it, not as a scheduler does:
only the commands that make or mark nodes are read and every other command (``CONFIG``,
``VARS``, ``SCRIPT``, ``DOT``, commands of future HTCondor versions...) is ignored. The local
backend's own reader (:mod:`condorml.backends.local.dagfile`) refuses what it cannot run; this
one must never refuse what DAGMan runs.

Nodes, as DAGMan counts them:

* ``JOB`` (or its newer spelling ``NODE``), ``FINAL``, ``PROVISIONER`` and ``SERVICE``: one node
  each, also with an inline submit description (``JOB name {`` ... ``}``);
* ``SUBDAG EXTERNAL``: one node (the inner DAGMan job; its own nodes are in its own logs);
* ``SPLICE name file [DIR dir]``: the spliced DAG's nodes, each named ``name+node`` (as DAGMan
  names them in the nodes log), read from ``dir/file``; splices nest;
* ``INCLUDE file``: the file's nodes, as if its text were written in place;
* ``DONE name`` and a node line's ``DONE`` option mark a node done before the DAG starts: DAGMan
  never submits it, so no event will ever name it.

Relative paths are taken from the DAG file's folder (where ``condor_submit_dag`` is run from in
the usual case). A splice or include that cannot be read adds no nodes and is listed in
:attr:`DagNodes.unread` rather than refused: a monitor shows what it can.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from condorml.errors import CondormlError

# Commands whose second word names one node, and the kind recorded for it
_NODE_COMMANDS = {
    "JOB": "job",
    "NODE": "job",
    "FINAL": "final",
    "PROVISIONER": "provisioner",
    "SERVICE": "service",
}
# Commands that may open an inline submit description, ``{`` ... ``}``
_BLOCK_OPENERS = frozenset({*_NODE_COMMANDS, "SUBMIT-DESCRIPTION"})
_SPLICE_SEPARATOR = "+"  # DAGMan's scope delimiter in spliced node names


@dataclass(frozen=True)
class DagNode:
    """One node of a DAG: its name as the nodes log gives it, its kind, whether premarked done."""

    name: str
    kind: str  # job, final, provisioner, service or subdag
    done: bool = False


@dataclass
class DagNodes:
    """The nodes of a DAG file, in file order, and the other DAG files it reads.

    Attributes
    ----------
    nodes : dict
        Node name -> :class:`DagNode` (spliced nodes under their ``splice+node`` names).
    referenced : list of Path
        Files read or named by ``SPLICE``, ``INCLUDE`` and ``SUBDAG EXTERNAL``: not top-level
        DAGs of their own.
    unread : list of str
        ``file: why`` for each splice or include that could not be read.
    """

    path: Path
    nodes: dict[str, DagNode] = field(default_factory=dict)
    referenced: list[Path] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[str]:
        """The nodes marked done in the file (never submitted)."""
        return [node.name for node in self.nodes.values() if node.done]


def read_dag_nodes(path: Path) -> DagNodes:
    """Read a DAG file's nodes (see the module docstring for what counts as a node).

    Raises
    ------
    CondormlError
        If the DAG file itself cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise CondormlError(f"{path}: cannot read the DAG file ({err.strerror or err})") from None
    result = DagNodes(path)
    _Reader(result).read(text, path.parent, scope="", stack=(path.resolve(),))
    return result


@dataclass
class _Reader:
    """Reads one DAG file with its includes and splices into a :class:`DagNodes`."""

    result: DagNodes

    def read(self, text: str, folder: Path, scope: str, stack: tuple[Path, ...]) -> None:
        """Add the nodes of ``text`` (a DAG file read from ``folder``), named under ``scope``."""
        done: list[str] = []
        for words in _commands(text):
            command = words[0].upper()
            if command in _NODE_COMMANDS or command == "SUBDAG":
                self._node(words, folder, scope)
            elif command == "DONE" and len(words) > 1:
                done.append(scope + words[1])
            elif command == "SPLICE" and len(words) > 2:
                inner = _with_dir(folder, words[3:]) / words[2]
                prefix = f"{scope}{words[1]}{_SPLICE_SEPARATOR}"
                self._read_file(inner, prefix, stack)
            elif command == "INCLUDE" and len(words) > 1:
                self._read_file(folder / words[1], scope, stack)
        for name in done:  # DONE may come before the node's line
            node = self.result.nodes.get(name)
            if node is not None:
                self.result.nodes[name] = DagNode(node.name, node.kind, done=True)

    def _node(self, words: list[str], folder: Path, scope: str) -> None:
        command = words[0].upper()
        if command == "SUBDAG":  # SUBDAG EXTERNAL name file [DIR dir] [NOOP] [DONE]
            words = words[1:] if len(words) > 1 and words[1].upper() == "EXTERNAL" else words
            if len(words) > 2:  # the inner DAG: its own DAGMan, its own nodes log
                self.result.referenced.append(_with_dir(folder, words[3:]) / words[2])
            kind = "subdag"
        else:
            kind = _NODE_COMMANDS[command]
        if len(words) < 2:
            return  # DAGMan refuses such a line; nothing to count
        options = [w.upper() for w in words[3:]]
        if "DIR" in options:  # its value is a folder's name, whatever it is
            del options[options.index("DIR") : options.index("DIR") + 2]
        done = "DONE" in options and kind != "final"
        name = scope + words[1]
        self.result.nodes[name] = DagNode(name, kind, done)

    def _read_file(self, path: Path, scope: str, stack: tuple[Path, ...]) -> None:
        self.result.referenced.append(path)
        resolved = path.resolve()
        if resolved in stack:  # DAGMan would recurse until it runs out of memory
            self.result.unread.append(f"{path}: includes or splices itself")
            return
        try:
            text = path.read_text(errors="replace")
        except OSError as err:
            self.result.unread.append(f"{path}: {err.strerror or err}")
            return
        self.read(text, path.parent, scope, (*stack, resolved))


def _commands(text: str) -> list[list[str]]:
    """The words of each command line: comments, blank lines and inline submit descriptions
    (``JOB name {`` ... ``}``, ``SUBMIT-DESCRIPTION name {`` ... ``}``) left out, but the line
    that opens a description kept (it may define a node)."""
    commands, in_block = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if in_block:
            in_block = not stripped.startswith("}")
            continue
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        if words[0].upper() in _BLOCK_OPENERS and words[-1].endswith("{"):
            in_block = True
            words[-1] = words[-1][:-1]  # "JOB name{" names the node "name"
            words = [w for w in words if w]
        commands.append(words)
    return commands


def _with_dir(folder: Path, options: list[str]) -> Path:
    """``folder``, or its ``DIR`` option's directory (relative to it, unless absolute)."""
    upper = [w.upper() for w in options]
    if "DIR" in upper and upper.index("DIR") + 1 < len(options):
        return folder / options[upper.index("DIR") + 1]
    return folder
