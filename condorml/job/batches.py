"""The training data's order and batches: which images an epoch visits, in which order, and the
normalised tensors of a batch.

The order of an epoch is a pure function of the seed and the epoch number, so a resumed run
visits the same images in the same order as one that never stopped.
"""

from __future__ import annotations

import numpy as np
import torch

from condorml.job.imagecache import DecodedImages
from condorml.job.models import InputNormalizer


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The visiting order of the training positions in one epoch; a pure function of its inputs."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_positions(order: torch.Tensor, batch: int, batch_size: int) -> torch.Tensor:
    """The positions (into ``order``'s index space) of batch number ``batch`` of an epoch."""
    return order[batch * batch_size : (batch + 1) * batch_size]


class Batches:
    """Batches of the decoded images, normalised by an :class:`InputNormalizer`.

    Rows are read into one reused ``uint8`` staging array, so a batch is valid until the next
    call of :meth:`get`.
    """

    def __init__(
        self,
        images: DecodedImages,
        normalization: tuple[tuple[float, ...], tuple[float, ...]],
        n_classes: int,
        device: torch.device,
        precision: str,
    ) -> None:
        self.images, self.device, self.n_classes = images, device, n_classes
        size = images.pixels.shape[1]
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.normalize = InputNormalizer(normalization, size, device, dtype)
        self.labels = torch.from_numpy(images.labels)
        self._stage = np.empty((0, size, size, 3), dtype=np.uint8)

    def get(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised images (N, 3, S, S, channels-last) and labels at ``positions``."""
        # Reading rows in file order is faster; the loss does not care about the order.
        positions = positions.sort().values
        if len(self._stage) < len(positions):
            self._stage = np.empty((len(positions), *self._stage.shape[1:]), dtype=np.uint8)
        stage = self._stage[: len(positions)]
        self.images.gather(self.images.rows[positions.numpy()], stage)
        x = self.normalize(torch.from_numpy(stage))
        return x, self.labels[positions].to(self.device, non_blocking=True)
