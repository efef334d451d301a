"""Batch inference: one model or an ensemble, a folder or zip of images, one predictions CSV
(``dog_probs.csv`` for cat/dog, ``probs.csv`` for any other classes: :mod:`condorml.results.predictions`).

Images are processed in id order, a batch at a time: the batch is decoded and resized once, by
one thread per CPU, then every model of the ensemble runs on it, and its rows are written at
once. Memory stays flat however many images there are, and the CSV is published by a rename
when complete. Decoding and the models take turns on the same cores rather than competing for
them, so throughput approaches 1 / (1/decode rate + 1/model rate).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condorml import __version__
from condorml.config import InferConfig, Shard
from condorml.errors import CondormlError, DataError
from condorml.job.data import ImageFile
from condorml.job.devices import autocast, job_cpus, resolve_device, resolve_precision
from condorml.job.files import shard_part_name
from condorml.job.imagecache import default_cache_dir
from condorml.job.images import (
    DECODE_ERRORS,
    decode_resized,
    describe_decode_error,
    warm_up_decoder,
)
from condorml.job.layouts import ImageSet, prediction_set
from condorml.job.modelfile import LoadedModel, load_member
from condorml.job.models import InputNormalizer, logits_of
from condorml.progress import NullProgress, Progress
from condorml.results.predictions import (
    is_cat_dog,
    prediction_columns,
    prediction_writer,
    predictions_name,
    sidecar_path,
    write_sidecar,
)

log = logging.getLogger(__name__)

__all__ = ["InferConfig", "InferResult", "Shard", "infer"]


@dataclass
class InferResult:
    """What :func:`infer` wrote and how fast."""

    output: Path
    sidecar: Path
    images: int
    predicted: int
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0  # the whole call, model loading included
    loop_seconds: float = 0.0  # decoding, models and writing only

    @property
    def images_per_s(self) -> float:
        """Throughput of the inference loop (decode, models, write)."""
        return self.images / self.loop_seconds if self.loop_seconds > 0 else math.nan


def output_path(output: str | Path | None, classes: tuple[str, ...], shard: Shard | None) -> Path:
    """Where the predictions go: ``output`` as given, or, for None or a folder (an existing one,
    or a name ending in ``/``), the classes' file name there (a shard's part name with a shard).

    Example
    -------
    >>> output_path("out/", ("cat", "dog"), Shard(2, 4)).as_posix()
    'out/dog_probs.part2.csv'
    """
    text = "" if output is None else str(output)
    if text and not text.endswith("/") and not Path(text).is_dir():
        return Path(text)
    name = predictions_name(classes)
    if shard is not None:
        name = shard_part_name(name, str(shard.index))
    return Path(text or ".") / name


def infer(config: InferConfig, progress: Progress | None = None) -> InferResult:
    """Write the predictions CSV and its provenance sidecar.

    Parameters
    ----------
    config : InferConfig
        Models, images, output and options.
    progress : Progress, optional
        Receives per-batch progress.

    Returns
    -------
    InferResult
        Counts, failures and timing.

    Raises
    ------
    CondormlError
        For unusable models or options, models of different classes, a labelled test set with
        classes the models do not know, or if no image of the (shard's) set can be decoded.

    Example
    -------
    >>> infer(InferConfig(("ckpt/model.pth",), "test.zip"))  # doctest: +SKIP
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    device, precision = _check_options(config)
    cpus = job_cpus()
    torch.set_num_threads(cpus)
    members = [
        load_member(
            Path(p), device, config.model_arch, config.image_size, tuple(config.model_files)
        )
        for p in config.models
    ]
    classes = _common_classes(members)
    images = prediction_set(Path(config.images), cache_dir=default_cache_dir())
    source = images.source
    try:
        _check_test_classes(images, classes, config.images)
        all_images = images.files
        first, stop = config.shard.bounds(len(all_images)) if config.shard else (0, len(all_images))
        output = output_path(config.output, classes, config.shard)
        shard = config.shard
        where = f" (shard {shard.index}/{shard.count} of {len(all_images)})" if shard else ""
        log.info("%d image(s)%s, %d model(s) of %d classes, %s on %s", stop - first, where,
                 len(members), len(classes), precision, device)  # fmt: skip
        run = _Predictor(members, device, precision, config.workers or cpus)
        with run, prediction_writer(output, config.with_stats, classes) as write:
            loop_started = time.monotonic()
            progress.start("inferring", stop - first)
            _predict_shard(run, images, (first, stop), config.batch_size, write, progress)
            loop_seconds = time.monotonic() - loop_started
            progress.finish(f"{stop - first - len(run.failed)} predicted, {len(run.failed)} failed")
            if stop > first and len(run.failed) == stop - first:
                raise DataError(
                    f"{config.images}: none of the {stop - first} images could be decoded ({run.failed[0]['reason']})"
                )
    finally:
        source.close()
    seconds = time.monotonic() - started
    result = InferResult(
        output,
        sidecar_path(output),
        stop - first,
        stop - first - len(run.failed),
        run.failed,
        seconds,
        loop_seconds,
    )
    write_sidecar(output, _provenance(config, images, (first, stop), members, classes, run, result))
    _warn_about_gaps(config, result, len(all_images))
    return result


def _common_classes(members: list[LoadedModel]) -> tuple[str, ...]:
    """The class list every model of the ensemble shares."""
    classes = members[0].classes
    for member in members[1:]:
        if member.classes != classes:
            raise CondormlError(
                f"--model {member.path}: predicts the classes {', '.join(member.classes)}, but "
                f"{members[0].path} predicts {', '.join(classes)}; an ensemble's models need the same classes"
            )
    return classes


def _check_test_classes(images: ImageSet, classes: tuple[str, ...], where: object) -> None:
    """A labelled test set's classes must be classes the models know (a subset is fine).

    Subfolders none of whose names is a class are no labels but the user's own order
    (``2024-05/``, ``camera2/``): the set is predicted unlabelled, its ids paths where names
    repeat.
    """
    if images.labels is None:
        return
    if images.layout == "folders" and not set(images.classes or ()) & set(classes):
        log.info("%s: its folders are not classes of the models (%s, ...): predicting it as unlabelled images",
                 where, ", ".join((images.classes or ())[:3]))  # fmt: skip
        images.labels, images.classes, images.layout = None, None, "nested"
        return
    if images.indexed:
        top = max(images.labels)
        if top >= len(classes):
            raise DataError(
                f"{where}: labels up to {top}, but the models know {len(classes)} classes (0 to {len(classes) - 1})"
            )
        return
    unknown = sorted(set(images.classes or ()) - set(classes))
    if unknown:
        raise DataError(
            f"{where}: the test set has classes the models were not trained on ({', '.join(unknown[:5])}); "
            f"the models know {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}"
        )


def _warn_about_gaps(config: InferConfig, result: InferResult, in_source: int) -> None:
    """Log what is missing from the output: undecodable images, or a shard without images."""
    if result.failed:
        log.warning(
            "%d image(s) could not be decoded and are not in %s; see %s",
            len(result.failed),
            result.output,
            result.sidecar,
        )
    if not result.images and config.shard:
        log.warning(
            "shard %d/%d has no images (the source holds %d)",
            config.shard.index,
            config.shard.count,
            in_source,
        )


def _check_options(config: InferConfig) -> tuple[torch.device, str]:
    """The device and precision to use; a CondormlError for options that cannot work."""
    if not config.models:
        raise CondormlError("--model: give at least one model")
    if config.batch_size < 1:
        raise CondormlError(f"--batch-size {config.batch_size}: must be 1 or more")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if precision == "fp16":
        raise CondormlError("--precision fp16: use bf16 or fp32 for inference")
    return device, precision


def _predict_shard(run: _Predictor, images: ImageSet, bounds: tuple[int, int], batch_size: int,
                   write: Callable[..., None], progress: Progress) -> None:  # fmt: skip
    """Predict the images ``images.files[first:stop]`` and write a row for each.

    The batches are those of the unsharded run, whole: a model's float32 output for an image
    depends on the size of its batch, and merged shards must be the unsharded CSV to the bit.
    A shard computes (at most) two batches it shares with its neighbours and keeps its own rows.
    The ensemble's probability of a class is the mean over the models; with several models,
    ``prob_std`` is the spread of the probability of dog (cat/dog) or of the predicted class.
    """
    first, stop = bounds
    all_images, cat_dog = images.files, is_cat_dog(run.members[0].classes)
    for start in range(first - first % batch_size, stop, batch_size):
        batch = all_images[start : start + batch_size]
        ids = images.ids[start : start + batch_size]
        own = range(max(first - start, 0), min(stop - start, len(batch)))
        kept, probs = run.predict(images.source, batch, ids, own)
        n = len(probs)
        # The mean as Python's sum(...) / n computes it, model after model (the same float64
        # operations in the same order: dog_probs.csv stays what it always was), but per batch.
        mean = probs[0].astype(np.float64)
        for member in probs[1:]:
            mean += member
        mean /= n
        shown = np.ones(len(kept), dtype=int) if cat_dog else mean.argmax(axis=1)  # first of ties
        for k, fileid in enumerate(kept):
            spread = float(np.std(probs[:, k, shown[k]].astype(np.float64))) if n > 1 else 0.0
            write(fileid, mean[k].tolist(), spread, n)
        progress.advance(len(own))


class _Predictor:
    """The decoding threads, the members and their input buffers, for one inference run."""

    def __init__(
        self, members: list[LoadedModel], device: torch.device, precision: str, workers: int
    ) -> None:
        self.members, self.device, self.precision, self.workers = (
            members,
            device,
            precision,
            workers,
        )
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.sizes = sorted({m.image_size for m in members})  # decode once per distinct size
        self.normalizers = [
            InputNormalizer(m.normalization, m.image_size, device, dtype) for m in members
        ]
        self.failed: list[dict[str, str]] = []
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self._stages: dict[int, np.ndarray] = {}
        warm_up_decoder()  # its imports take a second; not inside the timed loop

    def __enter__(self) -> _Predictor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.pool.shutdown()

    def predict(
        self, source: Any, batch: list[ImageFile], ids: list[str], own: range
    ) -> tuple[list[str], np.ndarray]:
        """The ids of the decodable images ``batch[own]`` and each member's class probabilities
        for them: (members, images, classes), float32."""
        probs: list[np.ndarray] = [np.empty((0, 0), dtype=np.float32) for _ in self.members]
        ok: list[int] = []
        for size in self.sizes:
            pixels, ok = self._decode(source, batch, ids, size, own)
            for m, member in enumerate(self.members):
                if member.image_size == size:
                    probs[m] = self._forward(member, self.normalizers[m], pixels)
        # A file decodes at every size or at none, so `ok` is the same for every size.
        mine = [k for k, i in enumerate(ok) if i in own]
        return [ids[ok[k]] for k in mine], np.stack([p[mine] for p in probs])

    def _decode(
        self, source: Any, batch: list[ImageFile], ids: list[str], size: int, own: range
    ) -> tuple[torch.Tensor, list[int]]:
        stage = self._stages.get(size)
        if stage is None or len(stage) < len(batch):  # reused: a fresh array page-faults again
            stage = self._stages[size] = np.empty((len(batch), size, size, 3), dtype=np.uint8)
        stage = stage[: len(batch)]

        def decode(i: int) -> str | None:
            try:
                stage[i] = decode_resized(source.read(batch[i].name), size)
            except DECODE_ERRORS as err:
                return describe_decode_error(err)
            return None

        reasons = list(self.pool.map(decode, range(len(batch))))
        ok = [i for i, reason in enumerate(reasons) if reason is None]
        if size == self.sizes[0]:  # report each failure once, whatever the number of sizes
            self.failed += [
                {"file": source.display(batch[i].name), "fileid": ids[i], "reason": reason}
                for i, reason in enumerate(reasons)
                if reason is not None and i in own
            ]
        return torch.from_numpy(stage[ok] if len(ok) < len(batch) else stage), ok

    def _forward(
        self, member: LoadedModel, normalize: InputNormalizer, pixels: torch.Tensor
    ) -> np.ndarray:
        n_classes = len(member.classes)
        if len(pixels) == 0:
            return np.empty((0, n_classes), dtype=np.float32)
        with torch.inference_mode(), autocast(self.device, self.precision):
            logits = logits_of(member.model(normalize(pixels)))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def _provenance(
    config: InferConfig,
    images: ImageSet,
    bounds: tuple[int, int],
    members: list[LoadedModel],
    classes: tuple[str, ...],
    run: _Predictor,
    result: InferResult,
) -> dict[str, Any]:
    first, stop = bounds
    mine = images.files[first:stop]
    shard = None
    if config.shard:
        shard = {
            "index": config.shard.index,
            "count": config.shard.count,
            "expected": len(mine),
            "first_id": images.ids[first] if mine else None,
            "last_id": images.ids[stop - 1] if mine else None,
        }
    if is_cat_dog(classes):
        meaning = {"prob": "probability of dog: softmax of the 2 logits, mean over the models"}
    else:
        meaning = {"probs": f"probability of each of the {len(classes)} classes: softmax of the logits, mean over the models; predicted: the class of the highest mean"}  # fmt: skip
    return {
        "condorml_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "columns": prediction_columns(classes, config.with_stats),
        **meaning,
        "classes": list(classes),
        "images": {
            "source": str(config.images),
            "is_zip": getattr(images.source, "is_zip", False),
            "layout": images.layout,
            "labelled": images.labelled,
            "fingerprint": images.fingerprint() if images.labelled else _flat_fingerprint(images),
            "in_source": len(images.files),
            "ignored_non_images": images.ignored,
            "shard": shard,
            "processed": result.images,
            "predicted": result.predicted,
            "failed": run.failed,
        },
        "models": [m.describe() for m in members],
        "inference": {
            "device": str(run.device),
            "precision": run.precision,
            "batch_size": config.batch_size,
            "workers": run.workers,
            "seconds": round(result.seconds, 3),
            "loop_seconds": round(result.loop_seconds, 3),
            "images_per_s": round(result.images_per_s, 1),
        },
    }


def _flat_fingerprint(images: ImageSet) -> str:
    """A short hash of an unlabelled test set's file names (without folders) and sizes: a folder
    and a zip of the same images agree."""
    import hashlib
    from pathlib import PurePosixPath

    digest = hashlib.sha256()
    for f in sorted(images.files, key=lambda f: PurePosixPath(f.name).name):
        digest.update(f"{PurePosixPath(f.name).name}\0{f.size}\n".encode())
    return digest.hexdigest()[:16]
