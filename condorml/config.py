"""The training configuration and its choices: plain data, no torch.

Kept apart from :mod:`condorml.job.train` so that code which only *describes* runs (sweep expansion,
submit-file generation, the command line) can name and validate hyperparameters without
importing PyTorch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from condorml.architectures import min_image_size, model_problem
from condorml.errors import CondormlError

# The choices of each option (the CLI's Literal types and the library's tables; tests keep them equal).
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INFER_PRECISIONS = ("auto", "fp32", "bf16")  # inference has no fp16 loss scaling to need
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("constant", "cosine", "step")
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
    allows None (the option left out). ``check`` is a test of its own, returning what is wrong
    with a value of the right kind (the model registry's names), and ``means`` says in words
    what it accepts.
    """

    kind: type
    low: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    optional: bool = False
    check: Callable[[Any], str | None] | None = None
    means: str | None = None

    def requirement(self) -> str:
        """The range in words, e.g. ``1 or more``, ``at least 0 and below 1``."""
        if self.means is not None:
            return self.means
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
        if self.check is not None:
            return self.check(value)
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


# The --model values: cnn, a torchvision name, FILE.py:CLASS (condorml.architectures).
MODEL_RULE = OptionRule(
    str, check=model_problem, means="cnn, a torchvision model name or FILE.py:CLASS"
)

SWEPT = "swept"  # a sweep may vary it ([grid], [random]) or fix it ([train])
FIXED = "fixed"  # a sweep may only fix it
ALWAYS = "always"  # a job's command line always carries it, so a job never depends on defaults
IF_SET = "if set"  # ... only when it is not None (or False)


@dataclass(frozen=True)
class Option:
    """What one option of a run means, and where it appears: the metadata of a dataclass field.

    Each table of options is a dataclass (:class:`TrainConfig`, :class:`InferConfig`, the pool's
    ``Resources``) whose fields carry an ``Option``; the command line
    (:mod:`condorml.cli._options`), the sweep specification's keys (:mod:`condorml.sweep.spec`)
    and a job's arguments (:mod:`condorml.htcondor.submit`) are derived from it.

    Attributes
    ----------
    help : str
        The ``--help`` text.
    rule : OptionRule or None
        The values it takes; None where another check applies (a path that must exist).
    spec : str or None
        :data:`SWEPT`, :data:`FIXED`, or None: not a key of a sweep specification.
    job : str or None
        How a submitted job's command line passes it on: :data:`ALWAYS`, :data:`IF_SET`, or None.
    identity : bool
        A checkpoint's value must match the resuming command line's (:data:`IDENTITY_FIELDS`).
    key : str or None
        Its name on the command line and in a spec where that differs from the field's name.
    flags : tuple of str
        Extra spellings on the command line (``-e``; ``--x/--no-x`` for a flag that can be unset).
    cli_min : int or None
        A lower bound the command line itself enforces (where the library does not).
    submission : bool
        An option of a submitted job only (``condorml submit``, a spec), not of the command
        that runs in it.
    """

    help: str
    rule: OptionRule | None = None
    spec: str | None = None
    job: str | None = None
    identity: bool = False
    key: str | None = None
    flags: tuple[str, ...] = ()
    cli_min: int | None = None
    submission: bool = False


