"""A model file loaded for inference: a condorml checkpoint, a bare ``state_dict`` (architecture
recognised from the parameter names) or the CHTC example's checkpoint dict, always with
``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from condorml.architectures import file_sha256, is_model_file
from condorml.errors import CondormlError
from condorml.job.checkpoint import FORMAT, load_weights_only
from condorml.job.models import Architecture, build_model, cnn_feature_side
from condorml.job.train_state import saved_classes
from condorml.results.predictions import CAT_DOG

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224  # the CHTC example's
RECOGNISED = ("cnn", "resnet18")  # what a bare state_dict's parameter names can tell


@dataclass
class LoadedModel:
    """One model of the ensemble, loaded for inference."""

    member: str
    path: Path
    sha256: str
    arch: str
    image_size: int
    config: dict[str, Any] | None
    model: nn.Module
    classes: tuple[str, ...] = CAT_DOG
    normalization: tuple[tuple[float, ...], tuple[float, ...]] = ((0.5,) * 3, (0.5,) * 3)
    progress: dict[str, Any] | None = None  # a condorml checkpoint's epoch, epochs, finished

    def describe(self) -> dict[str, Any]:
        """Provenance for the sidecar (``epoch``, ``epochs``, ``finished``: None for a bare state_dict)."""
        progress = self.progress or dict.fromkeys(("epoch", "epochs", "finished"))
        return {
            "member": self.member,
            "path": str(self.path),
            "sha256": self.sha256,
            "arch": self.arch,
            "image_size": self.image_size,
            "classes": list(self.classes),
            **progress,
            "training_config": self.config,
        }


def load_member(
    path: Path,
    device: torch.device,
    model_arch: str | None = None,
    image_size: int | None = None,
    model_files: tuple[Path, ...] = (),
) -> LoadedModel:
    """Load a model for inference from a condorml checkpoint or a bare ``state_dict``.

    A condorml checkpoint names its architecture, image size and classes; one trained with a
    model file (``FILE.py:CLASS``) needs that file's code, found among ``model_files`` (or
    ``model_arch``) by its content, never taken from the checkpoint. For a bare state_dict
    (what the CHTC example's ``train.py`` saves) or the example's checkpoint dict
    (``model_state_dict``), the architecture is recognised from the parameter names unless
    ``model_arch`` is given, the image size is ``image_size``, else the one the CNN's ``fc1``
    implies when 224 fits it, and the class count is the classifier's: 2 are cat and dog,
    others are numbered from 0.

    Raises
    ------
    CondormlError
        If the file is missing, unreadable, holds non-weights objects, or does not fit the model;
        transient (:class:`~condorml.errors.TransientError`) when the machine fails to load it
        (no memory, an I/O error).
    """
    state = load_weights_only(path, f"--model {path}")  # no memory, I/O errors: transient
    if not isinstance(state, dict):
        raise CondormlError(f"--model {path}: expected a condorml checkpoint or a state_dict")
    config = progress = None
    if state.get("format") == FORMAT:
        config = state["config"]
        progress = _training_progress(path, state)
        size, weights, classes = config["image_size"], state["model"], saved_classes(config)
        arch = _checkpoint_arch(path, config, model_arch, model_files)
        if image_size is not None and image_size != size:
            raise CondormlError(
                f"--model {path}: --image-size {image_size} contradicts the checkpoint ({size})"
            )
    else:
        weights = state.get("model_state_dict", state)  # the CHTC example's checkpoint dict
        arch = Architecture(model_arch or _recognise_arch(path, weights), "--model-arch")
        size = image_size or _implied_size(path, arch.name, weights)
        classes = _bare_classes(path, arch, size, weights)
    model = build_model(arch.name, size, num_classes=len(classes), architecture=arch)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        raise CondormlError(
            f"--model {path}: the weights do not fit {arch.name} at {size} px ({first[-1].strip()[:200]})"
        ) from None
    model = model.to(device=device, memory_format=torch.channels_last).eval()
    name = (config or {}).get("member") or path.parent.name or path.stem
    return LoadedModel(name, path, file_sha256(path), arch.ref.job_name, size, config, model,
                       classes, arch.normalization(), progress)  # fmt: skip


def _checkpoint_arch(path: Path, config: dict[str, Any], model_arch: str | None,
                     model_files: tuple[Path, ...]) -> Architecture:  # fmt: skip
    """The architecture a checkpoint names; a model file's code found by its SHA-256."""
    saved, sha256 = config["model"], config.get("model_sha256")
    if sha256 is None:
        if model_arch is not None and model_arch != saved:
            raise CondormlError(
                f"--model {path}: --model-arch {model_arch} contradicts the checkpoint ({saved})"
            )
        return Architecture(saved)
    class_name = saved.rpartition(":")[2]
    candidates = (
        [Path(model_arch.rpartition(":")[0])] if model_arch and is_model_file(model_arch) else []
    )
    candidates += [Path(p) for p in model_files]
    for candidate in candidates:
        try:
            if file_sha256(candidate) == sha256:
                return Architecture(f"{candidate}:{class_name}", "--model-file")
        except OSError as err:
            raise CondormlError(
                f"--model-file {candidate}: cannot read it ({err.strerror or err})"
            ) from None
    given = f" (none of {', '.join(map(str, candidates))} has that content)" if candidates else ""
    raise CondormlError(
        f"--model {path}: trained with the model file {saved} (SHA-256 {sha256[:12]}...); give that file with --model-file{given}"
    )


def _bare_classes(path: Path, arch: Architecture, size: int, weights: dict) -> tuple[str, ...]:
    """A bare state_dict's classes, from the shape of its classifier layer."""
    head = sorted(arch.head(2, size))
    shapes = [
        tuple(weights[k].shape) for k in head if k in weights and getattr(weights[k], "ndim", 0)
    ]
    if not shapes:
        raise CondormlError(
            f"--model {path}: not weights of {arch.name} (no classifier layer {', '.join(head[:2])})"
        )
    count = int(shapes[0][0])
    return CAT_DOG if count == 2 else tuple(str(i) for i in range(count))


def _training_progress(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """How far training had got when the checkpoint was written; warns if it had not finished."""
    epoch, epochs = int(state["epoch"]), int(state["config"]["epochs"])
    finished = bool(state.get("finished", epoch >= epochs))
    if not finished:
        mid = f" and {state['batch']} batches of the next" if state.get("batch") else ""
        log.warning(
            "%s: a checkpoint taken mid-training (%d of %d epochs done%s); predicting with a "
            "partly trained model",
            path,
            epoch,
            epochs,
            mid,
        )
    return {"epoch": epoch, "epochs": epochs, "finished": finished}


def _recognise_arch(path: Path, weights: dict) -> str:
    if "layer4.1.conv2.weight" in weights:
        return "resnet18"
    if "conv1.weight" in weights and "fc3.weight" in weights:
        return "cnn"
    raise CondormlError(
        f"--model {path}: unknown architecture; pass --model-arch (a model name such as {', '.join(RECOGNISED)}, or FILE.py:CLASS)"
    )


def _implied_size(path: Path, arch: str, weights: dict) -> int:
    if arch != "cnn" or "fc1.weight" not in weights:
        return DEFAULT_IMAGE_SIZE
    side = math.isqrt(weights["fc1.weight"].shape[1] // 64)
    if cnn_feature_side(DEFAULT_IMAGE_SIZE) == side:
        return DEFAULT_IMAGE_SIZE
    raise CondormlError(f"--model {path}: a cnn for another image size than 224; pass --image-size")
