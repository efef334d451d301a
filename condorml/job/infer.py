"""Batch inference: one model or an ensemble, a folder or zip of images, one ``dog_probs.csv``.

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
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from condorml import __version__
from condorml.config import INFER_BATCH_SIZE
from condorml.errors import CondormlError, DataError
from condorml.job.data import ImageFile, ImageSource, fingerprint
from condorml.job.devices import autocast, job_cpus, resolve_device, resolve_precision
from condorml.job.files import PREDICTIONS_FILE
from condorml.job.images import (
    DECODE_ERRORS,
    decode_resized,
    describe_decode_error,
    warm_up_decoder,
)
from condorml.job.modelfile import LoadedModel, load_member
from condorml.job.models import InputNormalizer, model_spec
from condorml.progress import NullProgress, Progress
from condorml.results.predictions import prediction_writer, sidecar_path, sort_ids, write_sidecar

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` (0-based, as HTCondor's ``$(ProcId)``) of ``count`` equal slices."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``I/N``.

        Raises
        ------
        CondormlError
            Unless ``0 <= I < N``.

        Example
        -------
        >>> Shard.parse("0/4")
        Shard(index=0, count=4)
        """
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise CondormlError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
        if not 0 <= index < count:
            raise CondormlError(
                f"--shard {text}: need 0 <= I < N (I counts from 0, like $(ProcId))"
            )
        return cls(index, count)

    def bounds(self, n: int) -> tuple[int, int]:
        """Start and stop of this shard's contiguous slice of ``n`` items; slices tile them."""
        return self.index * n // self.count, (self.index + 1) * n // self.count

    def select(self, items: list) -> list:
        """This shard's contiguous slice of ``items`` (in their order); slices tile the list."""
        return items[slice(*self.bounds(len(items)))]


@dataclass(frozen=True)
class InferConfig:
    """Options of one inference run (see ``condorml infer --help``)."""

    models: tuple[Path, ...]
    images: Path
    output: Path = Path(PREDICTIONS_FILE)
    batch_size: int = INFER_BATCH_SIZE
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    shard: Shard | None = None
    model_arch: str | None = None
    image_size: int | None = None
    with_stats: bool = False


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


