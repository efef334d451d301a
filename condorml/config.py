"""The training configuration and its choices: plain data, no torch.

Kept apart from :mod:`condorml.train` so that code which only *describes* runs (sweep expansion,
submit-file generation, the command line) can name and validate hyperparameters without
importing PyTorch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from condorml.errors import CondormlError

# The choices of each option (the CLI's Literal types and the library's tables; tests keep them equal).
MODEL_NAMES = ("cnn", "resnet18")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("constant", "cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults follow the CHTC example where it has one.

    Attributes
    ----------
    data_dir : Path
        Folder or ``.zip`` with ``train/cat.N.jpg`` and ``train/dog.N.jpg``.
    checkpoint_dir : Path
        Where ``model.pth``, ``model.prev.pth`` and ``metrics.csv`` live.
    epochs, checkpoint_every : int
        Total epochs, and the checkpoint (and exit-85) interval in epochs.
    checkpoint_minutes : float or None
        Also checkpoint at the first batch boundary after this many minutes of this run.
    exit_on_checkpoint : bool
        Return ``"checkpointed"`` (exit 85) after each checkpoint; False keeps training.
    split_seed : int
        Seed of the validation split, shared by the members of an ensemble so that their
        validation scores compare; ``seed`` drives initialisation and data order.
    member : str or None
        The ensemble member id (``m003``) a sweep gives the run; recorded in the checkpoint
        and in the provenance of predictions made with it.
    """

    data_dir: Path
    checkpoint_dir: Path
    epochs: int = 10
    checkpoint_every: int = 5
    checkpoint_minutes: float | None = None
    model: str = "cnn"
    image_size: int = 224
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "constant"
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.1
    precision: str = "auto"
    device: str = "auto"
    workers: int | None = None
    pretrained_weights: Path | None = None
    freeze_backbone: bool = False
    exit_on_checkpoint: bool = True
    force_restart: bool = False
    cache_dir: Path | None = None
    member: str | None = None

    def validate(self) -> None:
        """Raise :class:`CondormlError` naming the first option with an impossible value."""
        positive = {
            "--epochs": self.epochs,
            "--checkpoint-every": self.checkpoint_every,
            "--batch-size": self.batch_size,
            "--image-size": self.image_size,
        }
        for option, value in positive.items():
            if value < 1:
                raise CondormlError(f"{option} {value}: must be 1 or more")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise CondormlError(f"--lr {self.lr}: must be a positive number")
        if self.weight_decay < 0:
            raise CondormlError(f"--weight-decay {self.weight_decay}: must be 0 or more")
        if self.checkpoint_minutes is not None and not self.checkpoint_minutes >= 0:
            raise CondormlError(
                f"--checkpoint-minutes {self.checkpoint_minutes}: must be 0 or more"
            )
        if self.member is not None and not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", self.member
        ):
            raise CondormlError(f"--member {self.member!r}: letters, digits, '_' and '-' only")
        if self.workers is not None and self.workers < 1:
            raise CondormlError(f"--workers {self.workers}: must be 1 or more")
        for option, value, choices in (
            ("--model", self.model, MODEL_NAMES),
            ("--device", self.device, DEVICES),
            ("--precision", self.precision, PRECISIONS),
            ("--optimizer", self.optimizer, OPTIMIZERS),
            ("--scheduler", self.scheduler, SCHEDULERS),
        ):
            if value not in choices:
                raise CondormlError(f"{option} {value}: choose one of {', '.join(choices)}")


# Fields that must agree between a checkpoint and the command line resuming it. The rest
# (epochs, intervals, device, workers, paths) may change from one run to the next.
IDENTITY_FIELDS = (
    "model",
    "image_size",
    "lr",
    "batch_size",
    "optimizer",
    "weight_decay",
    "momentum",
    "scheduler",
    "seed",
    "split_seed",
    "val_fraction",
    "freeze_backbone",
)
