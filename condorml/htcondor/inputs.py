"""A job's inputs as HTCondor transfers them: URLs fetched by plugins, local paths written
relative to the submit file's folder, and where each lands in the sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from condorml.errors import CondormlError
from condorml.htcondor.quoting import (
    list_item,
    safe_value,
)

URL_SCHEMES = ("osdf://", "file://", "pelican://", "https://", "http://", "s3://", "stash://")


def is_url(value: str) -> bool:
    """Whether HTCondor fetches this input through a transfer plugin (``osdf:///...``)."""
    return value.startswith(URL_SCHEMES)


def local_path(value: str, submit_dir: Path, what: str, transferred: bool = True) -> str:
    """A local path written relative to the submit file's folder (absolute paths stay so).

    A ``transferred`` path becomes an item of ``transfer_input_files``: the path as written
    there (not as typed: a run folder may have a space in its name that the relative path
    does not) must be one HTCondor can read as one item.
    """
    safe_value(value, what)
    path = Path(value)
    if path.is_absolute():
        written = path.as_posix()
    else:
        written = Path(
            os.path.relpath(os.path.abspath(path), os.path.abspath(submit_dir))
        ).as_posix()
    if transferred:
        list_item(written, what if written == value else f"{what} {value!r}, written as")
    return written


def check_exists(value: str, what: str) -> None:
    """Refuse a local input that does not exist now (URLs pass): its job would go on hold.

    Raises
    ------
    CondormlError
        Naming the option, the path as given and where it was looked for.
    """
    safe_value(value, what)  # a hostile value is refused as such, before it reaches a message
    if is_url(value) or os.path.exists(value):
        return
    raise CondormlError(
        f"{what} {value}: no such file or folder (looked for {os.path.abspath(value)}); give an existing path, or a URL such as osdf:///path"
    )


def input_entry(value: str, submit_dir: Path, what: str) -> tuple[str, str]:
    """(entry for ``transfer_input_files``, the file's name in the sandbox)."""
    if is_url(value):
        list_item(value, what)
        name = PurePosixPath(value.split("://", 1)[1]).name
    else:
        name = Path(value).name
        value = local_path(value, submit_dir, what)
    if not name:
        raise CondormlError(f"{what} {value!r}: names a folder, not a file")
    return value, name


def preserved_entry(entry: str, name: str, submit_dir: Path) -> tuple[str, str]:
    """(entry, where it lands in the sandbox) with ``preserve_relative_paths``.

    A relative entry lands at its own path, an absolute one or a URL at the top, under its
    name. An entry that climbs (``../x``) would put the job on hold ("illegal sandbox path"),
    so it is written absolute (all three checked with HTCondor 25.0 on a pool).
    """
    if is_url(entry):
        return entry, name
    if PurePosixPath(entry).parts[:1] == ("..",):
        entry = Path(os.path.abspath(submit_dir / entry)).as_posix()
    return entry, name if PurePosixPath(entry).is_absolute() else entry
