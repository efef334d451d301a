"""Building the classifiers that :mod:`condorml.architectures` names, with N-class outputs.

* ``cnn``: the CHTC example's CNN, parameter names ``conv1``..``fc3`` as in the example, so its
  own weights load unchanged; ``fc3`` has one output per class.
* any torchvision classification model, by name, built with ``num_classes`` (no weights are
  downloaded); its inputs are normalised with the mean and standard deviation its published
  weights expect.
* a user's model file (:mod:`condorml.job.usermodel`).

Transfer learning works the same way for all three: ``--pretrained-weights`` is a local
state_dict of the same architecture; where its class count differs, the classifier layer (the
parameters whose shape depends on the class count, found by building the model for two class
counts on PyTorch's shapeless ``meta`` device) keeps its fresh initialisation, and
``--freeze-backbone`` trains only that layer, the frozen layers' batch-norm statistics fixed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condorml.architectures import CNN, CNN_MIN_IMAGE_SIZE, ModelRef, parse_model
from condorml.errors import CondormlError
from condorml.job.checkpoint import FORMAT, load_weights_only
from condorml.job.usermodel import ModelClass, load_model_class

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The CHTC example normalises with Normalize((0.5,), (0.5,)): pixels to [-1, 1].
CNN_MEAN, CNN_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
_PROBE_BATCH = 2  # batch norm in training mode needs more than one value per channel


class CatAndDogConvNet(nn.Module):
    """The CNN of the CHTC cat/dog example, with ``fc1`` sized for any input edge length.

    Three convolutions (16, 32, 64 channels), each followed by ReLU and 2x2 max-pooling, then
    fully connected layers 500 -> 50 -> ``num_classes``. The example hard-codes ``64 * 6 * 6``
    inputs to ``fc1``, which is right only for 224-pixel images, and 2 classes.

    Parameters
    ----------
    image_size : int
        Edge length of the square input images.
    num_classes : int
        Outputs of ``fc3`` (the example's: 2, cat and dog).
    """

    def __init__(self, image_size: int = 224, num_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=(5, 5), stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=(5, 5), stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=(3, 3), padding=1)
        side = cnn_feature_side(image_size)
        self.fc1 = nn.Linear(64 * side * side, 500)
        self.fc2 = nn.Linear(500, 50)
        self.fc3 = nn.Linear(50, num_classes)

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


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model's output: the tensor itself, or the first of a tuple (GoogLeNet
    and Inception return their auxiliary logits beside them in training mode)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise CondormlError(
        f"the model returned a {type(output).__name__}, not a tensor of logits (batch, classes)"
    )


class Architecture:
    """A model by its ``--model`` value: how to build it with a class count, its inputs'
    normalisation, and which of its parameters are the classifier layer.

    Parameters
    ----------
    model : str
        ``cnn``, a torchvision name or ``FILE.py:CLASS`` (the file read from here).
    option : str
        The option that gave it, for messages.
    """

    def __init__(self, model: str, option: str = "--model") -> None:
        self.ref: ModelRef = parse_model(model, option)
        self.option = option
        self.file: ModelClass | None = None
        if self.ref.is_file:
            self.file = load_model_class(Path(str(self.ref.path)), str(self.ref.class_name), option)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def file_sha256(self) -> str | None:
        """The model file's SHA-256 (part of a checkpoint's identity); None for a named model."""
        return None if self.file is None else self.file.sha256

    def construct(self, num_classes: int, image_size: int) -> nn.Module:
        """A new model with random weights (uses the torch random generator)."""
        self._check_sizes(num_classes, image_size)
        if self.ref.kind == CNN:
            return CatAndDogConvNet(image_size, num_classes)
        if self.file is not None:
            return self.file.build(num_classes, self.option)
        import torchvision.models

        return torchvision.models.get_model(self.name, weights=None, num_classes=num_classes)

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per RGB channel of the inputs, on the 0..1 scale."""
        if self.ref.kind == CNN:
            return CNN_MEAN, CNN_STD
        if self.file is not None:
            cls = self.file.cls
            mean, std = (
                getattr(cls, "input_mean", IMAGENET_MEAN),
                getattr(cls, "input_std", IMAGENET_STD),
            )
            try:
                mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
            except (TypeError, ValueError):
                mean = std = ()
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise CondormlError(
                    f"{self.option} {self.name}: input_mean and input_std must be three numbers each (std above 0)"
                )
            return mean, std
        return _torchvision_normalization(self.name)

    def head(self, num_classes: int, image_size: int) -> set[str]:
        """The names of the parameters and buffers whose shape depends on the class count."""
        with _no_random_draws():
            shapes = [
                {k: tuple(v.shape) for k, v in self._on_meta(n, image_size).state_dict().items()}
                for n in (num_classes, num_classes + 1)
            ]
        return {k for k, shape in shapes[0].items() if shapes[1].get(k) != shape}

    def check_input(self, num_classes: int, image_size: int) -> None:
        """Run a batch of ``image_size`` images through the model on the meta device (shapes
        only, no arithmetic): a size it cannot take, or outputs that are not (batch, classes),
        fail here instead of after the data is decoded.

        Raises
        ------
        CondormlError
            Naming the model, the size and the model's own complaint.
        """
        if self.ref.kind == CNN:
            # Arithmetic instead of a probe: the CNN's output is (batch, classes) for every size
            # cnn_feature_side accepts, and a first meta forward costs a second of a restart
            # (its kernels import sympy and torch._dynamo).
            self._check_sizes(num_classes, image_size)
            return
        with _no_random_draws():
            model = self._on_meta(num_classes, image_size).train()
            x = torch.empty(_PROBE_BATCH, 3, image_size, image_size, device="meta")
            try:
                out = logits_of(model(x))
            except CondormlError as err:
                raise CondormlError(f"{self.option} {self.name}: {err}") from None
            except NotImplementedError:
                return  # an operation without a meta implementation: the real run will tell
            except Exception as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                raise CondormlError(
                    f"{self.option} {self.name}: cannot take {image_size}-pixel images ({first}); choose another --image-size"
                ) from None
        if tuple(out.shape) != (_PROBE_BATCH, num_classes):
            raise CondormlError(
                f"{self.option} {self.name}: returns outputs of shape {tuple(out.shape)} for {_PROBE_BATCH} images, not ({_PROBE_BATCH}, {num_classes}): one logit per class"
            )

    def _check_sizes(self, num_classes: int, image_size: int) -> None:
        """Refuse a class count below 2, and an image size too small for the CNN."""
        if num_classes < 2:
            raise CondormlError(
                f"{self.option} {self.name}: needs at least 2 classes, not {num_classes}"
            )
        if self.ref.kind == CNN and cnn_feature_side(image_size) < 1:
            raise CondormlError(
                f"--image-size {image_size}: too small for the cnn model; use {CNN_MIN_IMAGE_SIZE} or more"
            )

    def _on_meta(self, num_classes: int, image_size: int) -> nn.Module:
        with torch.device("meta"):
            return self.construct(num_classes, image_size)


