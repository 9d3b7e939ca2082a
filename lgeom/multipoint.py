"""Loss and accuracy at many parameter points per pass over the data: lists of points, affine grids, paths.

Points are processed in chunks: a chunk is a dict of *stacked* parameters (leading dimension = points),
evaluated with ``torch.func.vmap`` over ``functional_call`` so that one batched forward per data batch
serves every point of the chunk. Models with BatchNorm follow the BN policy
(:func:`lgeom.batchnorm.bn_statistics`) inside the same scheme: each point's running statistics are
recomputed on the fixed ``bn_batches`` (train mode, weighted by batch size) as a stacked buffer per point,
then the chunk is evaluated in eval mode. Where ``vmap`` cannot trace a model,
a loop over points does the same work one point at a time.

Entry points sharing that engine:

* :func:`evaluate_points` / :func:`evaluate_points_splits` -- a list of parameter dicts;
* :func:`evaluate_affine` -- points ``origin + sum_k coords[i, k] * directions[k]`` built chunk by chunk
  (planes and slices never hold every grid point in memory);
* :func:`evaluate_path` -- points ``phi(t)`` of a path, its trained endpoints kept as they are;
* :func:`evaluate_chunks` -- any ``chunk(lo, hi) -> stacked parameters`` callable.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from lgeom import names
from lgeom._checks import check_positive_int, check_ts, expected
from lgeom.batchnorm import bn_statistics, has_batchnorm
from lgeom.data import Batches, as_batches
from lgeom.evaluate import EvalResult, evaluate, evaluate_point, largest_output_per_sample
from lgeom.params import (
    ParamLayout,
    get_buffers,
    has_tied_tensors,
    inputs_to,
    stack_points,
    unflatten_stacked,
)
from lgeom.progress import TASK_PATH, Callback, ProgressEvent, emit
from lgeom.table import Table

ChunkFn = Callable[[int, int], dict[str, torch.Tensor]]
Progress = Callable[[dict[str, Any]], None]

# "vmap" names batched evaluation of a chunk of points: torch.func.vmap over functional_call, or the model's
# own ``forward_stacked`` where it has one (lgeom's MLPs); "loop" evaluates one point at a time.
METHODS = ("auto", "vmap", "loop")
# Working set of one chunk on the CPU: vmapped activations that stay in cache beat larger chunks. Measured
# on 2-layer MLPs of width 16/32/64 (512-sample batches, 32 MiB L3): the best chunks took 6-9 MiB by the
# estimate below, and chunks of 128 points ran 1.6-2x slower. On CUDA a quarter of the free memory is used.
CPU_CHUNK_BUDGET = 8 * 2**20
# Models with their own ``forward_stacked`` (one batched matmul per layer, no vmap tracing to amortise) run
# best with smaller chunks: 2-layer MLPs of width 16/32/64 peaked at 8-16 points per chunk (~2-4 MiB).
CPU_CHUNK_BUDGET_STACKED = 4 * 2**20
MAX_AUTO_CHUNK = 128


@dataclass(frozen=True)
class PointsEval:
    """Per-point mean cross-entropy ``loss`` and accuracy ``acc`` (percent) over ``n`` samples.

    ``method`` says how the points were evaluated: ``"vmap"``, ``"loop"`` or ``"vmap+loop"`` (vmap gave up
    part way, e.g. on an operation it cannot batch).
    """

    loss: np.ndarray
    acc: np.ndarray
    n: int
    method: str


def evaluate_points(
    model: nn.Module,
    points: Sequence[Mapping[str, torch.Tensor]],
    data: Batches,
    *,
    bn_batches: Batches | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
    callbacks: Sequence[Callback] | None = None,
) -> PointsEval:
    """Loss and accuracy of ``model`` at each of ``points`` over ``data``.

    Args:
        model: the architecture (not mutated).
        points: parameter dicts (all with the model's parameter names).
        data: re-iterable ``(inputs, targets)`` batches (a one-shot iterator is materialised first) or a Dataset.
        bn_batches: training batches for the BatchNorm recompute (required for BN models).
        chunk_size: points evaluated together in one vmapped forward (``None``: sized from the model,
            the batch size and the memory available, see :func:`auto_chunk_size`).
        method: ``"auto"`` (vmap, falling back to a loop where vmap fails, and on the CPU where a single
            point already fills the chunk budget), ``"vmap"`` or ``"loop"``.
        callbacks: receive :class:`~lgeom.progress.ProgressEvent` (task ``"grid"``) after each chunk.

    Returns:
        :class:`PointsEval` with one loss and accuracy (percent) per point.

    Raises:
        ValueError: no points, empty data, a BN model without ``bn_batches``, or a bad method.
    """
    return evaluate_points_splits(
        model, points, {"data": data}, bn_batches=bn_batches, chunk_size=chunk_size, method=method, callbacks=callbacks
    )["data"]


def evaluate_points_splits(
    model: nn.Module,
    points: Sequence[Mapping[str, torch.Tensor]],
    splits: Mapping[str, Batches],
    *,
    bn_batches: Batches | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
    callbacks: Sequence[Callback] | None = None,
) -> dict[str, PointsEval]:
    """Like :func:`evaluate_points` on several splits at once (BN statistics recomputed once per point).

    Returns:
        Split name -> :class:`PointsEval`.

    Raises:
        ValueError: as :func:`evaluate_points`.
    """
    if not points:
        raise expected("points", "at least one parameter point", 0)
    points = list(points)
    return evaluate_chunks(
        model,
        len(points),
        lambda lo, hi: stack_points(points[lo:hi]),
        splits,
        bn_batches=bn_batches,
        chunk_size=chunk_size,
        method=method,
        callbacks=callbacks,
    )


def evaluate_affine(
    model: nn.Module,
    origin: Mapping[str, torch.Tensor],
    directions: Sequence[Mapping[str, torch.Tensor]],
    coords: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    splits: Mapping[str, Batches],
    *,
    bn_batches: Batches | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
    callbacks: Sequence[Callback] | None = None,
) -> dict[str, PointsEval]:
    """Evaluate the points ``origin + sum_k coords[i, k] * directions[k]`` for every row ``i`` of ``coords``.

    Points are built chunk by chunk from flat vectors (one matrix product per chunk), so a 2-D grid of
    any size never holds more than one chunk of parameter points.

    Args:
        model: the architecture (not mutated).
        origin: parameter dict the coordinates are measured from.
        directions: ``k`` parameter dicts shaped like ``origin``.
        coords: array of shape ``(P, k)``.
        splits: split name -> batches.
        bn_batches, chunk_size, method, callbacks: as in :func:`evaluate_points`.

    Returns:
        Split name -> :class:`PointsEval` with one entry per row of ``coords``.

    Raises:
        ValueError: ``coords`` not of shape ``(P, len(directions))`` with P > 0, or as :func:`evaluate_points`.
    """
    layout = ParamLayout.of(origin)
    base = layout.flatten({n: v.detach() for n, v in origin.items()})
    if not directions:
        raise expected("directions", "at least one direction", 0)
    dirs = torch.stack([layout.flatten({n: d[n].detach() for n in layout.names}) for d in directions])
    c = torch.as_tensor(np.asarray(coords, dtype=np.float64) if not isinstance(coords, torch.Tensor) else coords)
    if c.dim() != 2 or c.shape[1] != len(directions) or c.shape[0] == 0:
        raise expected("coords", f"an array of shape (P, {len(directions)}) with P > 0", tuple(c.shape))
    c = c.to(device=base.device, dtype=base.dtype)

    def chunk(lo: int, hi: int) -> dict[str, torch.Tensor]:
        flat = torch.addmm(base.unsqueeze(0), c[lo:hi], dirs)
        return unflatten_stacked(layout, flat)

    return evaluate_chunks(
        model,
        int(c.shape[0]),
        chunk,
        splits,
        bn_batches=bn_batches,
        chunk_size=chunk_size,
        method=method,
        callbacks=callbacks,
    )


# --- the engine --------------------------------------------------------------------------------------------


def evaluate_chunks(
    model: nn.Module,
    n_points: int,
    chunk: ChunkFn,
    splits: Mapping[str, Batches],
    *,
    bn_batches: Batches | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
    callbacks: Sequence[Callback] | None = None,
) -> dict[str, PointsEval]:
    """Evaluate ``n_points`` points given chunk-wise by ``chunk(lo, hi)`` (stacked parameters of points
    ``lo .. hi-1``) on every split.

    With ``method="auto"`` a chunk that runs out of memory is retried at half the size, and a model that
    ``vmap`` cannot trace is finished with the loop.

    Returns:
        Split name -> :class:`PointsEval`.

    Raises:
        ValueError: bad method or chunk size, ``n_points`` < 1, no splits, an empty split, or a BN model
            without ``bn_batches``.
    """
    if method not in METHODS:
        raise expected("method", "'auto', 'vmap' or 'loop'", method)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    check_positive_int("number of points", n_points)
    if not splits:
        raise expected("splits", "at least one split of batches", {})
    bn = has_batchnorm(model)
    if bn and bn_batches is None:
        raise expected("bn_batches", "training batches to recompute BatchNorm statistics (BN policy)", None)
    data = {name: _reiterable(as_batches(batches)) for name, batches in splits.items()}
    for batches in data.values():
        if hasattr(batches, "__len__") and len(batches) == 0:  # type: ignore[arg-type]
            raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
    bn_list = list(as_batches(bn_batches)) if bn and bn_batches is not None else None
    if bn_list is not None and not bn_list:
        raise expected("bn_batches", "at least one batch to recompute BatchNorm statistics", "none")

    first = chunk(0, 1)
    device = next(iter(first.values())).device
    dtype = next(iter(first.values())).dtype
    base_buffers = {
        n: b.to(device, dtype=dtype if b.is_floating_point() else b.dtype) for n, b in get_buffers(model).items()
    }
    use_vmap = method != "loop"
    if chunk_size is None:
        chunk_size = auto_chunk_size(model, {n: v[0] for n, v in first.items()}, data)
        # One point per chunk on the CPU: vmap would only add overhead to the same (compute-bound) work.
        use_vmap = use_vmap and not (method == "auto" and device.type == "cpu" and chunk_size == 1)

    loss = {name: np.zeros(n_points) for name in data}
    acc = {name: np.zeros(n_points) for name in data}
    counts: dict[str, int] = {}
    used: set[str] = set()
    cbs = list(callbacks or [])
    # Passes over a batch per chunk (the BN recompute's, then each split's): a large chunk (a GPU takes up to
    # 128 points at once) reports its progress batch by batch, not only when it is done.
    units = len(bn_list or []) + sum(len(b) if hasattr(b, "__len__") else 0 for b in data.values())  # type: ignore[arg-type]
    reported = [0]

    def report(step: int) -> None:
        if step > reported[0]:
            reported[0] = step
            emit(cbs, ProgressEvent("grid", "step", step, n_points))

    lo = 0
    while lo < n_points:
        hi = min(lo + chunk_size, n_points)
        stacked = first if (lo, hi) == (0, 1) else chunk(lo, hi)
        within = None
        if cbs and units and hi - lo > 1:
            within = lambda done, lo=lo, hi=hi: report(lo + (hi - lo) * min(done, units) // units)  # noqa: E731
        if use_vmap:
            try:
                sums = _vmapped_chunk(model, stacked, data, bn_list, base_buffers, within)
                used.add("vmap")
            except torch.OutOfMemoryError:
                if method == "vmap" and chunk_size == 1:
                    raise
                if chunk_size > 1:
                    chunk_size = max(1, chunk_size // 2)
                    continue
                use_vmap = False
                continue
            except (RuntimeError, NotImplementedError):
                if method == "vmap":
                    raise
                use_vmap = False
                continue
        else:
            sums = _looped_chunk(model, stacked, data, bn_list, base_buffers)
            used.add("loop")
        for name, (loss_sum, correct, n) in sums.items():
            if n == 0:
                raise expected("data", "a non-empty dataset", "an empty one (0 samples)")
            loss[name][lo:hi] = loss_sum / n
            acc[name][lo:hi] = 100.0 * correct / n
            counts[name] = n
        report(hi)
        lo = hi
    label = "+".join(m for m in ("vmap", "loop") if m in used)
    return {name: PointsEval(loss[name], acc[name], counts[name], label) for name in data}


def _reiterable(batches: Batches) -> Batches:
    """``batches`` itself when it can be iterated again (a list, a loader), else a list of its items."""
    return list(batches) if isinstance(batches, Iterator) else batches


def _logits_for_loss(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


SplitSums = dict[str, tuple[np.ndarray, np.ndarray, int]]


def _looped_chunk(
    model: nn.Module,
    stacked: Mapping[str, torch.Tensor],
    data: Mapping[str, Batches],
    bn_batches: list | None,
    base_buffers: Mapping[str, torch.Tensor],
) -> SplitSums:
    m = next(iter(stacked.values())).shape[0]
    out = {name: (np.zeros(m), np.zeros(m), 0) for name in data}
    for i in range(m):
        p = {n: v[i] for n, v in stacked.items()}
        buffers = bn_statistics(model, p, endpoint=False, buffers=base_buffers, bn_batches=bn_batches).buffers
        for name, batches in data.items():
            res = evaluate(model, batches, params=p, buffers=buffers)
            out[name][0][i] = res.loss * res.n
            out[name][1][i] = res.acc * res.n / 100.0
            out[name] = (out[name][0], out[name][1], res.n)
    return out


@contextlib.contextmanager
def _batchable_attention() -> Iterator[None]:
    """Attention as operations ``vmap`` batches: ``nn.MultiheadAttention`` (and ``nn.TransformerEncoderLayer``)
    in eval mode without grad take a fused "fast path" (``aten::_native_multi_head_attention``), and
    ``F.scaled_dot_product_attention`` fused kernels (flash attention on the CPU); neither has a vmap batching
    rule, so torch warns and loops over the points inside the vmapped forward. Inside this context the modules
    take their composite path and attention its math backend, plain operations that vmap batches (the same
    values to rounding). The fast-path switch is global; it is restored on exit.
    """
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _vmapped_chunk(
    model: nn.Module,
    stacked: Mapping[str, torch.Tensor],
    data: Mapping[str, Batches],
    bn_batches: list | None,
    base_buffers: Mapping[str, torch.Tensor],
    passes: Callable[[int], None] | None = None,
) -> SplitSums:
    # ``passes(done)``: told the number of batch passes done so far (the BN recompute's count as one lump).
    params = dict(stacked)
    done = 0
    first = next(iter(params.values()))
    device, dtype, m = first.device, first.dtype, first.shape[0]
    tie = has_tied_tensors(model)
    was_training = model.training
    try:
        with torch.no_grad(), _batchable_attention():
            if bn_batches is not None:
                stats = bn_statistics(
                    model, params, endpoint=False, buffers=base_buffers, bn_batches=bn_batches, stacked=True
                )
                buffers = stats.buffers
                done = len(bn_batches)
                if passes is not None:
                    passes(done)
                forward = vmap(
                    lambda p, b, x: functional_call(model, {**p, **b}, (x,), tie_weights=tie), in_dims=(0, 0, None)
                )
                run = lambda x: forward(params, buffers, x)  # noqa: E731
            elif hasattr(model, "forward_stacked") and not base_buffers:
                # A model that evaluates stacked points itself (lgeom's MLPs: one batched matmul per layer)
                # skips vmap's per-call tracing, which dominates for small models.
                dense = {n: v.contiguous() for n, v in params.items()}  # chunk views are strided rows
                run = lambda x: model.forward_stacked(dense, x)  # noqa: E731
            else:
                forward = vmap(
                    lambda p, x: functional_call(model, {**p, **base_buffers}, (x,), tie_weights=tie), in_dims=(0, None)
                )
                run = lambda x: forward(params, x)  # noqa: E731
            model.eval()
            out: SplitSums = {}
            for name, batches in data.items():
                loss_sum = torch.zeros(m, dtype=torch.float64, device=device)
                correct = torch.zeros(m, dtype=torch.long, device=device)
                n = 0
                for xb, yb in batches:
                    xb, yb = inputs_to(xb, device, dtype), yb.to(device, non_blocking=True)
                    logits = run(xb)  # (m, B, classes)
                    # Per-point summed cross-entropy: log-softmax and a gather of the targets (broadcast over
                    # points) avoid repeating the targets m times.
                    logp = _logits_for_loss(logits).log_softmax(dim=-1)
                    picked = logp.gather(-1, yb.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(-1)
                    loss_sum -= picked.sum(dim=1, dtype=torch.float64)
                    correct += (logits.argmax(dim=-1) == yb.unsqueeze(0)).sum(dim=1)
                    n += int(yb.shape[0])
                    done += 1
                    if passes is not None:
                        passes(done)
                out[name] = (loss_sum.cpu().numpy(), correct.cpu().numpy().astype(np.float64), n)
            return out
    finally:
        model.train(was_training)


def auto_chunk_size(model: nn.Module, params: Mapping[str, torch.Tensor], data: Mapping[str, Batches]) -> int:
    """Points per vmapped chunk that fit the memory budget.

    The budget is 8 MiB on the CPU (a cache-sized working set; 4 MiB for models with ``forward_stacked``)
    and a quarter of the free memory on CUDA.
    One point costs its parameters plus roughly four times the largest layer output for one batch
    (measured with forward hooks on a single sample).

    Returns:
        An integer in ``[1, 128]``.
    """
    first = next(iter(params.values()))
    device, itemsize = first.device, first.element_size()
    batch = None
    for batches in data.values():
        for xb, _ in batches:
            batch = xb
            break
        if batch is not None:
            break
    if batch is None:
        return 1
    batch_size = int(batch.shape[0])
    largest = largest_output_per_sample(model, inputs_to(batch[:1], device, first.dtype), params)
    if largest == 0:  # the one-sample forward failed: sizing is a heuristic, fall back to a small chunk
        return 8
    n_params = sum(v.numel() for v in params.values())
    per_point = itemsize * (n_params + 4 * largest * batch_size)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 4
    else:
        budget = CPU_CHUNK_BUDGET_STACKED if hasattr(model, "forward_stacked") else CPU_CHUNK_BUDGET
    return int(min(MAX_AUTO_CHUNK, max(1, math.floor(budget / max(per_point, 1)))))


def evaluate_path(
    model: nn.Module,
    path: Any,
    ts: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    train: Batches | None = None,
    test: Batches | None = None,
    *,
    bn_batches: Batches | None = None,
    endpoint_buffers: tuple[Mapping[str, torch.Tensor] | None, Mapping[str, torch.Tensor] | None] | None = None,
    progress: Progress | None = None,
    callbacks: Sequence[Callback] | None = None,
) -> Table:
    """Train/test loss and accuracy along a path ``phi(t)``.

    Args:
        model: the architecture the path's parameters belong to.
        path: any object with ``point(t) -> dict of parameters`` (``Line``, ``Bezier``, ``PolyChain``).
        ts: values of t in [0, 1] (default: 61 evenly spaced points).
        train: training batches to evaluate on (unaugmented; batches or a map-style ``Dataset``), or ``None``
            to skip.
        test: test batches (or a ``Dataset``), or ``None`` to skip.
        bn_batches: fixed training batches (or a ``Dataset``) for the BatchNorm recompute (BN models).
        endpoint_buffers: the trained running statistics of A and B; with them, t = 0 and t = 1 are
            evaluated as the trained endpoints (no recompute), as the BN policy says.
        progress: called for each point, in order, with ``{"index", "t", <columns>}`` once its values are
            known (points are evaluated in batched chunks, see the engine above).
        callbacks: receive :class:`~lgeom.progress.ProgressEvent` with task ``"path"``: ``start``, a ``step``
            per evaluated chunk of points (``step`` = points done of ``total`` = ``len(ts)``) and ``end``.

    Returns:
        A :class:`~lgeom.table.Table` with column ``t`` and ``train_loss``, ``train_acc``, ``test_loss``,
        ``test_acc`` for the splits given (accuracy in percent).

    Raises:
        ValueError: t outside [0, 1], no split given, or an empty dataset.
    """
    t_values = check_ts(np.linspace(0.0, 1.0, 61) if ts is None else ts).tolist()
    splits = {name: as_batches(data) for name, data in (("train", train), ("test", test)) if data is not None}
    if not splits:
        raise expected("splits", "train and/or test batches", None)
    # One-shot iterators would be exhausted after the first point.
    splits = {name: list(data) if isinstance(data, Iterator) else data for name, data in splits.items()}
    if bn_batches is not None:
        bn_batches = as_batches(bn_batches)
    if isinstance(bn_batches, Iterator):
        bn_batches = list(bn_batches)

    # Trained endpoints of a BN model keep their own statistics (the BN policy); every other point is
    # evaluated in chunks by the batched engine, which recomputes statistics per point.
    cbs = list(callbacks or [])
    total = len(t_values)
    emit(cbs, ProgressEvent(TASK_PATH, "start", 0, total))
    endpoint_rows: dict[int, dict[str, EvalResult]] = {}
    if endpoint_buffers is not None and has_batchnorm(model):
        for i, t in enumerate(t_values):
            bufs = endpoint_buffers[0] if t == 0.0 else endpoint_buffers[1] if t == 1.0 else None
            if bufs is not None:
                params = {n: p.detach() for n, p in path.point(t).items()}
                endpoint_rows[i] = evaluate_point(model, params, splits, buffers=bufs, endpoint=True)
                emit(cbs, ProgressEvent(TASK_PATH, "step", len(endpoint_rows), total))
    rest = [i for i in range(len(t_values)) if i not in endpoint_rows]
    batched: dict[str, Any] = {}
    if rest:

        def chunk(lo: int, hi: int) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return stack_points([path.point(t_values[i]) for i in rest[lo:hi]])

        done = len(endpoint_rows)
        bridge = [lambda e: emit(cbs, ProgressEvent(TASK_PATH, "step", done + e.step, total))] if cbs else None
        batched = evaluate_chunks(model, len(rest), chunk, splits, bn_batches=bn_batches, callbacks=bridge)
    emit(cbs, ProgressEvent(TASK_PATH, "end", total, total))
    position = {i: j for j, i in enumerate(rest)}
    rows: list[dict[str, float]] = []
    for i, t in enumerate(t_values):
        row = {"t": t}
        for split in splits:
            if i in endpoint_rows:
                row[names.split_column(split, "loss")] = endpoint_rows[i][split].loss
                row[names.split_column(split, "acc")] = endpoint_rows[i][split].acc
            else:
                row[names.split_column(split, "loss")] = float(batched[split].loss[position[i]])
                row[names.split_column(split, "acc")] = float(batched[split].acc[position[i]])
        rows.append(row)
        if progress is not None:
            progress({"index": i, **row})
    return Table.from_rows(rows)
