"""Device resolution: ``auto``, ``cpu``, ``cuda`` where there is CUDA, and unknown specs refused."""

from __future__ import annotations

import pytest
import torch

from lgeom.device import resolve_device


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match=r"device: expected 'auto' or 'cpu' \(no CUDA device is available here\), got 'cuda:0'"
        ):
            resolve_device("cuda:0")


@pytest.mark.parametrize("spec", ["", "CPU", "gpu", "cuda0", None, 0])
def test_other_specs_are_refused(spec: object) -> None:
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(spec)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_specs_where_there_is_cuda() -> None:
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda:0")
