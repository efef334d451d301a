"""The one registry of models a run can train: what each name means and needs, without torch.

A ``--model`` value (a spec's ``model``) is one of three kinds:

* ``cnn``: the CHTC example's CNN (:class:`condorml.job.models.CatAndDogConvNet`), with a class
  count; it needs images of at least :data:`CNN_MIN_IMAGE_SIZE` pixels.
* the name of any torchvision classification model, as ``torchvision.models.list_models``
  lists them (``resnet18``, ``mobilenet_v3_small``, ``vit_b_16``, ...), built with the data's
  number of classes and normalised as that model's weights expect.
* ``PATH.py:CLASS``: the user's own ``nn.Module`` subclass in a Python file, constructed as
  ``CLASS(num_classes=N)`` (see the README, "Your own model"). The file travels with each job as
  an input; inside a job it is the file's name at the top of the sandbox (:func:`job_value`).

Only the torchvision names need torchvision to be checked; it is imported (a few seconds) only
when such a name is given. Building the models is :mod:`condorml.job.models`' job.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from condorml.errors import CondormlError

CNN = "cnn"
# The CNN's three conv + pool stages keep one feature from 37 pixels up
# (condorml.job.models.cnn_feature_side; a test keeps them equal).
CNN_MIN_IMAGE_SIZE = 37
FILE_SUFFIX = ".py"
# A class name in a model file reference: a Python identifier.
_IDENTIFIER_HINT = "a Python class name (letters, digits, '_')"


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``--model`` value.

    Attributes
    ----------
    kind : str
        ``"cnn"``, ``"torchvision"`` or ``"file"``.
    name : str
        The value as given (``resnet18``, ``models/net.py:Net``).
    path : str or None
        A model file's path, as given (kind ``"file"``).
    class_name : str or None
        The class in that file.
    """

    kind: str
    name: str
    path: str | None = None
    class_name: str | None = None

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def job_name(self) -> str:
        """The value as a job sees it: a model file at the top of its sandbox (``net.py:Net``)."""
        if not self.is_file:
            return self.name
        return f"{PurePosixPath(str(self.path)).name}:{self.class_name}"


def is_model_file(value: str) -> bool:
    """Whether ``value`` names a model file (``PATH.py:CLASS``) rather than a model by name."""
    path, colon, _ = value.rpartition(":")
    return bool(colon) and path.endswith(FILE_SUFFIX)


def parse_model(value: str, option: str = "--model") -> ModelRef:
    """Parse and check a ``--model`` value.

    A model file's existence is not checked here (a spec resolves and checks its paths, a job
    finds the file in its sandbox); a torchvision name is checked against torchvision's list.

    Raises
    ------
    CondormlError
        For an unknown name (with the closest matches) or a malformed file reference.

    Example
    -------
    >>> parse_model("models/net.py:Net").job_name
    'net.py:Net'
    """
    problem = model_problem(value)
    if problem is not None:
        raise CondormlError(f"{option} {value}: {problem}")
    if value == CNN:
        return ModelRef(CNN, value)
    if is_model_file(value):
        path, _, class_name = value.rpartition(":")
        return ModelRef("file", value, path, class_name)
    return ModelRef("torchvision", value)


def model_problem(value: object) -> str | None:
    """What is wrong with a ``--model`` value, or None (an :class:`~condorml.config.OptionRule` check)."""
    if not isinstance(value, str) or not value:
        return "must be cnn, a torchvision model name or FILE.py:CLASS"
    if value == CNN:
        return None
    if ":" in value:
        path, _, class_name = value.rpartition(":")
        if not path.endswith(FILE_SUFFIX):
            return f"a model file reference is FILE.py:CLASS, and {path!r} does not end in .py"
        if not class_name.isidentifier():
            return f"{class_name!r} after the colon must be {_IDENTIFIER_HINT}"
        if any(c in value for c in "\n\r\"'$"):
            return "a model file path may not hold quotes, '$' or line breaks"
        return None
    if value.endswith(FILE_SUFFIX):
        return f"a model file needs its class: {value}:CLASS"
    names = torchvision_models()
    if value in names:
        return None
    close = difflib.get_close_matches(value, [CNN, *names], n=3, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return (
        f"unknown model{hint} (cnn, any of torchvision's {len(names)} classification models, or "
        "FILE.py:CLASS for your own)"
    )


@functools.cache
def torchvision_models() -> tuple[str, ...]:
    """The classification models torchvision builds by name (imports torchvision once)."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def job_value(value: str) -> str:
    """A ``--model`` value as a job's command line gives it (a model file by its sandbox name)."""
    return (
        ModelRef("file", value, *value.rsplit(":", 1)).job_name if is_model_file(value) else value
    )


def min_image_size(value: str) -> int | None:
    """The smallest image edge a model is known to take without building it (None: unknown)."""
    return CNN_MIN_IMAGE_SIZE if value == CNN else None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (a model file's identity, a weights file's provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
