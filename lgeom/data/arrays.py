"""In-memory datasets: inputs and labels as two tensors (the form every synthetic set and sklearn's digits take)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from lgeom._checks import expected


class ArrayDataset(Dataset):
    """Inputs and integer labels held as two tensors, with ``num_classes`` and ``in_shape``."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int, name: str = "") -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise expected("targets", f"{inputs.shape[0]} labels (one per input)", targets.shape[0])
        self.inputs = inputs
        self.targets = targets.long()
        self.num_classes = int(num_classes)
        self.in_shape = tuple(inputs.shape[1:])
        self.name = name

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]

    def subset(self, indices: torch.Tensor) -> ArrayDataset:
        """A new dataset holding the samples at ``indices``."""
        return ArrayDataset(self.inputs[indices], self.targets[indices], self.num_classes, self.name)

    def to(self, device: torch.device | str) -> ArrayDataset:
        """A copy with both tensors on ``device`` (loaders then yield batches already there)."""
        return ArrayDataset(self.inputs.to(device), self.targets.to(device), self.num_classes, self.name)
