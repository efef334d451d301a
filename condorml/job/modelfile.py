"""A model file loaded for inference: a condorml checkpoint, a bare ``state_dict`` (architecture
recognised from the parameter names) or the CHTC example's checkpoint dict, always with
``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from condorml.errors import CondormlError, os_error
from condorml.job.checkpoint import FORMAT, describe_load_error
from condorml.job.models import MODELS, build_model, cnn_feature_side

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224  # the CHTC example's


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
            **progress,
            "training_config": self.config,
        }


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_member(
    path: Path,
    device: torch.device,
    model_arch: str | None = None,
    image_size: int | None = None,
) -> LoadedModel:
    """Load a model for inference from a condorml checkpoint or a bare ``state_dict``.

    A condorml checkpoint names its architecture and image size. For a bare state_dict (what
    the CHTC example's ``train.py`` saves) or the example's checkpoint dict (``model_state_dict``),
    the architecture is recognised from the parameter names unless ``model_arch`` is given, and
    the image size is ``image_size``, else the one the CNN's ``fc1`` implies when 224 fits it.

    Raises
    ------
    CondormlError
        If the file is missing, unreadable, holds non-weights objects, or does not fit the model.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CondormlError(f"--model {path}: no such file") from None
    except OSError as err:  # an I/O error may be the machine's: worth another attempt
        raise os_error(
            f"--model {path}: cannot read it ({err.strerror or err})", err, path
        ) from None
    except Exception as err:  # torch raises many types for a damaged or unsafe file
        raise CondormlError(f"--model {path}: {describe_load_error(path, err)}") from None
    if not isinstance(state, dict):
        raise CondormlError(f"--model {path}: expected a condorml checkpoint or a state_dict")
    config = progress = None
    if state.get("format") == FORMAT:
        config = state["config"]
        progress = _training_progress(path, state)
        arch, size, weights = config["model"], config["image_size"], state["model"]
        for option, given, saved in (
            ("--model-arch", model_arch, arch),
            ("--image-size", image_size, size),
        ):
            if given is not None and given != saved:
                raise CondormlError(
                    f"--model {path}: {option} {given} contradicts the checkpoint ({saved})"
                )
    else:
        weights = state.get("model_state_dict", state)  # the CHTC example's checkpoint dict
        arch = model_arch or _recognise_arch(path, weights)
        size = image_size or _implied_size(path, arch, weights)
    model = build_model(arch, size)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        raise CondormlError(
            f"--model {path}: the weights do not fit {arch} at {size} px ({first[-1].strip()[:200]})"
        ) from None
    model = model.to(device=device, memory_format=torch.channels_last).eval()
    name = (config or {}).get("member") or path.parent.name or path.stem
    return LoadedModel(name, path, file_sha256(path), arch, size, config, model, progress)


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
        f"--model {path}: unknown architecture; pass --model-arch ({', '.join(MODELS)})"
    )


def _implied_size(path: Path, arch: str, weights: dict) -> int:
    if arch != "cnn" or "fc1.weight" not in weights:
        return DEFAULT_IMAGE_SIZE
    side = math.isqrt(weights["fc1.weight"].shape[1] // 64)
    if cnn_feature_side(DEFAULT_IMAGE_SIZE) == side:
        return DEFAULT_IMAGE_SIZE
    raise CondormlError(f"--model {path}: a cnn for another image size than 224; pass --image-size")
