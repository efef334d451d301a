"""The classifiers: the CHTC example's CNN and a ResNet-18 for transfer learning.

Each model is registered with the normalisation its inputs expect, so that training and
inference cannot disagree about it. Parameter names match the originals (``conv1``..``fc3`` for
the CNN, torchvision's names for ResNet-18), so weights saved by the CHTC example's ``train.py``
or downloaded for torchvision load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from condorml.config import MIN_IMAGE_SIZE
from condorml.errors import CondormlError
from condorml.job.checkpoint import describe_load_error

NUM_CLASSES = 2  # cat (0) and dog (1)


class CatAndDogConvNet(nn.Module):
    """The CNN of the CHTC cat/dog example, with ``fc1`` sized for any input edge length.

    Three convolutions (16, 32, 64 channels), each followed by ReLU and 2x2 max-pooling, then
    fully connected layers 500 -> 50 -> 2. The example hard-codes ``64 * 6 * 6`` inputs to
    ``fc1``, which is right only for 224-pixel images.

    Parameters
    ----------
    image_size : int
        Edge length of the square input images.
    """

    def __init__(self, image_size: int = 224) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=(5, 5), stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=(5, 5), stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=(3, 3), padding=1)
        side = cnn_feature_side(image_size)
        self.fc1 = nn.Linear(64 * side * side, 500)
        self.fc2 = nn.Linear(500, 50)
        self.fc3 = nn.Linear(50, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        # flatten, not view: the input may be channels-last; the order stays (C, H, W).
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def cnn_feature_side(image_size: int) -> int:
    """Edge length of the CNN's last feature map for a given input size (6 for 224)."""
    side = image_size
    for kernel, stride in ((5, 2), (5, 2), (3, 1)):
        side = (side + 2 - kernel) // stride + 1  # convolution, padding 1
        side //= 2  # 2x2 max-pool
    return side


def _build_cnn(
    image_size: int, pretrained_weights: Path | None, freeze_backbone: bool
) -> nn.Module:
    if cnn_feature_side(image_size) < 1:
        raise CondormlError(
            f"--image-size {image_size}: too small for the cnn model; use {MIN_IMAGE_SIZE['cnn']} or more"
        )
    if pretrained_weights is not None or freeze_backbone:
        raise CondormlError(
            "--pretrained-weights and --freeze-backbone apply to --model resnet18, not cnn"
        )
    return CatAndDogConvNet(image_size)


def _build_resnet18(
    image_size: int, pretrained_weights: Path | None, freeze_backbone: bool
) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    class TransferResNet18(ResNet):
        """torchvision's ResNet-18 with a 2-class head; a frozen backbone stays in eval mode."""

        frozen = False

        def train(self, mode: bool = True) -> TransferResNet18:
            super().train(mode)
            if self.frozen:  # fixed-feature extraction: no batch-norm statistics updates either
                for name, child in self.named_children():
                    if name != "fc":
                        child.eval()
            return self

    if image_size < 32:
        raise CondormlError(f"--image-size {image_size}: too small for resnet18; use 32 or more")
    model = TransferResNet18(BasicBlock, [2, 2, 2, 2])
    if pretrained_weights is not None:
        _load_backbone(model, pretrained_weights)
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)
    if freeze_backbone:
        if pretrained_weights is None:
            raise CondormlError(
                "--freeze-backbone needs --pretrained-weights: a random backbone is no feature extractor"
            )
        model.frozen = True
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("fc.")
    return model


