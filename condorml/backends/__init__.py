"""Where a DAG or a job runs: an HTCondor pool (:mod:`.condor`) or this machine with HTCondor's
semantics (:mod:`.local`), behind one interface (:mod:`.base`), chosen once by
:func:`choose_backend`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from condorml.backends.base import Backend, Handle, Status
from condorml.errors import CondormlError

if TYPE_CHECKING:
    from condorml.backends.local.dagman import RunOptions

BACKENDS = ("local", "condor")

__all__ = ["BACKENDS", "Backend", "Handle", "Status", "choose_backend", "schedd_available"]


def schedd_available() -> bool:
    """Whether a schedd answers here (the default backend is then ``condor``, if
    ``condor_dagman`` is on PATH too)."""
    import htcondor2

    try:
        htcondor2.Schedd()
    except htcondor2.HTCondorException:
        return False
    return True


def choose_backend(
    name: str | None,
    options: RunOptions | None = None,
    on_change: Callable[[Any], None] | None = None,
) -> Backend:
    """The backend named (``local``, ``condor``), or with None the pool where a DAG can be
    submitted to it (a schedd answers and ``condor_dagman`` is on PATH), else this machine; the
    backend's ``why`` then says which and why.

    Parameters
    ----------
    name : str or None
        ``--backend``.
    options, on_change
        The local backend's run options and node-change callback (unused by ``condor``).

    Raises
    ------
    CondormlError
        For a name that is no backend.
    """
    why = ""
    if name is None:
        name, why = _default_backend()
    if name == "condor":
        from condorml.backends.condor import CondorBackend

        return CondorBackend(why=why)
    if name == "local":
        from condorml.backends.local.backend import LocalBackend

        backend = LocalBackend(options, on_change)
        backend.why = why
        return backend
    raise CondormlError(f"--backend {name}: choose one of {', '.join(BACKENDS)}")


def _default_backend() -> tuple[str, str]:
    """``condor`` only where a DAG can really be submitted, else ``local``; and why."""
    if not schedd_available():
        return "local", "no schedd answers here"
    from condorml.backends.condor import dag_submit_problem

    problem = dag_submit_problem()
    if problem is not None:  # a schedd alone is not enough: condor_submit_dag would fail
        return "local", f"a schedd answers, but {problem}"
    return "condor", "a schedd answers and condor_dagman is on PATH"
