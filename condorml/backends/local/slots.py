"""This machine's share for a DAG's node jobs: CPU cores, memory and the job-count throttles.

A node job gets whole cores (its CPU affinity) and its ``request_memory`` out of what is free;
``--max-jobs`` caps the jobs at once and the DAG's ``CATEGORY``/``MAXJOBS`` lines cap each
category. A job that asks for more than the machine has still runs, alone: it is clamped to the
machine, as a pool would never match it but the local backend must not hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Claim:
    """What one running node holds."""

    cores: list[int]
    memory_mb: int
    category: str | None


class Slots:
    """The free cores and memory, and which node holds what.

    Parameters
    ----------
    cpus, memory_mb : int or None
        The share the jobs may use (None or 0: the CPUs and memory available here).
    max_jobs : int or None
        At most this many node jobs at once (None or 0: as resources allow).
    category_limits : dict
        The DAG's ``MAXJOBS``: category -> at most this many of its nodes at once.
    """

    def __init__(self, cpus: int | None, memory_mb: int | None, max_jobs: int | None,
                 category_limits: dict[str, int]) -> None:  # fmt: skip
        available = available_cores()
        self.free_cores = available[: cpus or len(available)]
        self.cpus = len(self.free_cores)
        self.memory_free = memory_mb or available_memory_mb()
        self.max_jobs, self.category_limits = max_jobs, category_limits
        self.claims: dict[str, Claim] = {}  # node -> what it holds

    def __len__(self) -> int:
        """The number of running nodes."""
        return len(self.claims)

    def clamp(self, cpus: int, memory_mb: int) -> tuple[int, int]:
        """A job's request (cores, MiB) clamped to this machine's share: at least one core."""
        return min(max(cpus, 1), self.cpus), min(memory_mb, self.memory_free)

    def fits(self, request: tuple[int, int], category: str | None) -> bool:
        """Whether a node asking for ``request`` (cores, MiB, clamped) may start now."""
        if self.max_jobs and len(self.claims) >= self.max_jobs:
            return False
        if category in self.category_limits:
            running = sum(1 for claim in self.claims.values() if claim.category == category)
            if running >= self.category_limits[category]:
                return False
        cpus, memory = request
        return not (self.claims and (cpus > len(self.free_cores) or memory > self.memory_free))

    def take(self, name: str, request: tuple[int, int], category: str | None) -> list[int]:
        """Give node ``name`` its cores and memory; return the cores (its CPU affinity)."""
        cpus, memory = request
        cores = [self.free_cores.pop(0) for _ in range(min(cpus, len(self.free_cores)))]
        self.memory_free -= memory
        self.claims[name] = Claim(cores, memory, category)
        return cores

    def release(self, name: str) -> None:
        """Return what node ``name`` held."""
        claim = self.claims.pop(name)
        self.free_cores = sorted(self.free_cores + claim.cores)
        self.memory_free += claim.memory_mb

    def cores_for_final(self) -> list[int]:
        """Cores for the FINAL node, which runs when every other node has ended."""
        return self.free_cores[: max(1, self.cpus)]


def available_cores() -> list[int]:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))  # pragma: no cover


def available_memory_mb() -> int:
    """This machine's physical memory in MiB (a very large number where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    except (ValueError, OSError, AttributeError):
        return 1 << 20
