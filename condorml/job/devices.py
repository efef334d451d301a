"""Which device, how many CPUs, and which arithmetic precision a run uses.

A batch job must use the CPUs it was *given*, not the machine's: HTCondor sets the CPU affinity
and ``OMP_NUM_THREADS`` to ``request_cpus``, and a container may carry a cgroup CPU quota. Using
``os.cpu_count()`` on a 128-core execute point would start 128 threads on 4 cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import math
import os
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from condorml.config import DEVICES, PRECISIONS
from condorml.errors import CondormlError


def job_cpus() -> int:
    """CPUs this process may use: the smallest of its affinity, ``OMP_NUM_THREADS`` and cgroup quota.

    Example
    -------
    >>> job_cpus() >= 1
    True
    """
    limits = [
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ]
    with contextlib.suppress(ValueError):
        omp = int(os.environ.get("OMP_NUM_THREADS", ""))
        if omp > 0:
            limits.append(omp)
    quota = _cgroup_cpu_quota()
    if quota:
        limits.append(quota)
    return max(1, min(limits))


def _cgroup_cpu_quota() -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` quota (containers), if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def resolve_device(name: str) -> torch.device:
    """Turn ``auto|cpu|cuda|mps`` into a device, preferring CUDA, then MPS, then the CPU.

    Raises
    ------
    CondormlError
        If an explicitly requested accelerator is not available.
    """
    if name not in DEVICES:
        raise CondormlError(f"--device {name}: choose one of {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise CondormlError(
            f"--device {name}: no {name.upper()} device is available here; use --device auto"
        )
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so autocast pays off."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, check, lambda: False)()) for check in checks)


def resolve_precision(requested: str, device: torch.device) -> str:
    """Choose the training arithmetic: ``fp32``, ``bf16`` autocast, or ``fp16`` autocast.

    ``auto`` picks bf16 where the hardware computes it natively (CUDA devices that support it, CPUs
    with AVX512-BF16 or AMX), fp16 with a gradient scaler on older CUDA devices, and fp32
    everywhere else: bf16 keeps fp32's exponent range, so it needs no loss scaling and trains
    these models to the same accuracy at about twice the speed where it is native.

    Raises
    ------
    CondormlError
        For an unknown precision, or fp16 on a device other than CUDA.
    """
    if requested not in PRECISIONS:
        raise CondormlError(f"--precision {requested}: choose one of {', '.join(PRECISIONS)}")
    if requested == "fp16" and device.type != "cuda":
        raise CondormlError("--precision fp16: needs a CUDA device; use bf16 or fp32 here")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def keep_freed_memory_for_reuse() -> bool:
    """Make glibc's malloc reuse freed large blocks instead of returning them to the OS.

    PyTorch's CPU allocator has no cache: every activation, gradient and batch of a training step
    is a fresh allocation of megabytes, which glibc serves with mmap and munmap, so every step
    page-faults its whole working set in again. Raising the mmap and trim thresholds keeps that
    memory in the heap (the effect jemalloc or tcmalloc give, without a dependency); on two CPU
    cores it speeds a training step of the CHTC CNN up by about a third. It is process-wide, so
    the command line, which owns the process, calls it; the library does not.

    Returns
    -------
    bool
        Whether the setting was applied (only on Linux with glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    one_gib = 1 << 30
    return bool(mallopt(m_mmap_threshold, one_gib)) and bool(mallopt(m_trim_threshold, one_gib))


_DYNAMO = "torch._dynamo"


def defer_dynamo_import() -> bool:
    """Put off importing ``torch._dynamo`` until something compiles: a second of every start.

    PyTorch's optimizers import ``torch._dynamo``, the compiler's front end (with sympy: about a
    second on two cores, as long as ``import torch`` itself), the first time they are built,
    stepped or saved, only to wrap their methods in ``torch._dynamo.disable`` and to call
    ``graph_break()``: both do nothing unless a compilation is running, and none can run before
    the real module is imported. A stand-in module gives those two their meaning until then;
    anything else asked of it (another attribute, a submodule, ``torch.compile``) imports the
    real module and hands over to it, and from then on ``disable`` and ``graph_break`` delegate
    too. The arithmetic is untouched. It is process-wide, like
    :func:`keep_freed_memory_for_reuse`: the command line, which owns the process, calls it;
    the library does not.

    Returns
    -------
    bool
        Whether the stand-in was put in place (not where ``torch._dynamo`` is already imported).
    """
    if _DYNAMO in sys.modules:
        return False
    sys.meta_path.insert(0, _DynamoHandover())
    sys.modules[_DYNAMO] = _DeferredDynamo(_DYNAMO)
    return True


class _DeferredDynamo(types.ModuleType):
    """``torch._dynamo`` until its first real use (see :func:`defer_dynamo_import`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package: its submodules go through _DynamoHandover

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # probes of every module (__file__)
            raise AttributeError(name)
        return getattr(_real_dynamo(), name)

    @staticmethod
    def disable(fn: Callable[..., Any] | None = None, recursive: bool = True,
                **options: Any) -> Any:  # fmt: skip
        """``torch._dynamo.disable``: nothing to disable while no compilation can run."""
        if fn is None:  # used as @disable(recursive=...)
            return functools.partial(_DeferredDynamo.disable, recursive=recursive, **options)
        function = fn

        def run(*args: Any, **kwargs: Any) -> Any:
            module = sys.modules.get(_DYNAMO)
            if module is None or isinstance(module, _DeferredDynamo):
                return function(*args, **kwargs)
            return module.disable(function, recursive, **options)(*args, **kwargs)

        return run

    @staticmethod
    def graph_break(msg: str = "") -> None:
        """``torch._dynamo.graph_break``: nothing to break while no compilation can run."""
        module = sys.modules.get(_DYNAMO)
        if module is not None and not isinstance(module, _DeferredDynamo):
            module.graph_break(msg)


def _real_dynamo() -> types.ModuleType:
    """The real ``torch._dynamo``, imported in place of the stand-in if it is not yet."""
    module = sys.modules.get(_DYNAMO)
    if isinstance(module, _DeferredDynamo):
        sys.modules.pop(_DYNAMO, None)  # another thread may have taken it out already
        for finder in [f for f in sys.meta_path if isinstance(f, _DynamoHandover)]:
            sys.meta_path.remove(finder)
    return importlib.import_module(_DYNAMO)  # waits for another thread's import of it


class _DynamoHandover(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A submodule of the stand-in is one of the real package: import that first.

    The real package's ``__init__`` may import the very submodule asked for; it is then handed
    back as it is (``create_module``) rather than executed a second time.
    """

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:  # fmt: skip
        if not fullname.startswith(f"{_DYNAMO}.") or path:  # path: the real package's
            return None
        package = _real_dynamo()
        if fullname in sys.modules:
            return importlib.util.spec_from_loader(fullname, self)
        return importlib.machinery.PathFinder.find_spec(fullname, package.__path__, target)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return sys.modules[spec.name]

    def exec_module(self, module: types.ModuleType) -> None:
        """Already executed by the real package's import."""
