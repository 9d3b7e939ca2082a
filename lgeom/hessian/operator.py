"""The Hessian of the loss as a linear operator on flat parameter vectors, with three product engines.

The loss is the metric contract's (DESIGN.md): ``L(theta) = sum_b sum_{i in b} CE_i(theta) / N`` over all
``N`` samples of the given data (sums weighted by batch size, no weight decay), w.r.t. all trainable
parameters, the model in eval mode with the BatchNorm statistics the BN policy gives the point
(:func:`lgeom.batchnorm.bn_statistics`; see :class:`HessianOperator`). ``data`` may be a map-style
``Dataset`` (read in batches of :data:`lgeom.data.EVAL_BATCH_SIZE`). The operator applies

    ``H v = d/de grad L(theta + e v) |_{e=0}``

without forming ``H``:

* ``engine="cached"``: builds the gradient graph once (``create_graph``) and applies Pearlmutter's double
  backward to it for every product, holding the graph in memory;
* ``engine="stream"``: builds the graph once per pass over the data, applies every vector of the pass to it and
  frees it (memory of one chunk's graph): the forward and first backward happen once per pass, not once per
  product, so a block of vectors shares them;
* ``engine="forward"``: forward-over-reverse (``torch.func.jvp`` over ``torch.func.grad``), several vectors
  per pass (vmapped where that is faster), memory of one batch without a graph; it recomputes the primal
  forward and backward for every product;
* ``engine="rop"``: for lgeom's plain MLP only (:mod:`lgeom.hessian.rop`), the exact product written out by
  hand (Pearlmutter's R-operator): one pass keeps each layer's activations and backpropagated errors, and every
  product is a few matrix products on them, with no autograd graph;
* ``engine="auto"`` (the default of the estimators) takes ``"rop"`` for lgeom's MLP, otherwise measures the
  first batch's graph and caches when the graphs of all the data fit a memory budget, else streams.

The cached and stream engines merge consecutive batches of equal input shape into chunks of up to
``merge_bytes`` of graph (one graph, one double backward per chunk and product: per-call overhead, not
arithmetic, dominates small models) and, on the CPU, cut batches above ``split_bytes`` into slices (large
graphs slow every product there: a convolutional network's), take the parameters as views of one flat leaf
(products come out flat), and apply a block's vectors one after another, or in one batched double backward with
``batch_vectors``.
On the CPU of ``bench/hessian.py`` (MLP, 1000 samples in 4 batches): one product costs 0.5x a gradient pass
with ``"rop"``, 0.85x cached, 1.9x streamed, 12x forward-over-reverse; per vector of a block of 5, 0.3x / 0.89x
/ 1.1x / 3.7x.

All evaluate eval-mode BatchNorm as its affine map (:class:`lgeom.gradients.EvalBatchNormAsAffine`).
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
from lgeom.evaluate import slice_count
from lgeom.gradients import Objective
from lgeom.hessian.rop import RopChunk, rop_bytes_per_sample, rop_unsupported
from lgeom.params import Params

ENGINES = ("auto", "forward", "cached", "stream", "rop")
# Bytes of gradient graph one merged chunk of the data may hold (the cached and stream engines): on CUDA, and
# on the CPU, where small graphs ran fastest (batches above it are split there too, ``bench/conv_layout.py``).
_MERGE_BYTES = 256 * 2**20
_CPU_CHUNK_BYTES = 16 * 2**20

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
        engine: ``"cached"`` (the gradient graph is built once and kept; every product is one double
            backward), ``"stream"`` (the graph is built once per pass, shared by the pass's vectors and freed),
            ``"forward"`` (forward-over-reverse, memory of one batch), ``"rop"`` (lgeom's plain MLP only: exact
            products written out by hand, :mod:`lgeom.hessian.rop`; its per-chunk activations are kept when they
            fit ``memory_budget``, else recomputed every pass) or ``"auto"`` (``"rop"`` where it applies;
            otherwise ``"cached"`` when the graphs of all batches, estimated from the first one's saved tensors,
            fit ``memory_budget``, else ``"stream"``).
        vectorize: apply several vectors per batch with ``torch.func.vmap`` (forward engine). ``None``:
            only for models without convolutions (vmap over convolution backward's forward-mode formula is
            slower than a loop in torch 2.14 on the CPU).
        chunk_size: vectors applied together per batch when vectorised.
        memory_budget: bytes the ``"auto"`` engine may hold in graphs (default: half the free CUDA memory, or
            a quarter of the available RAM, at most 8 GiB).
        merge_bytes: cached and stream engines: consecutive batches are merged into chunks of at most this
            many bytes of graph (estimated per sample from the first batch; default 16 MiB on the CPU, 256 MiB
            on CUDA). The loss is a sum over samples and the model runs in eval mode, so the products equal the
            per-batch sums up to rounding. Merged inputs are copies (the data's memory once more);
            ``merge_bytes=1`` keeps the batches as given.
        split_bytes: cached and stream engines: a batch whose graph exceeds this many bytes is split into
            slices of (nearly) equal size, at least 32 samples each (exact for the same reason). Default:
            16 MiB on the CPU, where large graphs slow every double backward (the MNIST CNN's products ran 2.2x
            faster on 64-sample slices than on one 1,024-sample chunk, ``bench/conv_layout.py``); no splitting
            on CUDA.
        batch_vectors: cached and stream engines: apply the vectors of a ``matmat`` in one batched double
            backward (``is_grads_batched``) instead of one after another (slower on the CPU for the MLP and
            PreResNet of ``bench/hessian.py``; meant for accelerators, where small products are launch-bound).

    BN policy, for a model with BatchNorm (decided by :func:`lgeom.batchnorm.bn_statistics`; statistics in
    ``objective.buffers``, source in ``bn_source``):

    * ``bn_batches`` given: statistics recomputed at ``params`` on them (``"recomputed"``);
    * else ``buffers`` given: used as they are (``"given"``);
    * else ``params`` given: not the model's own point, so its stored statistics do not belong to it; they
      are recomputed at ``params`` on ``data`` (``"recomputed"``), as :func:`lgeom.probes.probe_point` does;
    * else: the model's own point with its own (trained) statistics (``"model"``).

    Attributes:
        engine: the engine in use (``"auto"`` resolved).
        chunk_sizes: samples per merged chunk (cached and stream engines).
        bn_source: where the BatchNorm statistics come from (``"recomputed"``, ``"given"``, ``"model"``;
            ``None`` for a model without BatchNorm).
        size, dtype, device: of the flat parameter vector.
        n_products: Hessian-vector products applied so far (one per vector, whatever the batching).
        objective: the underlying :class:`~lgeom.gradients.Objective`.

    Raises:
        ValueError: empty data, an unknown engine, a bad chunk size or ``merge_bytes``, ``engine="rop"`` for a
            model other than lgeom's plain MLP (or targets that are not class indices).
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
        merge_bytes: int | None = None,
        split_bytes: int | None = None,
        batch_vectors: bool = False,
    ) -> None:
        check_choice("engine", engine, ENGINES)
        check_positive_int("chunk_size", chunk_size)
        for name, value in (("merge_bytes", merge_bytes), ("split_bytes", split_bytes)):
            if value is not None:
                check_positive_int(name, value)
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
        cpu = self.device.type == "cpu"
        self.merge_bytes = (_CPU_CHUNK_BYTES if cpu else _MERGE_BYTES) if merge_bytes is None else merge_bytes
        self.split_bytes = (_CPU_CHUNK_BYTES if cpu else None) if split_bytes is None else split_bytes
        self.batch_vectors = bool(batch_vectors)
        self._graphs: list[torch.Tensor] | None = None
        self._theta: torch.Tensor | None = None
        self._bytes_per_sample: float | None = None
        self._first: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._chunk_list: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._rop: list[RopChunk] | None = None
        self._rop_keep = False
        if engine in ("auto", "rop"):
            unsupported = rop_unsupported(model, self.objective.layout, self.objective.batches)
            if engine == "rop" and unsupported is not None:
                raise expected("engine", f"an engine other than 'rop' here ('rop' needs {unsupported})", engine)
            if engine == "auto":
                self.engine = "rop" if unsupported is None else self._choose_engine(memory_budget)
        if self.engine == "rop":
            self._bytes_per_sample = float(rop_bytes_per_sample(model, self.dtype))
            budget = memory_budget if memory_budget is not None else _memory_budget(self.device)
            self._rop_keep = self._bytes_per_sample * self.objective.n_samples <= budget

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
        if self.engine == "rop":
            out = self._rop_products(vectors)
        elif self.engine == "cached":
            out = self._cached(vectors)
        elif self.engine == "stream":
            out = self._stream(vectors)
        else:
            out = self._forward(vectors)
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

    def _graph(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """The flat gradient of the summed loss of one chunk, with its graph (``None``: it does not depend on
        the parameters, so the chunk adds nothing to ``H v``).
        """
        obj = self.objective
        if self._theta is None:
            # One flat leaf, the parameters views of it: gradients and products come out flat, no per-parameter
            # splitting or concatenation per product.
            self._theta = obj.layout.flatten(obj.params).detach().requires_grad_(True)
        with obj.eval_mode():
            loss = obj.batch_loss_sum(obj.layout.unflatten(self._theta), inputs, targets)
            (grad,) = torch.autograd.grad(loss, self._theta, create_graph=True)
        return grad if grad.requires_grad else None

    def _graph_bytes_per_sample(self) -> float:
        """Bytes of the first batch's gradient graph per sample (its saved tensors; CUDA: memory allocated)."""
        if self._bytes_per_sample is not None:
            return self._bytes_per_sample
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return t

        xb, yb = self.objective.batches[0]
        if self.device.type == "cuda":
            before = torch.cuda.memory_allocated(self.device)
            graph = self._graph(xb, yb)
            used = torch.cuda.memory_allocated(self.device) - before
        else:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                graph = self._graph(xb, yb)
            used = sum(seen.values())
        self._first = (xb, graph)  # kept for the cached engine when the first chunk is this batch alone
        self._bytes_per_sample = used / int(yb.shape[0])
        return self._bytes_per_sample

    def _chunks(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The data as few chunks as ``merge_bytes`` allows: consecutive batches with the same input shape
        and dtype concatenated; with ``split_bytes`` (cached and stream engines), batches above it first cut
        into equal slices. The loss is a sum over samples and eval-mode models treat every sample on its own,
        so the chunks give the same products as the batches (to rounding).
        """
        if self._chunk_list is not None:
            return self._chunk_list
        batches = self._split(self.objective.batches)
        cap = max(1, int(self.merge_bytes // max(self._graph_bytes_per_sample(), 1.0))) if len(batches) > 1 else 1
        groups: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        count = 0
        for xb, yb in batches:
            n = int(yb.shape[0])
            if groups and count + n <= cap and _same_kind(groups[-1][-1], (xb, yb)):
                groups[-1].append((xb, yb))
                count += n
            else:
                groups.append([(xb, yb)])
                count = n
        self._chunk_list = [
            g[0] if len(g) == 1 else (torch.cat([x for x, _ in g]), torch.cat([y for _, y in g])) for g in groups
        ]
        return self._chunk_list

    def _split(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``batches`` with every batch whose graph exceeds ``split_bytes`` cut into slices (views) whose sizes
        differ by at most one sample, as few as fit the budget and none below
        :data:`lgeom.evaluate.MIN_SLICE` samples (:func:`lgeom.evaluate.slice_count`).
        """
        if self.split_bytes is None or self.engine not in ("cached", "stream"):
            return batches
        per_sample = max(self._graph_bytes_per_sample(), 1.0)
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for xb, yb in batches:
            pieces = slice_count(int(yb.shape[0]), per_sample, self.split_bytes)
            if pieces < 2:
                out.append((xb, yb))
            else:
                out.extend(zip(xb.tensor_split(pieces), yb.tensor_split(pieces)))
        return out

    @property
    def chunk_sizes(self) -> list[int]:
        """Samples in each chunk the cached and stream engines pass through one graph (merged batches)."""
        return [int(y.shape[0]) for _, y in self._chunks()]

    def _choose_engine(self, budget: int | None) -> str:
        estimate = self._graph_bytes_per_sample() * self.objective.n_samples
        if estimate <= (budget if budget is not None else _memory_budget(self.device)):
            return "cached"
        return "stream"

    def _apply(self, grad: torch.Tensor, vectors: torch.Tensor, out: torch.Tensor, retain: bool) -> None:
        """Add ``d(grad . v) / d theta`` for every row ``v`` of ``vectors`` to the rows of ``out``."""
        assert self._theta is not None
        m = vectors.shape[0]
        if self.batch_vectors and m > 1:
            (hv,) = torch.autograd.grad(
                grad, self._theta, vectors, retain_graph=retain, allow_unused=True, is_grads_batched=True
            )
            if hv is not None:
                out += hv
            return
        for i in range(m):
            (hv,) = torch.autograd.grad(
                grad, self._theta, vectors[i], retain_graph=retain or i < m - 1, allow_unused=True
            )
            if hv is not None:
                out[i] += hv

    def _cached(self, vectors: torch.Tensor) -> torch.Tensor:
        if self._graphs is None:
            first, self._first = self._first, None
            graphs = (first[1] if first is not None and x is first[0] else self._graph(x, y) for x, y in self._chunks())
            self._graphs = [g for g in graphs if g is not None]
        out = torch.zeros_like(vectors)
        for grad in self._graphs:
            self._apply(grad, vectors, out, retain=True)
        return out

    def _stream(self, vectors: torch.Tensor) -> torch.Tensor:
        # One graph per chunk per pass, applied to every vector, then freed: the forward and first backward
        # happen once per pass, not once per product.
        self._first = None
        out = torch.zeros_like(vectors)
        for x, y in self._chunks():
            grad = self._graph(x, y)
            if grad is not None:
                self._apply(grad, vectors, out, retain=False)
        return out

    def _rop_products(self, vectors: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        chunks = self._rop
        if chunks is None:
            chunks = (RopChunk(obj.model, obj.params, obj.layout, x, y) for x, y in self._chunks())
            if self._rop_keep:
                chunks = self._rop = list(chunks)
        out = torch.zeros_like(vectors)
        for chunk in chunks:
            chunk.add_products(vectors, out)
        return out

    def release(self) -> None:
        """Free the cached gradient graph or activations (rebuilt on the next product)."""
        self._graphs, self._theta, self._first, self._rop = None, None, None, None


def _same_kind(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """Whether two batches can be concatenated: inputs and targets of equal trailing shapes and dtypes."""
    return all(s.shape[1:] == t.shape[1:] and s.dtype == t.dtype for s, t in zip(a, b))


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
