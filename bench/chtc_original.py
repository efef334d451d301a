"""The CHTC cat/dog example's data pipeline, as published, for the benchmarks to compare against.

Source: iross/cat_dog_classifier (``train.py``, ``infer.py``), summarised in
``shared/reference/htcondor.md`` section 8. Its model is condorml's ``CatAndDogConvNet``.
"""

from __future__ import annotations

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

# Resize every image to 224 x 224 (aspect ratio ignored), to a tensor, to [-1, 1].
TRANSFORM = transforms.Compose(
    [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]
)


class CatDogDataset(Dataset):
    """train.py's dataset: PIL decode and transform per item; label 0 if 'cat' is in the path."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        return TRANSFORM(Image.open(path).convert("RGB")), 0 if "cat" in path else 1


class InferDataset(CatDogDataset):
    """infer.py's dataset: every file is an image; the id is the name before the first dot."""

    def __getitem__(self, index: int):
        path = self.paths[index]
        return TRANSFORM(Image.open(path).convert("RGB")), path.split("/")[-1].split(".")[0]
