"""The Hessian of the loss: Hessian-vector products, top eigenvalues, trace and spectral density.

The loss is the metric contract's (DESIGN.md): mean cross-entropy over the given data, sums weighted by
batch size, no weight decay, w.r.t. all trainable parameters, the model in eval mode with the given buffers
(BN policy: pass the trained ``buffers`` at a trained endpoint; at any other point pass ``bn_batches`` to
recompute the statistics there, or ``buffers=recompute_bn_stats(...)``; ``params`` without either gets
statistics recomputed on ``data``, never the module's stored ones, see :class:`HessianOperator`). ``data``
may be a map-style ``Dataset`` (read in batches of :data:`lgeom.data.EVAL_BATCH_SIZE`).

Two layers:

* :class:`HessianOperator` turns ``(model, data, params, buffers)`` into a symmetric linear operator on flat
  parameter vectors (``matmat`` takes ``(m, P)`` rows). ``engine="forward"`` is forward-over-reverse
  (``torch.func.jvp`` over ``torch.func.grad``), several vectors per pass over the data (vmapped where that
  is faster), memory of one batch; it recomputes the primal forward and backward for every product (about
  3.5x a gradient on a conv net, more for tiny models where per-op overhead dominates). ``engine="cached"``
  builds each batch's gradient graph once and applies Pearlmutter's double backward to it for every
  product (about 2.5x a gradient), holding every batch's graph in memory. ``engine="auto"`` (the default
  of the estimators) measures the first batch's graph and caches when all of them fit a memory budget.
  Both evaluate eval-mode BatchNorm as its affine map (:class:`lgeom.gradients.EvalBatchNormAsAffine`).
  Measurements: ``bench/hessian.py``, ``bench/RESULTS.md``.
* Estimators on any such operator (``size``, ``dtype``, ``device``, ``matmat``): :func:`lanczos_eigenvalues`,
  :func:`power_eigenvalues`, :func:`hutchinson_trace`, :func:`slq_density`. The model-level functions
  :func:`top_eigenvalues`, :func:`trace` and :func:`spectral_density` build the operator and call them.

Units: eigenvalues and the trace are in nats per squared parameter unit (the loss is in nats).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.linalg
import torch
from torch import nn
from torch.func import grad as func_grad
from torch.func import jvp, vmap

from lgeom._checks import check_choice, check_positive, check_positive_int, expected
from lgeom.evaluate import recompute_bn_stats
from lgeom.gradients import Objective
from lgeom.params import Params
from lgeom.progress import Callback, ProgressEvent, emit, resolve_callbacks

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
ENGINES = ("auto", "forward", "cached")
EIGEN_METHODS = ("lanczos", "power")
TRACE_METHODS = ("hutchinson", "hutch++")

__all__ = [
    "Density",
    "EigenResult",
    "HessianOperator",
    "SymmetricOperator",
    "TraceResult",
    "hutchinson_trace",
    "hvp",
    "lanczos_eigenvalues",
    "power_eigenvalues",
    "slq_density",
    "spectral_density",
    "top_eigenvalues",
    "trace",
]


class SymmetricOperator(Protocol):
    """A symmetric linear map on vectors of ``size`` scalars, applied to ``(m, size)`` rows at once."""

    size: int
    dtype: torch.dtype
    device: torch.device
    n_products: int

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``A v`` for every row ``v`` of ``vectors`` (shape ``(m, size)``), as ``(m, size)``."""
        ...


# --- the operator -------------------------------------------------------------------------------------------


