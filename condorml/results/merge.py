"""Merge the CSVs of sharded inference (``condorml infer --shard I/N``) into one.

The result is what one unsharded run would have written: rows sorted by id, the same columns,
and a sidecar that combines the shards'. It refuses, with a message naming the files, shards
that overlap, a shard that is missing or incomplete, and shards of different models or images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml import __version__
from condorml.errors import CondormlError
from condorml.fileio import check_input_file, check_output_file
from condorml.results.predictions import (
    STATS_COLUMNS,
    prediction_classes,
    prediction_writer,
    probability_matrix,
    read_predictions,
    read_sidecar,
    sidecar_path,
    sort_ids,
    write_sidecar,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_predictions` wrote."""

    output: Path
    rows: int
    parts: int
    verified: bool  # shard coverage checked against sidecars


def merge_predictions(output: Path, parts: list[Path]) -> MergeResult:
    """Merge shard CSVs (and their sidecars) into ``output``.

    Parameters
    ----------
    output : Path
        The merged CSV; its sidecar is written beside it.
    parts : list of Path
        Shard CSVs, in any order. Their sidecars (``PART.csv.json``) let the merge check that
        every shard is present and complete; without them only overlaps can be checked.

    Raises
    ------
    CondormlError
        For overlapping ids, a missing or incomplete shard, shards that do not belong together,
        a part that is not a CSV, or an ``output`` that cannot be written or is one of the parts
        (``condorml merge part0.csv part1.csv`` would overwrite part0.csv).
    """
    if not parts:
        raise CondormlError("merge: give the shard CSVs to merge")
    for part in parts:
        if Path(part).resolve() == Path(output).resolve():
            raise CondormlError(
                f"merge: the output {output} is also a part; the merged CSV comes first "
                "(condorml merge OUTPUT PART...) and must be a new file"
            )
        check_input_file(part, "merge: part")
    check_output_file(output, "merge: output")
    frames = [read_predictions(part) for part in parts]
    columns = list(frames[0].columns)
    for part, frame in zip(parts, frames, strict=True):
        if list(frame.columns) != columns:
            raise CondormlError(
                f"{part}: columns {','.join(frame.columns)} differ from {parts[0]}'s {','.join(columns)}"
            )
    _refuse_overlaps(parts, frames)
    sidecars = [read_sidecar(part) for part in parts]
    verified = all(sidecars)
    if verified:
        _check_shards(parts, frames, sidecars)  # type: ignore[arg-type]
    else:
        lacking = [str(sidecar_path(p)) for p, s in zip(parts, sidecars, strict=True) if s is None]
        log.warning("no sidecar %s: cannot check that no shard is missing", ", ".join(lacking))
    import numpy as np
    import pandas as pd

    classes = prediction_classes(frames[0])
    probs = np.concatenate([probability_matrix(frame) for frame in frames])
    merged = pd.concat(frames, ignore_index=True)
    merged = merged.assign(row=range(len(merged))).set_index("fileid")
    merged = merged.loc[sort_ids(merged.index)]
    with_stats = STATS_COLUMNS[0] in columns
    with prediction_writer(output, with_stats, classes) as write:
        for fileid, row in zip(merged.index, merged.itertuples(), strict=True):
            values = probs[row.row].tolist()
            if with_stats:
                write(fileid, values, row.prob_std, int(row.n_models))
            else:
                write(fileid, values)
    if verified:
        write_sidecar(output, _merged_sidecar(parts, sidecars))  # type: ignore[arg-type]
    else:  # an earlier merge's sidecar would present its provenance as this CSV's
        sidecar_path(output).unlink(missing_ok=True)
    return MergeResult(output, len(merged), len(parts), verified)


def _refuse_overlaps(parts: list[Path], frames: list) -> None:
    owner: dict[str, Path] = {}
    for part, frame in zip(parts, frames, strict=True):
        for fileid in frame["fileid"]:
            if fileid in owner:
                where = (
                    f"{owner[fileid]} and {part}" if owner[fileid] != part else f"{part} (twice)"
                )
                raise CondormlError(
                    f"id {fileid} is in {where}: the shards overlap; merge each shard once"
                )
            owner[fileid] = part


def _check_shards(parts: list[Path], frames: list, sidecars: list[dict[str, Any]]) -> None:
    shards = [s["images"].get("shard") for s in sidecars]
    first = sidecars[0]
    for part, sidecar in zip(parts, sidecars, strict=True):
        if sidecar.get("classes") != first.get("classes"):
            raise CondormlError(f"{part}: predicts other classes than {parts[0]}")
        if sidecar["images"]["fingerprint"] != first["images"]["fingerprint"]:
            raise CondormlError(f"{part}: made from other images than {parts[0]}")
        if [m["sha256"] for m in sidecar["models"]] != [m["sha256"] for m in first["models"]]:
            raise CondormlError(f"{part}: made with other models than {parts[0]}")
    if any(shard is None for shard in shards):
        raise CondormlError(
            f"{parts[shards.index(None)]}: not a shard (made without --shard); nothing to merge it with"
        )
    count = shards[0]["count"]
    if any(shard["count"] != count for shard in shards):
        raise CondormlError("the parts come from different --shard I/N splits (N differs)")
    seen: dict[int, Path] = {}
    for part, shard in zip(parts, shards, strict=True):
        if shard["index"] in seen:
            raise CondormlError(
                f"{seen[shard['index']]} and {part} are both shard {shard['index']}/{count}"
            )
        seen[shard["index"]] = part
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise CondormlError(
            f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: {len(seen)} of {count} given"
        )
    for part, frame, sidecar in zip(parts, frames, sidecars, strict=True):
        images = sidecar["images"]
        expected = images["shard"]["expected"] - len(images["failed"])
        if len(frame) != expected:
            raise CondormlError(
                f"{part}: {len(frame)} rows, but its shard predicted {expected}: the file is incomplete"
            )


def _merged_sidecar(parts: list[Path], sidecars: list[dict[str, Any]]) -> dict[str, Any]:
    first = sidecars[0]
    images = {
        **first["images"],
        "shard": None,
        "processed": sum(s["images"]["processed"] for s in sidecars),
        "predicted": sum(s["images"]["predicted"] for s in sidecars),
        "failed": [failure for s in sidecars for failure in s["images"]["failed"]],
    }
    return {
        **first,
        "condorml_version": __version__,
        "images": images,
        "inference": None,
        "merged_from": [
            {"csv": str(p), "shard": s["images"]["shard"], "inference": s.get("inference")}
            for p, s in sorted(
                zip(parts, sidecars, strict=True), key=lambda ps: ps[1]["images"]["shard"]["index"]
            )
        ],
    }
