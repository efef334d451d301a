"""The real HTCondor pool that the pool tests drive (``../shared/htcondor/pool``, see its README).

HTCondor refuses jobs owned by root, so when the tests run as root (CI) every command a user
would type runs as the pool's submitting user through ``pool run``; otherwise it runs as the
caller, with the pool's environment. Work folders live under that user's home: DAGMan refuses
a node log under /tmp, where pytest's ``tmp_path`` is.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(os.environ.get("CONDORML_POOL", ROOT.parent / "shared" / "htcondor" / "pool"))
REQUIRED = os.environ.get("CONDORML_REQUIRE_POOL", "") not in ("", "0")  # CI: fail, never skip
CONDORML = str(Path(sys.executable).parent / "condorml")  # the entry point a user would type


class Pool:
    """A running pool: run commands as its submitting user, read its queue and history."""

    def __init__(self, script: Path, env: dict[str, str]) -> None:
        self.script, self.env = script, env
        self.as_root = os.geteuid() == 0

    @classmethod
    def find(cls) -> tuple[Pool | None, str]:
        """The pool if one answers here, else None and why not."""
        if not SCRIPT.exists():
            return None, f"no HTCondor pool here ({SCRIPT} is missing; set CONDORML_POOL)"
        proc = subprocess.run(
            ["bash", "-c", f'. "$({shlex.quote(str(SCRIPT))} env)" && env'],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        if proc.returncode != 0 or "CONDOR_CONFIG" not in env:
            return None, f"no HTCondor pool here ({SCRIPT} env failed)"
        pool = cls(SCRIPT, {k: env[k] for k in ("CONDOR_CONFIG", "PATH")})
        if pool.run("condor_q -totals", Path("/"), timeout=30).returncode != 0:
            return None, f"no HTCondor pool answers here; start one with: {SCRIPT} start"
        return pool, ""

    # --- commands as the submitting user ---------------------------------------------------

    def _argv(self, command: str, cwd: Path) -> tuple[list[str], dict[str, str] | None]:
        line = f"cd {shlex.quote(str(cwd))} && {command}"
        if self.as_root:
            return [str(self.script), "run", line], None
        return ["bash", "-c", line], {**os.environ, **self.env}

    def run(self, command: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a bash command line as the submitting user in ``cwd``; capture its output."""
        argv, env = self._argv(command, cwd)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip

    def popen(self, command: str, cwd: Path) -> subprocess.Popen:
        """Start a command line as the submitting user (stdout and stderr together, as text)."""
        argv, env = self._argv(command, cwd)
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)  # fmt: skip

    def check(self, command: str, cwd: Path, timeout: float = 120) -> str:
        """Run a command line as the submitting user; its stdout, or an assertion error."""
        proc = self.run(command, cwd, timeout)
        assert proc.returncode == 0, (
            f"{command}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout

    # --- folders ---------------------------------------------------------------------------

    def home(self) -> Path:
        """The submitting user's home folder."""
        return Path(self.check("echo $HOME", Path("/")).strip())

    def workdir(self, name: str) -> Path:
        """A fresh folder outside /tmp that the submitting user owns."""
        base = self.home() / "condorml-pool-tests"
        folder = base / f"{name}-{os.getpid()}"
        self.check(
            f"rm -rf {shlex.quote(str(folder))} && mkdir -p {shlex.quote(str(folder))}", Path("/")
        )
        return folder

    def allow(self, *paths: Path) -> None:
        """Let the submitting user read and run ``paths`` (this project, its Python)."""
        if self.as_root:
            subprocess.run([str(self.script), "allow", *map(str, paths)], check=True)

    def own(self, path: Path) -> None:
        """Hand files the test wrote (as root) to the submitting user, as a user's own."""
        if self.as_root:
            user = self.check("id -un", Path("/")).strip()
            subprocess.run(["chown", "-R", f"{user}:", str(path)], check=True)

    # --- the queue -------------------------------------------------------------------------

    def history(self, constraint: str, attributes: list[str], raw: bool = False) -> list[list[str]]:
        """``condor_history -af``: one row per finished job (``raw``: expressions unevaluated)."""
        attrs, flag = " ".join(attributes), "-af:r" if raw else "-af"
        out = self.check(
            f"condor_history -constraint {shlex.quote(constraint)} {flag} {attrs}", Path("/")
        )
        return [line.split() for line in out.splitlines() if line.strip()]

    def submitted_cluster(self, output: str) -> int:
        """The cluster id that ``condorml ... --submit`` / ``condor_submit`` printed."""
        match = re.search(r"(?:cluster|DAGMan job) (\d+)", output)
        assert match, output
        return int(match.group(1))


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.5):
    """Poll ``condition`` until it returns something true; its value, or an assertion error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def python_install_paths() -> list[Path]:
    """What a job needs to read to run this condorml: the project, its virtualenv, its Python."""
    base = Path(os.path.realpath(sys.executable)).parent.parent  # e.g. ~/.pyenv/versions/3.11.7
    return [ROOT, Path(sys.prefix), base]


def copy_tree(source: Path, target: Path) -> None:
    """Copy a folder (a data set, a run folder) as a user moving it would."""
    shutil.copytree(source, target, symlinks=False, dirs_exist_ok=True)
