"""The Hessian of the loss: the operator (:mod:`.operator`) and one module per estimator.

* :mod:`~lgeom.hessian.operator` -- :class:`HessianOperator` (Hessian-vector products, three engines) and
  :func:`hvp`;
* :mod:`~lgeom.hessian.lanczos` -- top eigenvalues by Lanczos; :mod:`~lgeom.hessian.block_lanczos` -- by
  block Lanczos (several vectors per pass); :mod:`~lgeom.hessian.power` -- by power iteration;
  :mod:`~lgeom.hessian.eigen` -- :func:`top_eigenvalues` at a model point with any of them;
* :mod:`~lgeom.hessian.trace` -- Hutchinson / Hutch++ trace; :mod:`~lgeom.hessian.density` -- spectral
  density by stochastic Lanczos quadrature.

Estimators take any :class:`SymmetricOperator` (``size``, ``dtype``, ``device``, ``n_products``, ``matmat``);
the model-level functions build the operator at a point under the BN policy and call them. Units:
eigenvalues and the trace are in nats per squared parameter unit (the loss is in nats).

The package attribute ``trace`` is the function :func:`trace`, which shadows its module: take the module's
other names with ``from lgeom.hessian.trace import ...``.
"""

from lgeom.hessian.block_lanczos import block_lanczos_eigenvalues
from lgeom.hessian.density import Density, slq_density, spectral_density
from lgeom.hessian.eigen import EIGEN_METHODS, top_eigenvalues
from lgeom.hessian.lanczos import EigenResult, lanczos_eigenvalues
from lgeom.hessian.operator import ENGINES, HessianOperator, SymmetricOperator, hvp
from lgeom.hessian.power import power_eigenvalues
from lgeom.hessian.trace import TRACE_METHODS, TraceResult, hutchinson_trace, trace

__all__ = [
    "EIGEN_METHODS",
    "ENGINES",
    "TRACE_METHODS",
    "Density",
    "EigenResult",
    "HessianOperator",
    "SymmetricOperator",
    "TraceResult",
    "block_lanczos_eigenvalues",
    "hutchinson_trace",
    "hvp",
    "lanczos_eigenvalues",
    "power_eigenvalues",
    "slq_density",
    "spectral_density",
    "top_eigenvalues",
    "trace",
]
