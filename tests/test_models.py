"""The CHTC CNN (compatible with the example's weights) and ResNet-18 transfer learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condorml.errors import CondormlError
from condorml.job.models import build_model, cnn_feature_side, set_training


class OriginalCatAndDogConvNet(nn.Module):
    """The CHTC example's model, verbatim in structure (fc1 hard-coded for 224-pixel images)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels=3, out_channels=16, kernel_size=(5, 5), stride=2, padding=1
        )
        self.conv2 = nn.Conv2d(
            in_channels=16, out_channels=32, kernel_size=(5, 5), stride=2, padding=1
        )
        self.conv3 = nn.Conv2d(in_channels=32, out_channels=64, kernel_size=(3, 3), padding=1)
        self.fc1 = nn.Linear(in_features=64 * 6 * 6, out_features=500)
        self.fc2 = nn.Linear(in_features=500, out_features=50)
        self.fc3 = nn.Linear(in_features=50, out_features=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = x.view(x.shape[0], -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_cnn_loads_the_examples_weights_and_computes_the_same_logits() -> None:
    torch.manual_seed(0)
    original = OriginalCatAndDogConvNet().eval()
    ours = build_model("cnn", 224).eval()
    ours.load_state_dict(original.state_dict())  # same names, same shapes
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(ours(x), original(x))
    # channels-last input (what the trainer feeds) flattens in the same (C, H, W) order
    torch.testing.assert_close(ours(x.contiguous(memory_format=torch.channels_last)), original(x))


@pytest.mark.parametrize(("size", "side"), [(224, 6), (128, 3), (64, 1), (48, 1)])
def test_cnn_first_linear_layer_is_sized_from_the_image_size(size: int, side: int) -> None:
    model = build_model("cnn", size)
    assert cnn_feature_side(size) == side
    assert model.fc1.in_features == 64 * side * side
    assert model(torch.zeros(1, 3, size, size)).shape == (1, 2)


def test_cnn_rejects_a_size_it_cannot_take() -> None:
    with pytest.raises(CondormlError, match="--image-size 32"):
        build_model("cnn", 32)


def test_unknown_model_lists_the_closest_names() -> None:
    with pytest.raises(CondormlError, match="--model vgg: unknown model; closest: vgg"):
        build_model("vgg", 224)


@pytest.fixture(scope="module")
def imagenet_like_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision ResNet-18 state_dict with a 1000-class head, as downloaded weights are."""
    from torchvision.models import resnet18

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18(num_classes=1000).state_dict(), path)
    return path


def test_resnet18_loads_the_backbone_and_gets_a_new_two_class_head(
    imagenet_like_weights: Path,
) -> None:
    pretrained = torch.load(imagenet_like_weights, weights_only=True)
    model = build_model("resnet18", 64, pretrained_weights=imagenet_like_weights)
    assert torch.equal(
        model.state_dict()["layer4.1.conv2.weight"], pretrained["layer4.1.conv2.weight"]
    )
    assert model.fc.out_features == 2
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_frozen_backbone_trains_only_the_head(imagenet_like_weights: Path) -> None:
    model = build_model(
        "resnet18", 64, pretrained_weights=imagenet_like_weights, freeze_backbone=True
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    set_training(model)  # what the trainer does: frozen batch-norm layers stay in eval mode
    loss = F.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # no batch-norm statistics moved either


def test_bad_pretrained_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CondormlError, match="no such file"):
        build_model("resnet18", 64, pretrained_weights=tmp_path / "missing.pth")
    other = tmp_path / "cnn.pth"
    torch.save(build_model("cnn", 224).state_dict(), other)
    with pytest.raises(CondormlError, match="not weights of resnet18"):
        build_model("resnet18", 64, pretrained_weights=other)
    with pytest.raises(CondormlError, match="--freeze-backbone needs --pretrained-weights"):
        build_model("resnet18", 64, freeze_backbone=True)