def list_images(source: ImageSource) -> tuple[list[ImageFile], int]:
    """The image files of a source, sorted by id, and the number of other files ignored.

    Raises
    ------
    DataError
        If two files share an id (``a/1.jpg`` and ``b/1.png``) or there is no image.
    """
    images, ignored = [], 0
    for f in source.files():
        if PurePosixPath(f.name).suffix.lower() in IMAGE_SUFFIXES:
            images.append(f)
        else:
            ignored += 1
    by_id: dict[str, ImageFile] = {}
    for f in images:
        if f.stem in by_id:
            raise DataError(
                f"{source.path}: {by_id[f.stem].name} and {f.name} both have the id {f.stem}"
            )
        by_id[f.stem] = f
    if not by_id:
        raise DataError(
            f"{source.path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return [by_id[i] for i in sort_ids(by_id)], ignored


def infer(config: InferConfig, progress: Progress | None = None) -> InferResult:
    """Write ``config.output`` (``fileid,prob``) and its provenance sidecar.

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
        For unusable models or options, or if no image of the (shard's) set can be decoded.

    Example
    -------
    >>> infer(InferConfig((Path("ckpt/model.pth"),), Path("test.zip")))  # doctest: +SKIP
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    device, precision = _check_options(config)
    cpus = job_cpus()
    torch.set_num_threads(cpus)
    source = ImageSource(config.images)
    try:
        all_images, ignored = list_images(source)
        first, stop = config.shard.bounds(len(all_images)) if config.shard else (0, len(all_images))
        images = all_images[first:stop]
        members = [
            load_member(p, device, config.model_arch, config.image_size) for p in config.models
        ]
        shard = config.shard
        where = f" (shard {shard.index}/{shard.count} of {len(all_images)})" if shard else ""
        log.info("%d image(s)%s, %d model(s), %s on %s", len(images), where, len(members),
                 precision, device)  # fmt: skip
        run = _Predictor(members, device, precision, config.workers or cpus)
        with run, prediction_writer(config.output, config.with_stats) as write:
            loop_started = time.monotonic()
            progress.start("inferring", len(images))
            _predict_shard(
                run, source, all_images, (first, stop), config.batch_size, write, progress
            )
            loop_seconds = time.monotonic() - loop_started
            progress.finish(f"{len(images) - len(run.failed)} predicted, {len(run.failed)} failed")
            if images and len(run.failed) == len(images):
                raise DataError(
                    f"{config.images}: none of the {len(images)} images could be decoded ({run.failed[0]['reason']})"
                )
    finally:
        source.close()
    seconds = time.monotonic() - started
    result = InferResult(
        config.output,
        sidecar_path(config.output),
        len(images),
        len(images) - len(run.failed),
        run.failed,
        seconds,
        loop_seconds,
    )
    write_sidecar(
        config.output,
        _provenance(config, source, all_images, images, ignored, members, run, result),
    )
    _warn_about_gaps(config, result, len(all_images))
    return result


def _warn_about_gaps(config: InferConfig, result: InferResult, in_source: int) -> None:
    """Log what is missing from the output: undecodable images, or a shard without images."""
    if result.failed:
        log.warning(
            "%d image(s) could not be decoded and are not in %s; see %s",
            len(result.failed),
            config.output,
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


def _predict_shard(run: _Predictor, source: ImageSource, all_images: list, bounds: tuple[int, int],
                   batch_size: int, write: Callable[..., None], progress: Progress) -> None:  # fmt: skip
    """Predict the images ``all_images[first:stop]`` and write a row for each.

    The batches are those of the unsharded run, whole: a model's float32 output for an image
    depends on the size of its batch, and merged shards must be the unsharded CSV to the bit.
    A shard computes (at most) two batches it shares with its neighbours and keeps its own rows.
    """
    first, stop = bounds
    for start in range(first - first % batch_size, stop, batch_size):
        batch = all_images[start : start + batch_size]
        own = range(max(first - start, 0), min(stop - start, len(batch)))
        for fileid, probs in run.predict(source, batch, own):
            prob = sum(probs) / len(probs)
            spread = float(np.std(probs)) if len(probs) > 1 else 0.0
            write(fileid, prob, spread, len(probs))
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
            InputNormalizer(model_spec(m.arch), m.image_size, device, dtype) for m in members
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
        self, source: ImageSource, batch: list[ImageFile], own: range
    ) -> list[tuple[str, list[float]]]:
        """(id, per-member probabilities of dog) for the decodable images ``batch[own]``."""
        probs: list[list[float]] = [[] for _ in self.members]
        ok: list[int] = []
        for size in self.sizes:
            pixels, ok = self._decode(source, batch, size, own)
            for m, member in enumerate(self.members):
                if member.image_size == size:
                    probs[m] = self._forward(member, self.normalizers[m], pixels)
        # A file decodes at every size or at none, so `ok` is the same for every size.
        return [(batch[i].stem, [p[k] for p in probs]) for k, i in enumerate(ok) if i in own]

    def _decode(
        self, source: ImageSource, batch: list[ImageFile], size: int, own: range
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
                {"file": source.display(batch[i].name), "fileid": batch[i].stem, "reason": reason}
                for i, reason in enumerate(reasons)
                if reason is not None and i in own
            ]
        return torch.from_numpy(stage[ok] if len(ok) < len(batch) else stage), ok

    def _forward(
        self, member: LoadedModel, normalize: InputNormalizer, pixels: torch.Tensor
    ) -> list[float]:
        if len(pixels) == 0:
            return []
        with torch.inference_mode(), autocast(self.device, self.precision):
            logits = member.model(normalize(pixels))
        return torch.softmax(logits.float(), dim=1)[:, 1].tolist()


def _provenance(
    config: InferConfig,
    source: ImageSource,
    all_images: list[ImageFile],
    images: list[ImageFile],
    ignored: int,
    members: list[LoadedModel],
    run: _Predictor,
    result: InferResult,
) -> dict[str, Any]:
    shard = None
    if config.shard:
        shard = {
            "index": config.shard.index,
            "count": config.shard.count,
            "expected": len(images),
            "first_id": images[0].stem if images else None,
            "last_id": images[-1].stem if images else None,
        }
    return {
        "condorml_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "columns": ["fileid", "prob", *(["prob_std", "n_models"] if config.with_stats else [])],
        "prob": "probability of dog: softmax of the 2 logits, mean over the models",
        "images": {
            "source": str(config.images),
            "is_zip": source.is_zip,
            "fingerprint": fingerprint(all_images),
            "in_source": len(all_images),
            "ignored_non_images": ignored,
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
