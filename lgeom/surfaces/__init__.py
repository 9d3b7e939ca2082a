"""Loss surfaces: the plane through three points (``plane``, in ``three_point_plane``), filter-normalised 1-D/2-D slices
(``slices``) and the PCA plane of a training trajectory (``pca``).

Names are resolved lazily from the submodules listed in ``_EXPORTS`` so each part can be imported on its
own.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule of lgeom.surfaces
_EXPORTS: dict[str, str] = {
    "plane": "three_point_plane",
    "PlaneResult": "three_point_plane",
    "plane_basis": "three_point_plane",
    "PlaneBasis": "three_point_plane",
    "slice_1d": "slices",
    "slice_2d": "slices",
    "SliceResult": "slices",
    "grid_losses": "slices",
    "pca_plane": "pca",
    "PCAPlaneResult": "pca",
    "pca_directions": "pca",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"lgeom.surfaces.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'lgeom.surfaces' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
