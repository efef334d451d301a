"""The training configuration and its choices: plain data, no torch.

Kept apart from :mod:`condorml.job.train` so that code which only *describes* runs (sweep expansion,
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
INFER_PRECISIONS = ("auto", "fp32", "bf16")  # inference has no fp16 loss scaling to need
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("constant", "cosine", "step")
# The smallest image each model takes: the CNN's three conv + pool stages need 37 pixels to keep
# one feature (condorml.job.models.cnn_feature_side; a test keeps them equal), ResNet-18 needs 32.
MIN_IMAGE_SIZE = {"cnn": 37, "resnet18": 32}
PRETRAINED_MODELS = ("resnet18",)  # the models that take --pretrained-weights
MEMBER_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
SEED_LIMIT = 2**32  # seeds are mixed with epoch numbers into a 64-bit torch seed

_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def option_flag(name: str) -> str:
    """The command-line option of a TrainConfig field: ``checkpoint_every`` -> ``--checkpoint-every``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class OptionRule:
    """What values one training option takes: its type, and a range or a list of choices.

    Bounds are inclusive (``low``, ``high``) or exclusive (``above``, ``below``); ``optional``
    allows None (the option left out).
    """

    kind: type
    low: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    optional: bool = False

    def requirement(self) -> str:
        """The range in words, e.g. ``1 or more``, ``at least 0 and below 1``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.pattern is not None:
            return "letters, digits, '_' and '-' only"
        low = f"at least {_bound(self.low)}" if self.low is not None else None
        if self.above == 0 and self.below is None:
            return "a positive number"
        if self.above is not None:
            low = f"above {_bound(self.above)}"
        if self.below is not None:
            return f"{low} and below {_bound(self.below)}" if low else f"below {_bound(self.below)}"
        if self.low is not None:
            return f"{_bound(self.low)} or more"
        return _KINDS[self.kind]

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` (``must be 1 or more``), or None if it is valid."""
        if value is None and self.optional:
            return None
        if not _is_kind(value, self.kind):
            kind, requirement = _KINDS[self.kind], self.requirement()
            text = f"must be {requirement if requirement.startswith(('a ', 'one of')) else f'{kind}, {requirement}'}"
            if isinstance(value, str) and _is_kind(_number(value), self.kind):
                text += " (written without quotes)"
            return text
        if self.choices:
            return None if value in self.choices else f"choose one of {', '.join(self.choices)}"
        if self.pattern is not None:
            return None if re.fullmatch(self.pattern, value) else f"must be {self.requirement()}"  # type: ignore[arg-type]
        if self.kind in (int, float):
            number = float(value)  # type: ignore[arg-type]
            if (
                not math.isfinite(number)
                or (self.low is not None and number < self.low)
                or (self.above is not None and number <= self.above)
                or (self.below is not None and number >= self.below)
            ):
                return f"must be {self.requirement()}"
        return None


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _is_kind(value: object, kind: type) -> bool:
    if isinstance(value, bool):  # True is an int to Python, not to a user
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _number(text: str) -> object:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


# The one table of valid training options: TrainConfig.validate (condorml train, condorml submit
# train) and sweep specifications (condorml.sweep.spec) check values against it.
OPTION_RULES: dict[str, OptionRule] = {
    "epochs": OptionRule(int, low=1),
    "checkpoint_every": OptionRule(int, low=1),
    "checkpoint_minutes": OptionRule(float, low=0, optional=True),
    "model": OptionRule(str, choices=MODEL_NAMES),
    "image_size": OptionRule(int, low=1),
    "lr": OptionRule(float, above=0),
    "batch_size": OptionRule(int, low=1),
    "optimizer": OptionRule(str, choices=OPTIMIZERS),
    "weight_decay": OptionRule(float, low=0),
    "momentum": OptionRule(float, low=0, below=1),
    "scheduler": OptionRule(str, choices=SCHEDULERS),
    "seed": OptionRule(int, low=0, below=SEED_LIMIT),
    "split_seed": OptionRule(int, low=0, below=SEED_LIMIT),
    "val_fraction": OptionRule(float, low=0, below=1),
    "precision": OptionRule(str, choices=PRECISIONS),
    "device": OptionRule(str, choices=DEVICES),
    "workers": OptionRule(int, low=1, optional=True),
    "freeze_backbone": OptionRule(bool),
    "member": OptionRule(str, pattern=MEMBER_ID, optional=True),
}


class OptionError(CondormlError):
    """A training option with an impossible value: ``--epochs 0: must be 1 or more``.

    ``name`` is the TrainConfig field, so that a sweep specification can name its own key.
    """

    def __init__(self, name: str, value: object, problem: str) -> None:
        self.name, self.value, self.problem = name, value, problem
        rule = OPTION_RULES.get(name)
        if isinstance(value, bool) and rule is not None and rule.kind is bool:
            shown = ""  # a flag: --freeze-backbone
        elif isinstance(value, str) and (rule is None or rule.kind is not str or rule.pattern):
            shown = f" {value!r}"  # text where a number belongs, or with odd characters
        else:
            shown = f" {value}"
        super().__init__(f"{option_flag(name)}{shown}: {problem}")


def combination_problems(config: TrainConfig) -> list[tuple[str, str]]:
    """(field, what is wrong) for options that are valid alone but not together.

    Checked before any image is decoded, so that a job fails at once (or a sweep is refused
    when it is written) rather than after a whole epoch of work.
    """
    problems = []
    minimum = MIN_IMAGE_SIZE.get(config.model)
    if minimum is not None and config.image_size < minimum:
        problems.append(
            ("image_size", f"too small for the {config.model} model; use {minimum} or more")
        )
    if config.pretrained_weights is not None and config.model not in PRETRAINED_MODELS:
        problems.append(
            (
                "pretrained_weights",
                f"only {', '.join(PRETRAINED_MODELS)} takes pretrained weights, not {config.model}; choose that model or leave the weights out",
            )
        )
    if config.freeze_backbone and config.pretrained_weights is None:
        problems.append(
            (
                "freeze_backbone",
                "needs pretrained weights: a random backbone is no feature extractor",
            )
        )
    return problems


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults follow the CHTC example where it has one.

    Attributes
    ----------
    data_dir : Path
        Folder or ``.zip`` with ``train/cat.N.jpg`` and ``train/dog.N.jpg``.
    checkpoint_dir : Path
        Where ``model.pth``, ``metrics.csv`` and the previous generation live (see
        :func:`condorml.job.checkpoint.previous_path`).
    epochs, checkpoint_every : int
        Total epochs, and the checkpoint (and exit-85) interval in epochs.
    checkpoint_minutes : float or None
        Also checkpoint at the first batch boundary after this many minutes of this run; None
        or 0: no time-based checkpoints (only every ``checkpoint_every`` epochs).
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
        """Raise :class:`OptionError` naming the first option with an impossible value.

        Every field is checked against :data:`OPTION_RULES` (types too: a spec can give
        ``epochs = 3.5`` or ``lr = "fast"``), then the combinations: an image size the model
        cannot take, pretrained weights for a model that has none.
        """
        for name, rule in OPTION_RULES.items():
            value = getattr(self, name)
            problem = rule.problem(value)
            if problem is not None:
                raise OptionError(name, value, problem)
        for name, problem in combination_problems(self):
            raise OptionError(name, getattr(self, name), problem)


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
