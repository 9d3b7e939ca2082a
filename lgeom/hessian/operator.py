"""The Hessian of the loss as a linear operator on flat parameter vectors, with two product engines.

The loss is the metric contract's (DESIGN.md): ``L(theta) = sum_b sum_{i in b} CE_i(theta) / N`` over all
``N`` samples of the given data (sums weighted by batch size, no weight decay), w.r.t. all trainable
parameters, the model in eval mode with the BatchNorm statistics the BN policy gives the point
(:func:`lgeom.batchnorm.bn_statistics`; see :class:`HessianOperator`). ``data`` may be a map-style
``Dataset`` (read in batches of :data:`lgeom.data.EVAL_BATCH_SIZE`). The operator applies

    ``H v = d/de grad L(theta + e v) |_{e=0}``

without forming ``H``:

* ``engine="forward"``: forward-over-reverse (``torch.func.jvp`` over ``torch.func.grad``), several vectors
  per pass over the data (vmapped where that is faster), memory of one batch; it recomputes the primal
  forward and backward for every product (about 3.5x a gradient on a conv net, more for tiny models where
  per-op overhead dominates).
* ``engine="cached"``: builds each batch's gradient graph once and applies Pearlmutter's double backward to
  it for every product (about 2.5x a gradient), holding every batch's graph in memory.
* ``engine="auto"`` (the default of the estimators) measures the first batch's graph and caches when all of
  them fit a memory budget.

Both evaluate eval-mode BatchNorm as its affine map (:class:`lgeom.gradients.EvalBatchNormAsAffine`).
Measurements: ``bench/hessian.py``, ``bench/RESULTS.md``. Estimators on any :class:`SymmetricOperator`:
:mod:`~lgeom.hessian.lanczos`, :mod:`~lgeom.hessian.power`, :mod:`~lgeom.hessian.trace`,
:mod:`~lgeom.hessian.density`. Units: nats per squared parameter unit.

Closed form: one sample ``x = 1`` into a bias-free linear layer with zero weights gives two equal logits,
softmax ``p = (1/2, 1/2)``, and ``H = diag(p) - p p^T`` (times ``x^2 = 1``):

>>> import torch
>>> model = torch.nn.Linear(1, 2, bias=False)
>>> _ = torch.nn.init.zeros_(model.weight)
>>> op = HessianOperator(model, [(torch.ones(1, 1), torch.tensor([0]))])
>>> op @ torch.tensor([1.0, 0.0])
tensor([ 0.2500, -0.2500])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

import torch
from torch import nn
from torch.func import grad as func_grad
from torch.func import jvp, vmap

from lgeom._checks import check_choice, check_positive_int, expected
from lgeom.batchnorm import bn_statistics
from lgeom.data import Batches
from lgeom.gradients import Objective
from lgeom.params import Params

ENGINES = ("auto", "forward", "cached")

__all__ = ["ENGINES", "HessianOperator", "SymmetricOperator", "hvp", "random_vectors"]


class SymmetricOperator(Protocol):
    """A symmetric linear map on vectors of ``size`` scalars, applied to ``(m, size)`` rows at once."""

    size: int
    dtype: torch.dtype
    device: torch.device
    n_products: int

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``A v`` for every row ``v`` of ``vectors`` (shape ``(m, size)``), as ``(m, size)``."""
        ...


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

    BN policy, for a model with BatchNorm (decided by :func:`lgeom.batchnorm.bn_statistics`; statistics in
    ``objective.buffers``, source in ``bn_source``):

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
        # A point other than the model's own, with no statistics given for it, is not a trained endpoint:
        # the model's stored statistics do not belong to it (BN policy).
        endpoint = bn_batches is None and (buffers is not None or params is None)
        stats = bn_statistics(
            model,
            self.objective.params,
            endpoint=endpoint,
            buffers=buffers,
            bn_batches=self.objective.batches if bn_batches is None else bn_batches,
        )
        if stats.source == "recomputed":
            self.objective.buffers = stats.buffers  # type: ignore[assignment]
        self.bn_source: str | None = stats.source
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
                            for n, part, shape in zip(
                                layout.names, torch.split(block, list(layout.numels), dim=1), layout.shapes
                            )
                        }
                        hv = vmap(lambda t: jvp(gradient, (obj.params,), (t,))[1])(tangents)
                        out[lo : lo + block.shape[0]] += torch.cat(
                            [hv[n].reshape(block.shape[0], -1) for n in layout.names], dim=1
                        )
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
                hv = torch.autograd.grad(
                    grads, self._leaves, [parts[j] for j in used], retain_graph=True, allow_unused=True
                )
                out[i] += torch.cat(
                    [
                        (h if h is not None else torch.zeros(s, dtype=self.dtype, device=self.device)).reshape(-1)
                        for h, s in zip(hv, shapes)
                    ]
                )
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


def random_vectors(
    rows: int, size: int, generator: torch.Generator, op: SymmetricOperator, kind: str = "gaussian"
) -> torch.Tensor:
    """``rows`` random vectors of ``size`` scalars on ``op``'s device and dtype: standard Gaussian, or
    Rademacher (+-1) for ``kind="rademacher"``; drawn in float64 on the CPU from ``generator`` so a seed gives
    the same vectors on every device.
    """
    if kind == "rademacher":
        z = torch.randint(0, 2, (rows, size), generator=generator, dtype=torch.int8).to(torch.float64) * 2 - 1
    else:
        z = torch.randn(rows, size, generator=generator, dtype=torch.float64)
    return z.to(op.device, op.dtype)