def replace_rule(rule: OptionRule, **changes: Any) -> OptionRule:
    """``rule`` with some attributes changed (an optional variant of a shared rule)."""
    return replace(rule, **changes)


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field whose default is ``default`` and whose metadata is an :class:`Option`."""
    return field(default=default, metadata={"option": Option(help, **metadata)})


def option_fields(table: type) -> dict[str, tuple[Field[Any], Option]]:
    """The fields of ``table`` (a dataclass) that are options, by command-line/spec key, in order."""
    found = {}
    for item in fields(table):
        meta = item.metadata.get("option")
        if meta is not None:
            found[meta.key or item.name] = (item, meta)
    return found


def option_default(table: type, key: str) -> Any:
    """The library default of one option of ``table``: what the command line must also default to."""
    item, _ = option_fields(table)[key]
    return item.default_factory() if item.default is MISSING else item.default  # type: ignore[misc]


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
    if config.stop_after_epoch is not None and config.stop_after_epoch > config.epochs:
        problems.append(
            (
                "stop_after_epoch",
                f"must be at most --epochs ({config.epochs}), the budget it stops within",
            )
        )
    minimum = min_image_size(config.model)
    if minimum is not None and config.image_size < minimum:
        problems.append(
            ("image_size", f"too small for the {config.model} model; use {minimum} or more")
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
        Folder or ``.zip`` of training images in any layout :mod:`condorml.job.layouts` reads
        (class folders, a ``labels.csv``, Kaggle cat/dog names, torchvision's dataset files).
    labels_csv : Path or None
        A CSV of ``path,label`` beside the data (``None``: the layout says the labels).
    checkpoint_dir : Path
        Where ``model.pth``, ``metrics.csv`` and the previous generation live (see
        :func:`condorml.job.checkpoint.previous_path`).
    epochs, checkpoint_every : int
        Total epochs, and the checkpoint (and exit-85) interval in epochs.
    checkpoint_minutes : float or None
        Also checkpoint at the first batch boundary after this many minutes of this run; None
        or 0: no time-based checkpoints (only every ``checkpoint_every`` epochs).
    stop_after_epoch : int or None
        Stop after this epoch with an ordinary checkpoint (status ``"stopped"``, exit 0); the
        learning-rate schedule still spans ``epochs``, so a later run continues exactly. None:
        train all ``epochs``.
    exit_on_checkpoint : bool
        Return ``"checkpointed"`` (exit 85) after each checkpoint; False keeps training.
    split_seed : int
        Seed of the validation split, shared by the members of an ensemble so that their
        validation scores compare; ``seed`` drives initialisation and data order.
    tensorboard : bool
        Also write TensorBoard event files into ``checkpoint_dir/tensorboard``
        (:mod:`condorml.job.tensorboard`).
    member : str or None
        The ensemble member id (``m003``) a sweep gives the run; recorded in the checkpoint
        and in the provenance of predictions made with it.
    """

    data_dir: Path
    checkpoint_dir: Path
    # Not a job argument as such: the job receives the file as an input, like the weights.
    labels_csv: Path | None = option(  # noqa: RUF009
        None,
        "A CSV of path,label for the images of --data-dir (label: a class name or index; paths relative to the CSV's folder, a zip's entries counting as unpacked beside it) [default: a labels.csv inside the data, else class folders or Kaggle names].",
    )  # fmt: skip
    epochs: int = option(
        10, "Total epochs to train.", rule=OptionRule(int, low=1), spec=SWEPT, job=ALWAYS,
        flags=("-e",),
    )  # fmt: skip
    checkpoint_every: int = option(
        5, "Checkpoint (and exit 85) every N epochs.", rule=OptionRule(int, low=1), spec=FIXED,
        job=ALWAYS,
    )  # fmt: skip
    checkpoint_minutes: float | None = option(
        None,
        "Also checkpoint at the first batch boundary after M minutes of this run, even mid-epoch; 0 or unset: only every --checkpoint-every epochs.",
        rule=OptionRule(float, low=0, optional=True), spec=FIXED, job=IF_SET,
    )  # fmt: skip
    # Not a spec key: a search's rungs set it per node (successive halving).
    stop_after_epoch: int | None = option(
        None,
        "Stop after epoch E (checkpoint saved, exit 0) of the --epochs budget, whose learning-rate schedule it keeps; run again with a larger E, or without, to continue.",
        rule=OptionRule(int, low=1, optional=True), job=IF_SET,
    )  # fmt: skip
    model: str = option(
        "cnn",
        "cnn (the CHTC example's), any torchvision classification model by name (resnet18, mobilenet_v3_small, ...), or FILE.py:CLASS, your own nn.Module.",
        rule=MODEL_RULE, spec=SWEPT, job=ALWAYS, identity=True,
    )  # fmt: skip
    image_size: int = option(
        224, "Images are resized to SIZE x SIZE.", rule=OptionRule(int, low=1), spec=SWEPT,
        job=ALWAYS, identity=True,
    )  # fmt: skip
    lr: float = option(
        1e-3, "Learning rate.", rule=OptionRule(float, above=0), spec=SWEPT, job=ALWAYS,
        identity=True,
    )  # fmt: skip
    batch_size: int = option(
        64, "Images per batch.", rule=OptionRule(int, low=1), spec=SWEPT, job=ALWAYS,
        identity=True,
    )  # fmt: skip
    optimizer: str = option(
        "adam", "Optimizer.", rule=OptionRule(str, choices=OPTIMIZERS), spec=SWEPT, job=ALWAYS,
        identity=True,
    )  # fmt: skip
    weight_decay: float = option(
        0.0, "Weight decay.", rule=OptionRule(float, low=0), spec=SWEPT, job=ALWAYS,
        identity=True,
    )  # fmt: skip
    momentum: float = option(  # always passed: one train.sub serves members of every optimizer
        0.9, "Momentum (sgd only).", rule=OptionRule(float, low=0, below=1), spec=SWEPT,
        job=ALWAYS, identity=True,
    )  # fmt: skip
    scheduler: str = option(
        "constant", "Learning-rate schedule, stepped once per epoch.",
        rule=OptionRule(str, choices=SCHEDULERS), spec=SWEPT, job=ALWAYS, identity=True,
    )  # fmt: skip
    seed: int = option(  # not a spec key: [ensemble] gives each member its seed
        0, "Seed of initialisation and data order (one per ensemble member).",
        rule=OptionRule(int, low=0, below=SEED_LIMIT), job=ALWAYS, identity=True,
    )  # fmt: skip
    split_seed: int = option(
        0, "Seed of the validation split (keep it equal across members).",
        rule=OptionRule(int, low=0, below=SEED_LIMIT), spec=FIXED, job=ALWAYS, identity=True,
    )  # fmt: skip
    val_fraction: float = option(
        0.1, "Fraction of the images held out for validation.",
        rule=OptionRule(float, low=0, below=1), spec=SWEPT, job=ALWAYS, identity=True,
    )  # fmt: skip
    precision: str = option(
        "auto",
        "auto: bf16 where the CPU/GPU computes it natively, fp16 on older GPUs, else fp32; recorded in the checkpoint.",
        rule=OptionRule(str, choices=PRECISIONS), spec=SWEPT, job=ALWAYS,
    )  # fmt: skip
    device: str = option(
        "auto", "auto picks cuda, then mps, then cpu.", rule=OptionRule(str, choices=DEVICES),
        spec=FIXED, job=ALWAYS,
    )  # fmt: skip
    workers: int | None = option(
        None, "Image decoding threads [default: the CPUs this job was given].",
        rule=OptionRule(int, low=1, optional=True), spec=FIXED, job=IF_SET,
    )  # fmt: skip
    # Not a job argument: the job receives the file as an input. (noqa: option() is a Field.)
    pretrained_weights: Path | None = option(  # noqa: RUF009
        None,
        "The model's state_dict for transfer learning, a local file (nothing is downloaded); a classifier layer of another class count is replaced.",
        spec=FIXED,
    )  # fmt: skip
    freeze_backbone: bool = option(
        False, "Train only the classifier layer (fixed-feature extraction).",
        rule=OptionRule(bool), spec=SWEPT, job=IF_SET, identity=True,
        flags=("--freeze-backbone/--no-freeze-backbone",),
    )  # fmt: skip
    tensorboard: bool = option(  # not an identity: a resumed run may start or stop writing
        False,
        "Write TensorBoard event files into CHECKPOINT_DIR/tensorboard (they travel with the checkpoint); needs the extra condorml[tensorboard].",
        rule=OptionRule(bool), spec=FIXED, job=IF_SET,
    )  # fmt: skip
    # The command's own options: `condorml train` has them, a submitted job's sandbox sets them.
    exit_on_checkpoint: bool = True
    force_restart: bool = False
    cache_dir: Path | None = None
    member: str | None = option(  # not a spec key: the sweep names its members
        None, "Ensemble member id (a sweep sets it); recorded with the model.",
        rule=OptionRule(str, pattern=MEMBER_ID, optional=True), job=IF_SET,
    )  # fmt: skip

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


