"""Handing a description to a schedd (``condorml submit ... --submit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condorml.errors import CondormlError


def submit_job(description: Any, submit_file: Path, schedd: Any = None) -> int:
    """Submit a written job's description to a schedd and return the cluster id.

    The description's relative paths mean "relative to the submit file's folder" (see
    :mod:`condorml.htcondor.submit`), so the copy handed to the schedd gets that folder as
    ``initialdir`` and an absolute ``executable`` (which HTCondor resolves against the
    submitting process's working directory, not ``initialdir``).

    Parameters
    ----------
    description : htcondor2.Submit
        As built by :func:`condorml.htcondor.submit.train_description` and friends.
    submit_file : Path
        Where it was written.
    schedd : htcondor2.Schedd, optional
        The schedd; by default the local one.

    Raises
    ------
    CondormlError
        If no schedd can be reached or it refuses the job.
    """
    import htcondor2

    folder = submit_file.resolve().parent
    copy = htcondor2.Submit(dict(description))
    copy["initialdir"] = str(folder)
    copy["executable"] = str(folder / description["executable"])
    copy.setQArgs(description.getQArgs())
    try:
        schedd = schedd if schedd is not None else htcondor2.Schedd()
        result = schedd.submit(copy)
    except htcondor2.HTCondorException as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CondormlError(
            f"no HTCondor schedd accepted the job ({reason}); on an access point run: cd {folder} && "
            f"condor_submit {submit_file.name}; without a pool, run condorml train/infer directly or condorml demo"
        ) from None
    return int(result.cluster())