class HessianOperator:
    """The Hessian of the loss over ``data`` at ``params`` as a linear operator on flat vectors.

    Args:
        model: the architecture (not mutated; evaluated in eval mode).
        data: ``(inputs, targets)`` batches, materialised once on the parameters' device.
        params: the parameter point (default: the model's own).
        buffers: BatchNorm statistics to use as given (the caller applied the BN policy).
        bn_batches: training batches (or a ``Dataset``) on which to recompute the BatchNorm statistics at
            ``params`` (the BN policy for a point that is not a trained endpoint).
        engine: ``"forward"`` (forward-over-reverse, memory of one batch), ``"cached"`` (each batch's
            gradient graph is built once and kept; every product is one double-backward pass) or ``"auto"``
            (``"cached"`` when the graphs of all batches, estimated from the first one's saved tensors, fit
            ``memory_budget``; else ``"forward"``).
        vectorize: apply several vectors per batch with ``torch.func.vmap`` (forward engine). ``None``:
            only for models without convolutions (vmap over convolution backward's forward-mode formula is
            slower than a loop in torch 2.14 on the CPU).
        chunk_size: vectors applied together per batch when vectorised.
        memory_budget: bytes the ``"auto"`` engine may hold in graphs (default: half the free CUDA memory, or
            a quarter of the available RAM, at most 8 GiB).

    BN policy, for a model with BatchNorm (statistics in ``objective.buffers``, source in ``bn_source``):

    * ``bn_batches`` given: statistics recomputed at ``params`` on them (``"recomputed"``);
    * else ``buffers`` given: used as they are (``"given"``);
    * else ``params`` given: not the model's own point, so its stored statistics do not belong to it; they
      are recomputed at ``params`` on ``data`` (``"recomputed"``), as :func:`lgeom.probes.probe_point` does;
    * else: the model's own point with its own (trained) statistics (``"model"``).

    Attributes:
        engine: the engine in use (``"auto"`` resolved).
        bn_source: where the BatchNorm statistics come from (``"recomputed"``, ``"given"``, ``"model"``;
            ``None`` for a model without BatchNorm).
        size, dtype, device: of the flat parameter vector.
        n_products: Hessian-vector products applied so far (one per vector, whatever the batching).
        objective: the underlying :class:`~lgeom.gradients.Objective`.

    Raises:
        ValueError: empty data, an unknown engine, a bad chunk size.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Batches,
        *,
        params: Mapping[str, torch.Tensor] | None = None,
        buffers: Mapping[str, torch.Tensor] | None = None,
        bn_batches: Batches | None = None,
        engine: str = "forward",
        vectorize: bool | None = None,
        chunk_size: int = 16,
        memory_budget: int | None = None,
    ) -> None:
        check_choice("engine", engine, ENGINES)
        check_positive_int("chunk_size", chunk_size)
        self.objective = Objective(model, data, params=params, buffers=buffers)
        self.bn_source: str | None = None
        if self.objective.has_batchnorm:
            if bn_batches is not None or (params is not None and buffers is None):
                source = self.objective.batches if bn_batches is None else bn_batches
                self.objective.buffers = recompute_bn_stats(model, self.objective.params, source, buffers=buffers)
                self.bn_source = "recomputed"
            else:
                self.bn_source = "given" if buffers is not None else "model"
        self.engine = engine
        self.size = self.objective.size
        self.dtype = self.objective.dtype
        self.device = self.objective.device
        self.chunk_size = chunk_size
        if vectorize is None:
            vectorize = not any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        self.vectorize = bool(vectorize)
        self.n_products = 0
        self._graphs: list[tuple[list[torch.Tensor], list[int]]] = []
        self._leaves: list[torch.Tensor] | None = None
        if engine == "auto":
            self.engine = self._choose_engine(memory_budget)

    def __repr__(self) -> str:
        return f"HessianOperator(size={self.size}, engine={self.engine!r}, samples={self.objective.n_samples})"

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``H v`` for one flat vector ``v`` (shape ``(size,)``)."""
        return self.matmat(vector.reshape(1, -1))[0]

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H v`` for every row of ``vectors`` (``(m, size)``), in one pass over the data.

        Raises:
            ValueError: rows of the wrong length.
        """
        if vectors.dim() != 2 or vectors.shape[1] != self.size:
            raise expected("vectors", f"an (m, {self.size}) tensor", tuple(vectors.shape))
        vectors = vectors.to(self.device, self.dtype)
        out = self._cached(vectors) if self.engine == "cached" else self._forward(vectors)
        self.n_products += int(vectors.shape[0])
        return out / self.objective.n_samples

    def __matmul__(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.matvec(vectors) if vectors.dim() == 1 else self.matmat(vectors)

    # The sums over batches are of summed (not averaged) losses; matmat divides by N once.
    def _forward(self, vectors: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        layout = obj.layout
        grad_fn = func_grad(obj.batch_loss_sum)
        out = torch.zeros_like(vectors)
        m = vectors.shape[0]
        with obj.eval_mode():
            for xb, yb in obj.batches:

                def gradient(p: Params, xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> Params:
                    return grad_fn(p, xb, yb)

                if self.vectorize and m > 1:
                    for lo in range(0, m, self.chunk_size):
                        block = vectors[lo : lo + self.chunk_size]
                        tangents = {
                            n: part.reshape(block.shape[0], *shape)
                            for n, part, shape in zip(layout.names, torch.split(block, list(layout.numels), dim=1), layout.shapes)
                        }
                        hv = vmap(lambda t: jvp(gradient, (obj.params,), (t,))[1])(tangents)
                        out[lo : lo + block.shape[0]] += torch.cat([hv[n].reshape(block.shape[0], -1) for n in layout.names], dim=1)
                else:
                    for i in range(m):
                        hv = jvp(gradient, (obj.params,), (layout.unflatten(vectors[i]),))[1]
                        out[i] += layout.flatten(hv)
        return out

    def _build_graph(self, index: int) -> None:
        obj = self.objective
        if self._leaves is None:
            self._leaves = [obj.params[n].detach().requires_grad_(True) for n in obj.layout.names]
        xb, yb = obj.batches[index]
        with obj.eval_mode():
            loss = obj.batch_loss_sum(dict(zip(obj.layout.names, self._leaves)), xb, yb)
            grads = torch.autograd.grad(loss, self._leaves, create_graph=True, allow_unused=True)
        # Gradient blocks that do not depend on the parameters contribute nothing to H v.
        used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self._graphs.append(([grads[i] for i in used], used))  # type: ignore[misc]

    def _choose_engine(self, budget: int | None) -> str:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return t

        if self.device.type == "cuda":
            before = torch.cuda.memory_allocated(self.device)
            self._build_graph(0)
            used = torch.cuda.memory_allocated(self.device) - before
        else:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                self._build_graph(0)
            used = sum(seen.values())
        first = int(self.objective.batches[0][1].shape[0])
        estimate = used * self.objective.n_samples / first
        if estimate <= (budget if budget is not None else _memory_budget(self.device)):
            return "cached"
        self.release()
        return "forward"

    def _cached(self, vectors: torch.Tensor) -> torch.Tensor:
        while len(self._graphs) < len(self.objective.batches):
            self._build_graph(len(self._graphs))
        assert self._leaves is not None
        out = torch.zeros_like(vectors)
        numels = list(self.objective.layout.numels)
        shapes = self.objective.layout.shapes
        for grads, used in self._graphs:
            for i in range(vectors.shape[0]):
                parts = [p.view(s) for p, s in zip(torch.split(vectors[i], numels), shapes)]
                hv = torch.autograd.grad(grads, self._leaves, [parts[j] for j in used], retain_graph=True, allow_unused=True)
                out[i] += torch.cat([(h if h is not None else torch.zeros(s, dtype=self.dtype, device=self.device)).reshape(-1)
                                     for h, s in zip(hv, shapes)])
        return out

    def release(self) -> None:
        """Free the cached gradient graphs (the ``"cached"`` engine rebuilds them on the next product)."""
        self._graphs, self._leaves = [], None


def _memory_budget(device: torch.device) -> int:
    """Bytes the ``"auto"`` engine may spend on cached graphs on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 8 * 2**30
    return int(min(available // 4, 8 * 2**30))


def hvp(
    model: nn.Module,
    data: Batches,
    v: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
) -> torch.Tensor | Params:
    """Hessian-vector product(s) of the loss over ``data``, forward-over-reverse.

    Args:
        model: the architecture (not mutated; eval mode).
        data: ``(inputs, targets)`` batches.
        v: one flat vector ``(P,)``, several as rows ``(m, P)`` (all applied in one pass over the data), or a
            parameter dict.
        params, buffers, bn_batches: the point and its BatchNorm statistics, as in :class:`HessianOperator`
            (a BN model at ``params`` without ``buffers`` gets statistics recomputed there).

    Returns:
        ``H v`` in the form of ``v`` (flat, rows, or a dict), in nats per squared parameter unit.

    Raises:
        ValueError: empty data or vectors of the wrong size.
    """
    op = HessianOperator(model, data, params=params, buffers=buffers, bn_batches=bn_batches)
    if isinstance(v, Mapping):
        return op.objective.layout.unflatten(op.matvec(op.objective.layout.flatten(v)))
    return op @ v


# --- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EigenResult:
    """Top eigenvalues of a symmetric operator.

    Attributes:
        values: the ``k`` largest algebraic eigenvalues, descending (float64).
        converged: per value, whether its residual met the tolerance.
        residuals: per value, ``||H v - lambda v||`` of its (Ritz) vector.
        error_bounds: per value, an estimate of ``|lambda - true eigenvalue|``: ``min(r, r^2 / gap)`` for
            Lanczos with ``gap`` the distance to the nearest other Ritz value (it can be optimistic inside a
            cluster not yet resolved), the residual ``r`` for power iteration.
        n_hvp: Hessian-vector products used.
        n_iter: iterations (Lanczos steps, or power iterations over all values).
        method: ``"lanczos"`` or ``"power"``.
        vectors: ``(k, P)`` unit eigenvectors (rows) when asked for, else ``None``.
    """

    values: np.ndarray
    converged: np.ndarray
    residuals: np.ndarray
    error_bounds: np.ndarray
    n_hvp: int
    n_iter: int
    method: str
    vectors: torch.Tensor | None = None

    @property
    def lambda_max(self) -> float:
        """The largest eigenvalue."""
        return float(self.values[0])

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (without vectors)."""
        return {
            "eigenvalues": self.values.tolist(),
            "converged": self.converged.tolist(),
            "residuals": self.residuals.tolist(),
            "error_bounds": self.error_bounds.tolist(),
            "n_hvp": self.n_hvp,
            "n_iter": self.n_iter,
            "method": self.method,
        }


@dataclass(frozen=True)
class TraceResult:
    """Stochastic trace estimate.

    Attributes:
        mean: the estimate of ``tr(H)``.
        stderr: its standard error (NaN with fewer than two random samples).
        n_probes: Hessian-vector products spent.
        method: ``"hutchinson"`` or ``"hutch++"``.
        samples: the random quadratic forms ``z^T H z`` (Hutch++: of the deflated residual).
    """

    mean: float
    stderr: float
    n_probes: int
    method: str = "hutchinson"
    samples: np.ndarray | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {"mean": self.mean, "stderr": self.stderr, "n_probes": self.n_probes, "method": self.method}


@dataclass(frozen=True)
class Density:
    """Smoothed spectral density from stochastic Lanczos quadrature.

    Attributes:
        grid: eigenvalue axis (nats per squared parameter unit).
        density: values on ``grid``, normalised so that the trapezoid integral is 1.
        nodes: ``(n_runs, steps)`` Ritz values of each run (NaN-padded when a run stopped early).
        weights: matching quadrature weights (each run's sum to 1).
        sigma: Gaussian kernel width.
        n_hvp: Hessian-vector products used.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    n_hvp: int

    def integral(self) -> float:
        """Trapezoid integral of the density over the grid (1 up to rounding)."""
        return float(np.trapezoid(self.density, self.grid))

    def mean(self) -> float:
        """Mean eigenvalue under the density (estimates ``tr(H) / P``)."""
        return float(np.trapezoid(self.grid * self.density, self.grid) / self.integral())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "nodes": [[v for v in row if np.isfinite(v)] for row in self.nodes.tolist()],
            "weights": [[w for w in row if np.isfinite(w)] for row in self.weights.tolist()],
            "sigma": self.sigma,
            "n_hvp": self.n_hvp,
        }


# --- Lanczos -----------------------------------------------------------------------------------------------


def _random_vectors(rows: int, size: int, generator: torch.Generator, op: SymmetricOperator, kind: str = "gaussian") -> torch.Tensor:
    if kind == "rademacher":
        z = torch.randint(0, 2, (rows, size), generator=generator, dtype=torch.int8).to(torch.float64) * 2 - 1
    else:
        z = torch.randn(rows, size, generator=generator, dtype=torch.float64)
    return z.to(op.device, op.dtype)


def _breakdown_tol(dtype: torch.dtype) -> float:
    return 100.0 * torch.finfo(dtype).eps


def _lanczos_runs(
    op: SymmetricOperator,
    starts: torch.Tensor,
    max_steps: int,
    *,
    generator: torch.Generator,
    restart: bool,
    should_stop: Callable[[np.ndarray, np.ndarray, int, bool], bool] | None = None,
    callbacks: Sequence[Callback] = (),
    task: str = "lanczos",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """Run ``r`` Lanczos processes in lockstep (one ``matmat`` of their current vectors per step).

    Full reorthogonalisation (twice) against each run's own basis. At an invariant subspace (tiny
    ``beta``) a run either restarts from a fresh random vector orthogonal to its basis (``beta = 0``
    there, so ``T`` becomes block diagonal) or stops.

    Returns:
        ``(alphas (r, m), betas (r, m), lengths (r,), basis (r, m, P))``; ``betas[i, j]`` couples steps
        ``j`` and ``j + 1`` of run ``i``.
    """
    r, n = starts.shape
    q = starts / starts.norm(dim=1, keepdim=True)
    # The basis grows in blocks: memory follows the steps actually taken, not max_steps.
    basis = torch.zeros(r, min(max_steps, 32), n, dtype=op.dtype, device=op.device)
    alphas = np.zeros((r, max_steps))
    betas = np.zeros((r, max_steps))
    lengths = np.zeros(r, dtype=int)
    active = np.ones(r, dtype=bool)
    scale = 0.0
    emit(callbacks, ProgressEvent(task, "start", 0, max_steps))
    for j in range(max_steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        sel = torch.as_tensor(idx, device=op.device)
        if j == basis.shape[1]:
            grow = torch.zeros(r, min(basis.shape[1], max_steps - j), n, dtype=op.dtype, device=op.device)
            basis = torch.cat([basis, grow], dim=1)
        basis[sel, j] = q[sel]
        w = op.matmat(q[sel])
        a = (w.double() * q[sel].double()).sum(dim=1)
        w = w - a.to(w.dtype)[:, None] * q[sel]
        prev = basis[sel, : j + 1]
        for _ in range(2):
            w = w - torch.einsum("ajn,aj->an", prev, torch.einsum("ajn,an->aj", prev, w))
        b = w.double().norm(dim=1).cpu().numpy()
        alphas[idx, j] = a.cpu().numpy()
        lengths[idx] = j + 1
        scale = max(scale, float(np.abs(alphas[idx, j]).max()), float(b.max()))
        broke = False
        for row, i in enumerate(idx):
            if b[row] > _breakdown_tol(op.dtype) * max(scale, 1e-30):
                betas[i, j] = b[row]
                q[i] = w[row] / float(b[row])
            elif restart and j + 1 < n:
                broke = True
                fresh = _random_vectors(1, n, generator, op)[0]
                for _ in range(2):
                    fresh = fresh - basis[i, : j + 1].T @ (basis[i, : j + 1] @ fresh)
                q[i] = fresh / fresh.norm()
            else:
                active[i] = False
        emit(callbacks, ProgressEvent(task, "step", j + 1, max_steps))
        if should_stop is not None and should_stop(alphas, betas, j + 1, broke):
            break
    emit(callbacks, ProgressEvent(task, "end", int(lengths.max()), max_steps))
    return alphas, betas, lengths, basis


def _ritz(alphas: np.ndarray, betas: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the ``m x m`` tridiagonal matrix of one run."""
    if m == 1:
        return alphas[:1].copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(alphas[:m], betas[: m - 1])


def _check_k(k: int, size: int) -> None:
    check_positive_int("k", k)
    if k > size:
        raise expected("k", f"at most the number of parameters ({size})", k)


def _default_max_iter(k: int, size: int) -> int:
    return min(size, max(100, 20 * k))


def lanczos_eigenvalues(
    op: SymmetricOperator,
    k: int = 5,
    *,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    confirm: bool = False,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = False,
) -> EigenResult:
    """The ``k`` largest algebraic eigenvalues of a symmetric operator by Lanczos with full reorthogonalisation.

    The Krylov space grows one product at a time until each of the top ``k`` Ritz pairs ``(theta, y)`` has
    residual ``r = ||A y - theta y|| <= tol * |theta|`` (an eigenvalue of ``A`` lies within ``r`` of ``theta``;
    once the pair is isolated the error is about ``r^2 / gap``, far smaller: Parlett, The Symmetric
    Eigenvalue Problem, ch. 11), or ``max_iter`` steps. So ``tol`` is a relative accuracy each eigenvalue
    meets with room to spare (values below ``1e-6`` of the spectral-norm estimate are held to
    ``tol * 1e-6 * max|theta|``). Memory: one basis vector of ``P`` scalars per step taken.

    Multiplicity: a Krylov space grown from one start vector holds a single direction of each eigenspace, so
    a copy of an exactly repeated eigenvalue is missed (spectrum ``4, 4, 3, 2, ...`` with ``k = 3`` gives
    ``4, 3, 2``, every value "converged"), and a nearly repeated one is found late. ``confirm=True`` guards
    against this: once the top ``k`` have converged, Lanczos runs again from a fresh random vector on the
    operator deflated by the ``k`` Ritz vectors (``P A P`` with ``P = I - V V^T``, the span of ``V`` moved far
    below the spectrum); while its top value exceeds the current ``k``-th by more than ``tol`` relative, it
    is inserted (vector added to ``V``) and the check repeats. Each check costs about as many products as
    converging one more eigenvalue: on a 67-parameter MLP (``tests/lgeom/probe_cases.py``), ``k = 5``,
    ``tol = 1e-3``, seeds 0-2, 22-25 products plain and 43-47 with the check (``k = 6``: 26-29 and 42-46),
    roughly doubling the cost, hence off by default.

    Args:
        op: the operator (``HessianOperator`` or anything with ``size``, ``dtype``, ``device``, ``matmat``).
        k: how many eigenvalues.
        tol: relative residual per eigenpair (bounds the relative eigenvalue error).
        max_iter: Lanczos steps at most (default ``min(P, max(100, 20 k))``).
        seed: seeds the start vector (and restart vectors).
        return_vectors: also return the Ritz vectors.
        confirm: after convergence, check the deflated operator for eigenvalues a single Krylov space
            missed (repeated eigenvalues), as described above. ``n_hvp`` and ``n_iter`` include the checks.
        callbacks, progress: progress reporting (task ``"lanczos"``); ``progress`` adds a tqdm bar.

    Returns:
        :class:`EigenResult` (values descending; ``converged`` False where ``max_iter`` ran out first).

    Raises:
        ValueError: ``k`` not in ``1..P``, ``tol <= 0``, ``max_iter < k``.
    """
    _check_k(k, op.size)
    check_positive("tol", tol)
    m_max = _default_max_iter(k, op.size) if max_iter is None else max_iter
    check_positive_int("max_iter", m_max)
    if m_max < k:
        raise expected("max_iter", f"at least k = {k} Lanczos steps", m_max)
    m_max = min(m_max, op.size)
    gen = torch.Generator().manual_seed(seed)
    start_products = op.n_products

    def converged_top(alphas: np.ndarray, betas: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
        theta, s = _ritz(alphas[0], betas[0], m)
        order = np.argsort(theta)[::-1][:k]
        res = np.abs(betas[0, m - 1]) * np.abs(s[-1, order]) if m < op.size else np.zeros(len(order))
        others = np.abs(theta[order][:, None] - theta[None, :])
        others[np.arange(len(order)), order] = np.inf
        gap = others.min(axis=1) if m > 1 else np.full(len(order), np.inf)
        bound = np.minimum(res, np.divide(res**2, gap, out=np.full_like(res, np.inf), where=gap > 0))
        floor = 1e-6 * max(float(np.abs(theta).max()), 1e-300)
        ok = res <= tol * np.maximum(np.abs(theta[order]), floor)
        return theta[order], s[:, order], res, bound, ok

    def stop(alphas: np.ndarray, betas: np.ndarray, m: int, broke: bool) -> bool:
        # Right after a restart the new direction is unexplored: the top k may still lie there.
        if m < k or broke:
            return False
        return bool(converged_top(alphas, betas, m)[4].all())

    cbs = resolve_callbacks(callbacks, progress, "lanczos")
    start = _random_vectors(1, op.size, gen, op)
    alphas, betas, lengths, basis = _lanczos_runs(op, start, m_max, generator=gen, restart=True, should_stop=stop, callbacks=cbs)
    m = int(lengths[0])
    values, s, res, bound, ok = converged_top(alphas, betas, m)
    vectors = None
    if return_vectors or (confirm and bool(ok.all()) and k < op.size):
        vectors = torch.as_tensor(s.T, dtype=op.dtype, device=op.device) @ basis[0, :m]
    if confirm and bool(ok.all()) and k < op.size:
        assert vectors is not None
        values, vectors, res, bound, ok, extra = _confirm_top(op, k, values, vectors, res, bound, ok, tol=tol, seed=seed)
        m += extra
    return EigenResult(values.astype(np.float64), ok, res, bound, op.n_products - start_products, m, "lanczos",
                       vectors if return_vectors else None)


class _DeflatedOperator:
    """``P A P - shift V^T V`` with ``P = I - V^T V`` for orthonormal rows ``V``: ``A`` on the complement of
    ``span(V)``, with ``span(V)`` moved to eigenvalue ``-shift`` (below the spectrum, so it is never on top)."""

    def __init__(self, op: SymmetricOperator, basis: torch.Tensor, shift: float) -> None:
        self.op, self.basis, self.shift = op, basis, shift
        self.size, self.dtype, self.device = op.size, op.dtype, op.device
        self.n_products = 0

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        coeff = vectors @ self.basis.T
        out = self.op.matmat(vectors - coeff @ self.basis)
        out = out - (out @ self.basis.T) @ self.basis - self.shift * (coeff @ self.basis)
        self.n_products += int(vectors.shape[0])
        return out


def _confirm_top(
    op: SymmetricOperator,
    k: int,
    values: np.ndarray,
    vectors: torch.Tensor,
    res: np.ndarray,
    bound: np.ndarray,
    ok: np.ndarray,
    *,
    tol: float,
    seed: int,
) -> tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, int]:
    """Insert eigenvalues that the single-vector Krylov space missed (see :func:`lanczos_eigenvalues`).

    Returns the top ``k`` ``(values, vectors, residuals, bounds, converged)`` after the checks and the
    Lanczos steps they took.
    """
    vals, vecs = [float(v) for v in values], [v for v in vectors]
    info = [(float(r), float(b), bool(c)) for r, b, c in zip(res, bound, ok)]
    steps, round_ = 0, 0
    while len(vecs) < op.size:
        round_ += 1
        basis = torch.linalg.qr(torch.stack(vecs).T.double()).Q.T.to(op.dtype)
        scale = max(abs(v) for v in vals)
        deflated = _DeflatedOperator(op, basis, 2.0 * scale if scale > 0 else 1.0)
        sub = lanczos_eigenvalues(deflated, 1, tol=tol, seed=seed + 7919 * round_, return_vectors=True)
        steps += sub.n_iter
        kth = sorted(vals, reverse=True)[k - 1]
        floor = 1e-6 * max(scale, 1e-300)
        if not sub.values[0] > kth + tol * max(abs(kth), floor):
            break
        assert sub.vectors is not None
        vals.append(float(sub.values[0]))
        vecs.append(sub.vectors[0])
        info.append((float(sub.residuals[0]), float(sub.error_bounds[0]), bool(sub.converged[0])))
    order = np.argsort(np.asarray(vals))[::-1][:k]
    return (
        np.asarray(vals)[order],
        torch.stack([vecs[i] for i in order]),
        np.asarray([info[i][0] for i in order]),
        np.asarray([info[i][1] for i in order]),
        np.asarray([info[i][2] for i in order]),
        steps,
    )


# --- power iteration --------------------------------------------------------------------------------------


def _power_one(
    op: SymmetricOperator,
    shift: float,
    deflate: list[torch.Tensor],
    start: torch.Tensor,
    tol: float,
    max_iter: int,
    scale: float,
) -> tuple[float, torch.Tensor, bool, float, int]:
    """Power iteration on ``(A - shift I)`` restricted to the complement of ``deflate``.

    Returns ``(theta, v, converged, residual, iterations)`` with ``theta`` the Rayleigh quotient of ``A - shift I``.
    """
    basis = torch.stack(deflate) if deflate else None

    def project(x: torch.Tensor) -> torch.Tensor:
        if basis is not None:
            for _ in range(2):
                x = x - basis.T @ (basis @ x)
        return x

    v = project(start)
    v = v / v.norm()
    theta, res, it = 0.0, math.inf, 0
    for it in range(1, max_iter + 1):
        w = project(op.matmat(v[None])[0] - shift * v)
        theta = float(torch.dot(w.double(), v.double()))
        res = float((w - theta * v).double().norm())
        norm_w = float(w.double().norm())
        if res <= tol * max(scale, abs(theta + shift), 1e-30) or norm_w == 0.0:
            return theta, v, True, res, it
        v = w / norm_w
    return theta, v, False, res, it


def power_eigenvalues(
    op: SymmetricOperator,
    k: int = 5,
    *,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = False,
) -> EigenResult:
    """The ``k`` largest algebraic eigenvalues by deflated power iteration.

    Power iteration finds eigenvalues in order of magnitude. Deflation proceeds on ``A`` while the values
    found are non-negative: any value still unfound is smaller in magnitude, so those found are the largest
    algebraic ones. The first negative value found is the smallest eigenvalue ``lambda_min``; from then on
    the iteration runs on the shifted operator ``A - lambda_min I`` (positive semi-definite, same eigenvectors,
    order by magnitude = algebraic order), which converges more slowly but returns the right values.

    Args:
        op: the operator.
        k: how many eigenvalues.
        tol: relative residual tolerance per eigenpair (``||A v - theta v|| <= tol * max|theta|``).
        max_iter: iterations per eigenvalue (default: 100 on ``A``, 1000 once shifted: the shifted operator's
            ratio of neighbouring eigenvalues ``(lambda_{i+1} - lambda_min) / (lambda_i - lambda_min)`` is close
            to 1, e.g. 0.974 for the sixth value of a 67-parameter MLP, which needs ~260 iterations for
            ``tol = 1e-3``). Iteration stops as soon as the residual meets ``tol``; ``converged`` says whether
            it did.
        seed: seeds the start vectors.
        return_vectors, callbacks, progress: as in :func:`lanczos_eigenvalues` (task ``"power"``).

    Returns:
        :class:`EigenResult` with method ``"power"``.

    Raises:
        ValueError: ``k`` not in ``1..P``, ``tol <= 0``, bad ``max_iter``.
    """
    _check_k(k, op.size)
    check_positive("tol", tol)
    iters = 100 if max_iter is None else max_iter
    check_positive_int("max_iter", iters)
    shifted_iters = 1000 if max_iter is None else max_iter
    gen = torch.Generator().manual_seed(seed)
    start_products = op.n_products
    cbs = resolve_callbacks(callbacks, progress, "power")
    emit(cbs, ProgressEvent("power", "start", 0, k))
    found: list[tuple[float, torch.Tensor, bool, float]] = []
    lowest: tuple[float, torch.Tensor, bool, float] | None = None
    deflate: list[torch.Tensor] = []
    shift, scale, total_it = 0.0, 0.0, 0
    while len(found) < k and len(deflate) < op.size:
        budget = iters if shift == 0.0 else shifted_iters
        theta, v, ok, res, it = _power_one(op, shift, deflate, _random_vectors(1, op.size, gen, op)[0], tol, budget, scale)
        total_it += it
        value = theta + shift
        scale = max(scale, abs(value))
        deflate.append(v)
        if lowest is None and shift == 0.0 and value < 0.0:
            lowest, shift = (value, v, ok, res), value
            continue
        found.append((value, v, ok, res))
        emit(cbs, ProgressEvent("power", "step", len(found), k, metrics={"lambda": value}))
    if len(found) < k and lowest is not None:
        found.append(lowest)
    emit(cbs, ProgressEvent("power", "end", len(found), k))
    found.sort(key=lambda f: -f[0])
    values = np.array([f[0] for f in found[:k]], dtype=np.float64)
    vectors = torch.stack([f[1] for f in found[:k]]) if return_vectors else None
    residuals = np.array([f[3] for f in found[:k]])
    return EigenResult(
        values,
        np.array([f[2] for f in found[:k]]),
        residuals,
        residuals,
        op.n_products - start_products,
        total_it,
        "power",
        vectors,
    )


# --- trace and density --------------------------------------------------------------------------------------


def hutchinson_trace(
    op: SymmetricOperator,
    n_probes: int = 32,
    *,
    seed: int = 0,
    method: str = "hutchinson",
    chunk_size: int = 8,
) -> TraceResult:
    """Stochastic estimate of ``tr(A)`` from Rademacher probes.

    ``"hutchinson"``: the mean of ``z^T A z`` over ``n_probes`` probes, standard error from their spread.
    ``"hutch++"`` (Meyer et al. 2021): a third of the products sketch the top range ``Q`` of ``A``, a third
    give ``tr(Q^T A Q)`` exactly, and the rest estimate the trace of the deflated remainder by Hutchinson
    (the standard error is that part's).

    Args:
        op: the operator.
        n_probes: products to spend (>= 3 for Hutch++).
        seed: seeds the probes.
        method: ``"hutchinson"`` or ``"hutch++"``.
        chunk_size: probes applied per pass over the data.

    Returns:
        :class:`TraceResult`.

    Raises:
        ValueError: bad ``n_probes`` or ``method``.
    """
    check_positive_int("n_probes", n_probes)
    check_choice("trace method", method, TRACE_METHODS)
    check_positive_int("chunk_size", chunk_size)
    gen = torch.Generator().manual_seed(seed)

    def apply(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([op.matmat(z[lo : lo + chunk_size]) for lo in range(0, z.shape[0], chunk_size)])

    def summarise(samples: np.ndarray, offset: float, used: int) -> TraceResult:
        stderr = float(samples.std(ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.nan
        return TraceResult(offset + float(samples.mean()), stderr, used, method, samples)

    if method == "hutchinson":
        z = _random_vectors(n_probes, op.size, gen, op, "rademacher")
        samples = (z.double() * apply(z).double()).sum(dim=1).cpu().numpy()
        return summarise(samples, 0.0, n_probes)
    if n_probes < 3:
        raise expected("n_probes", "at least 3 for hutch++", n_probes)
    s = min(n_probes // 3, op.size)
    sketch = apply(_random_vectors(s, op.size, gen, op, "rademacher"))
    q = torch.linalg.qr(sketch.double().T).Q  # (P, s) orthonormal basis of the sketched range
    exact = float((q * apply(q.T.to(op.dtype).contiguous()).double().T).sum())
    rest = n_probes - 2 * s
    if rest == 0:
        return TraceResult(exact, 0.0, 2 * s, method, np.zeros(0))
    z = _random_vectors(rest, op.size, gen, op, "rademacher").double()
    z = z - (z @ q) @ q.T
    samples = (z * apply(z.to(op.dtype)).double()).sum(dim=1).cpu().numpy()
    return summarise(samples, exact, n_probes)


def slq_density(
    op: SymmetricOperator,
    *,
    n_runs: int = 4,
    n_steps: int = 40,
    sigma: float | None = None,
    grid: int | Sequence[float] | np.ndarray = 500,
    seed: int = 0,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = False,
) -> Density:
    """Spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019; Lin et al. 2016).

    ``n_runs`` Lanczos processes from normalised Rademacher vectors run in lockstep (one pass over the data
    applies all runs' vectors); each yields Gauss quadrature nodes (Ritz values) and weights (squared first
    components of the Ritz vectors). The density is the average of Gaussians of width ``sigma`` at the
    nodes, normalised to integrate to 1 on the grid. Its mean estimates ``tr(A) / P``.

    Args:
        op: the operator.
        n_runs: independent runs (start vectors).
        n_steps: Lanczos steps per run (capped at ``P``).
        sigma: kernel width; default 1 % of the node range.
        grid: number of points spanning the nodes +- 5 sigma, or explicit eigenvalue positions.
        seed: seeds the start vectors.
        callbacks, progress: progress reporting (task ``"slq"``).

    Returns:
        :class:`Density`.

    Raises:
        ValueError: non-positive ``n_runs``, ``n_steps``, ``sigma`` or grid size.
    """
    check_positive_int("n_runs", n_runs)
    check_positive_int("n_steps", n_steps)
    if sigma is not None:
        check_positive("sigma", sigma)
    gen = torch.Generator().manual_seed(seed)
    start_products = op.n_products
    cbs = resolve_callbacks(callbacks, progress, "slq")
    starts = _random_vectors(n_runs, op.size, gen, op, "rademacher")
    steps = min(n_steps, op.size)
    alphas, betas, lengths, _ = _lanczos_runs(op, starts, steps, generator=gen, restart=False, callbacks=cbs, task="slq")
    nodes = np.full((n_runs, steps), np.nan)
    weights = np.full((n_runs, steps), np.nan)
    for i in range(n_runs):
        theta, s = _ritz(alphas[i], betas[i], int(lengths[i]))
        nodes[i, : len(theta)] = theta
        weights[i, : len(theta)] = s[0] ** 2
    finite = np.isfinite(nodes)
    lo, hi = float(nodes[finite].min()), float(nodes[finite].max())
    width = hi - lo
    if sigma is None:
        sigma = 0.01 * width if width > 0 else 1e-3 * max(abs(hi), 1.0)
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        check_positive_int("grid", int(grid))
        if grid < 2:
            raise expected("grid", "at least 2 points", grid)
        x = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(grid))
    else:
        x = np.asarray(grid, dtype=np.float64).reshape(-1)
        if x.size < 2 or np.any(np.diff(x) <= 0):
            raise expected("grid", "at least 2 increasing eigenvalue positions", x.size)
    kernel = np.exp(-0.5 * ((x[:, None] - nodes[finite][None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = (kernel * weights[finite][None, :]).sum(axis=1) / n_runs
    total = float(np.trapezoid(density, x))
    if total <= 0:
        raise expected("grid", "positions covering the spectrum (the density vanishes on it)", (float(x[0]), float(x[-1])))
    return Density(x, density / total, nodes, weights, float(sigma), op.n_products - start_products)


# --- model-level entry points -----------------------------------------------------------------------------


def top_eigenvalues(
    model: nn.Module,
    data: Batches,
    k: int = 5,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    engine: str = "auto",
    return_vectors: bool = False,
    confirm: bool = False,
    progress: bool = False,
) -> EigenResult:
    """The ``k`` largest algebraic eigenvalues of the loss Hessian over ``data``.

    Args:
        model, data, params, buffers, bn_batches: as in :class:`HessianOperator` (eval mode; a BN model at
            ``params`` without ``buffers`` gets statistics recomputed there, on ``bn_batches`` or ``data``).
        k: how many eigenvalues.
        method: ``"lanczos"`` (:func:`lanczos_eigenvalues`) or ``"power"`` (:func:`power_eigenvalues`).
        tol: relative residual per eigenpair (bounds the relative eigenvalue error).
        max_iter: Lanczos steps, or power iterations per eigenvalue.
        seed: seeds the start vectors.
        engine: Hessian-vector product engine (``"auto"``, ``"forward"`` or ``"cached"``).
        return_vectors: also return eigenvectors as ``(k, P)`` rows.
        confirm: Lanczos only: check for eigenvalues a single Krylov space misses (repeated ones), see
            :func:`lanczos_eigenvalues`.
        progress: tqdm bar.

    Returns:
        :class:`EigenResult` with values descending, in nats per squared parameter unit.

    Raises:
        ValueError: ``k`` larger than the parameter count, empty data, an unknown method or engine.
    """
    check_choice("method", method, EIGEN_METHODS)
    op = HessianOperator(model, data, params=params, buffers=buffers, bn_batches=bn_batches, engine=engine)
    if method == "lanczos":
        return lanczos_eigenvalues(op, k, tol=tol, max_iter=max_iter, seed=seed, return_vectors=return_vectors,
                                   confirm=confirm, progress=progress)
    return power_eigenvalues(op, k, tol=tol, max_iter=max_iter, seed=seed, return_vectors=return_vectors, progress=progress)


def trace(
    model: nn.Module,
    data: Batches,
    *,
    n_probes: int = 32,
    seed: int = 0,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
    method: str = "hutchinson",
    engine: str = "auto",
) -> TraceResult:
    """Hutchinson (or Hutch++) estimate of the loss Hessian's trace over ``data``.

    ``params``, ``buffers``, ``bn_batches``: the point and its BatchNorm statistics, as in
    :class:`HessianOperator`; see :func:`hutchinson_trace` for ``n_probes``, ``seed`` and ``method``.

    Returns:
        :class:`TraceResult` (nats per squared parameter unit).

    Raises:
        ValueError: empty data, bad ``n_probes`` or ``method``.
    """
    op = HessianOperator(model, data, params=params, buffers=buffers, bn_batches=bn_batches, engine=engine)
    return hutchinson_trace(op, n_probes, seed=seed, method=method)


def spectral_density(
    model: nn.Module,
    data: Batches,
    *,
    n_runs: int = 4,
    n_steps: int = 40,
    sigma: float | None = None,
    grid: int | Sequence[float] | np.ndarray = 500,
    seed: int = 0,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    bn_batches: Batches | None = None,
    engine: str = "auto",
    progress: bool = False,
) -> Density:
    """Spectral density of the loss Hessian over ``data`` by stochastic Lanczos quadrature.

    ``params``, ``buffers``, ``bn_batches``: the point and its BatchNorm statistics, as in
    :class:`HessianOperator`; the other settings are :func:`slq_density`'s.

    Returns:
        :class:`Density` normalised to integrate to 1 over its grid.

    Raises:
        ValueError: empty data or bad settings (see :func:`slq_density`).
    """
    op = HessianOperator(model, data, params=params, buffers=buffers, bn_batches=bn_batches, engine=engine)
    return slq_density(op, n_runs=n_runs, n_steps=n_steps, sigma=sigma, grid=grid, seed=seed, progress=progress)