# The tables derived from TrainConfig's fields, in field order.
# The valid values of each training option: TrainConfig.validate (condorml train, condorml submit
# train) and sweep specifications (condorml.sweep.spec) check values against it.
OPTION_RULES: dict[str, OptionRule] = {
    key: meta.rule for key, (_, meta) in option_fields(TrainConfig).items() if meta.rule
}
# Fields that must agree between a checkpoint and the command line resuming it. The rest
# (epochs, intervals, device, workers, paths) may change from one run to the next.
IDENTITY_FIELDS = tuple(
    key for key, (_, meta) in option_fields(TrainConfig).items() if meta.identity
)


INFER_BATCH_SIZE = 256  # decode/model switches amortised: +10% over the example's 100 on 2 cores


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
    """One inference run: ``condorml infer``'s, or the job that ``condorml submit infer`` and a
    sweep's ``infer.sub`` describe (the one type for both).

    Attributes
    ----------
    models : tuple of str or Path
        condorml checkpoints or bare state_dicts; several make an ensemble. In a submission,
        local paths or URLs, as the job's inputs.
    images : str or Path
        The test images: a folder or ``.zip``, flat or laid out like training data.
    output : str, Path or None
        The predictions CSV; None, or a folder (a name ending in ``/``), gets the name the
        classes give (:func:`condorml.results.predictions.predictions_name`) there.
    shard : Shard or None
        Predict only this slice of the images.
    """

    models: tuple[str | Path, ...]
    images: str | Path
    output: str | Path | None = None
    shard: Shard | None = None
    batch_size: int = option(
        INFER_BATCH_SIZE, "Images per batch (decoded together, then run through every model).",
        rule=OptionRule(int, low=1), spec=FIXED, job=ALWAYS,
    )  # fmt: skip
    workers: int | None = option(
        None, "Decoding threads [default: the CPUs this job was given].",
        rule=OptionRule(int, low=1, optional=True), job=IF_SET, cli_min=1,
    )  # fmt: skip
    device: str = option(
        "auto", "auto picks cuda, then mps, then cpu.", rule=OptionRule(str, choices=DEVICES),
        job=ALWAYS,
    )  # fmt: skip
    precision: str = option(
        "auto", "auto: bf16 where the CPU/GPU computes it natively, else fp32.",
        rule=OptionRule(str, choices=INFER_PRECISIONS), spec=FIXED, job=ALWAYS,
    )  # fmt: skip
    model_arch: str | None = option(
        None,
        "Architecture of a bare state_dict (a model name, or FILE.py:CLASS) [default: recognised from its parameter names].",
        rule=replace_rule(MODEL_RULE, optional=True), job=IF_SET,
    )  # fmt: skip
    # A job receives the files as inputs; the submission writes their arguments.
    model_files: tuple[Path, ...] = option(
        (),
        "A Python file of a model trained with --model FILE.py:CLASS, found by its content; repeat for several.",
        flags=("--model-file",),
    )  # fmt: skip
    image_size: int | None = option(
        None, "Image size of a bare state_dict [default: 224].",
        rule=OptionRule(int, low=1, optional=True), job=IF_SET,
    )  # fmt: skip
    with_stats: bool = option(  # in a sweep, an ensemble statistic the collect step adds
        False, "Add prob_std,n_models columns (spread over the ensemble).",
        rule=OptionRule(bool), spec=FIXED, job=IF_SET,
    )  # fmt: skip
    strict: bool = option(
        False, "Exit 2 if any image could not be decoded (the CSV is still written).",
        rule=OptionRule(bool), job=IF_SET,
    )  # fmt: skip
    shards: int = option(
        1, "Spread the images over N jobs (queue N, --shard $(ProcId)/N).",
        rule=OptionRule(int, low=1), spec=FIXED, submission=True,
    )  # fmt: skip
