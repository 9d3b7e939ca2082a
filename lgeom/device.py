"""Device resolution: done once by the caller; library code takes the device from its tensors."""

from __future__ import annotations

import torch

from lgeom._checks import expected


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device.

    Raises:
        ValueError: for an unknown spec, or a CUDA device asked for where none is available.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if isinstance(spec, str) and (spec == "cuda" or spec.startswith("cuda:")):
        if not torch.cuda.is_available():
            raise expected("device", "'auto' or 'cpu' (no CUDA device is available here)", spec)
        return torch.device(spec)
    raise expected("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", spec)