def _load_backbone(model: nn.Module, path: Path) -> None:
    """Load ImageNet (or other) weights into everything but the classification head."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CondormlError(f"--pretrained-weights {path}: no such file") from err
    except Exception as err:  # torch raises many types for a damaged or unsafe file
        raise CondormlError(
            f"--pretrained-weights {path}: {describe_load_error(path, err)}"
        ) from None
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CondormlError(f"--pretrained-weights {path}: expected a state_dict")
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    odd = sorted(set(expected) ^ set(backbone))
    odd += [k for k in expected if k in backbone and backbone[k].shape != expected[k].shape]
    if odd:
        raise CondormlError(
            f"--pretrained-weights {path}: not ResNet-18 weights (missing, unexpected or misshapen: {', '.join(odd[:3])})"
        )
    model.load_state_dict(backbone, strict=False)


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: how to build it and how its inputs are normalised."""

    build: Callable[[int, Path | None, bool], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


MODELS: dict[str, ModelSpec] = {
    # The CHTC example normalises with Normalize((0.5,), (0.5,)): pixels to [-1, 1].
    "cnn": ModelSpec(_build_cnn, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # Pretrained torchvision weights expect ImageNet statistics.
    "resnet18": ModelSpec(_build_resnet18, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class InputNormalizer:
    """Turn ``uint8`` NHWC image batches into a model's normalised input, in one reused buffer.

    The result is an (N, 3, S, S) view with channels-last strides (NHWC memory *is* channels-last),
    valid until the next call. The per-channel normalisation is one fused multiply-add over rows
    of S x 3 values with a tiled pattern, which vectorises where a (1, 3, 1, 1) broadcast over an
    innermost dimension of 3 does not (about 1.5 ms instead of 25 for 64 images at 224 pixels on
    two cores), and the buffer is reused because a fresh 40 MB tensor per batch costs page
    faults that take as long as the arithmetic. With bf16 the buffer is bf16, which spares
    autocast its own cast of the input.

    Parameters
    ----------
    spec : ModelSpec
        Supplies the mean and standard deviation.
    size : int
        Edge length of the images.
    device : torch.device
        Where the buffer lives.
    dtype : torch.dtype
        float32 or bfloat16.
    """

    def __init__(
        self, spec: ModelSpec, size: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
        # x * scale + bias == (x / 255 - mean) / std, per channel, tiled along a row of pixels
        self.scale = (1.0 / (255.0 * std)).repeat(size).view(1, -1).to(device, dtype)
        self.bias = (-mean / std).repeat(size).view(1, -1).to(device, dtype)
        self.size, self.device, self.dtype = size, device, dtype
        self._buffer = self._new_buffer(0)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise a (N, S, S, 3) ``uint8`` batch (on any device)."""
        n, size = pixels.shape[0], self.size
        if self._buffer.shape[0] < n:
            self._buffer = self._new_buffer(n)
        rows = self._buffer[:n].view(n * size, size * 3)
        rows.copy_(pixels.to(self.device, non_blocking=True).reshape(n * size, size * 3))
        torch.addcmul(self.bias, rows, self.scale, out=rows)
        return self._buffer[:n].permute(0, 3, 1, 2)

    def _new_buffer(self, n: int) -> torch.Tensor:
        # A normal tensor even if first needed under inference_mode: an inference tensor could
        # not be written to by training steps that follow.
        with torch.inference_mode(False):
            shape = (n, self.size, self.size, 3)
            return torch.empty(shape, dtype=self.dtype, device=self.device)


def model_spec(name: str) -> ModelSpec:
    """The registered architecture ``name``; raises with the valid names if unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise CondormlError(
            f"--model {name}: unknown model; choose one of {', '.join(MODELS)}"
        ) from None


def build_model(
    name: str,
    image_size: int,
    pretrained_weights: Path | None = None,
    freeze_backbone: bool = False,
) -> nn.Module:
    """Build a registered model with a 2-class output.

    Parameters
    ----------
    name : str
        ``"cnn"`` or ``"resnet18"``.
    image_size : int
        Edge length of the square inputs.
    pretrained_weights : Path, optional
        A local state_dict for the ResNet-18 backbone (nothing is downloaded).
    freeze_backbone : bool
        Train only the new head (ResNet-18 with pretrained weights).

    Raises
    ------
    CondormlError
        For an unknown name, a size the model cannot take, or unusable weights.

    Example
    -------
    >>> build_model("cnn", 224).fc1.in_features
    2304
    """
    return model_spec(name).build(image_size, pretrained_weights, freeze_backbone)