@functools.cache
def _torchvision_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import torchvision.models

    try:
        weights = list(torchvision.models.get_model_weights(name))
        transform = weights[0].transforms()
        return tuple(transform.mean), tuple(transform.std)
    except (ValueError, IndexError, AttributeError, TypeError):  # no published weights
        return IMAGENET_MEAN, IMAGENET_STD


@contextlib.contextmanager
def _no_random_draws() -> Iterator[None]:
    """Leave the CPU random generator as it was (a probe must not change a run's initialisation)."""
    with torch.random.fork_rng(devices=[]):
        yield


def build_model(
    name: str,
    image_size: int,
    pretrained_weights: Path | None = None,
    freeze_backbone: bool = False,
    *,
    num_classes: int = 2,
    architecture: Architecture | None = None,
) -> nn.Module:
    """Build a model with ``num_classes`` outputs, optionally from pretrained weights.

    Parameters
    ----------
    name : str
        ``cnn``, a torchvision model name or ``FILE.py:CLASS``.
    image_size : int
        Edge length of the square inputs.
    pretrained_weights : Path, optional
        A local state_dict (or condorml checkpoint) of the same architecture; nothing is
        downloaded. A classifier layer of another class count is replaced.
    freeze_backbone : bool
        Train only the classifier layer (needs ``pretrained_weights``).
    num_classes : int
        Outputs of the classifier.
    architecture : Architecture, optional
        ``name`` already resolved (a model file already loaded).

    Raises
    ------
    CondormlError
        For an unknown name, a size the model cannot take, a model file that does not fit the
        contract, or unusable weights.

    Example
    -------
    >>> build_model("cnn", 224, num_classes=10).fc3.out_features
    10
    """
    arch = architecture or Architecture(name)
    if freeze_backbone and pretrained_weights is None:
        raise CondormlError(
            "--freeze-backbone needs --pretrained-weights: a random backbone is no feature extractor"
        )
    if arch.ref.kind != CNN:
        arch.check_input(num_classes, image_size)
    model = arch.construct(num_classes, image_size)
    if pretrained_weights is not None:
        head = arch.head(num_classes, image_size)
        load_pretrained(model, pretrained_weights, head, arch.name)
        if freeze_backbone:
            for key, param in model.named_parameters():
                param.requires_grad = key in head
    return model


def load_pretrained(model: nn.Module, path: Path, head: set[str], arch: str) -> None:
    """Load weights into ``model``; where their classifier layer (``head``) has another shape,
    it keeps its fresh initialisation.

    Raises
    ------
    CondormlError
        For a missing or damaged file, or weights of another model; transient
        (:class:`~condorml.errors.TransientError`) when the machine fails to load the file (no
        memory, an I/O error).
    """
    option = f"--pretrained-weights {path}"
    state = load_weights_only(path, option)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        state = state.get("model")  # a condorml checkpoint: its model's weights
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CondormlError(f"{option}: expected a state_dict")
    expected = model.state_dict()
    odd = sorted(k for k in set(expected) ^ set(state) if k not in head)
    odd += [
        k for k in expected if k in state and k not in head and state[k].shape != expected[k].shape
    ]
    if odd:
        raise CondormlError(
            f"{option}: not weights of {arch} (missing, unexpected or misshapen: {', '.join(odd[:3])})"
        )
    keep = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    model.load_state_dict(keep, strict=False)


def set_training(model: nn.Module, mode: bool = True) -> None:
    """``model.train(mode)``, keeping frozen batch-norm layers in eval mode (fixed statistics:
    with ``--freeze-backbone`` the backbone is a fixed feature extractor)."""
    model.train(mode)
    if not mode:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


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
    normalization : (mean, std)
        Per RGB channel, on the 0..1 scale (:meth:`Architecture.normalization`).
    size : int
        Edge length of the images.
    device : torch.device
        Where the buffer lives.
    dtype : torch.dtype
        float32 or bfloat16.
    """

    def __init__(
        self,
        normalization: tuple[tuple[float, ...], tuple[float, ...]],
        size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        mean, std = torch.tensor(normalization[0]), torch.tensor(normalization[1])
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
