"""Plane-grid evaluation speed: points per second of ``lgeom.surfaces.plane`` (grid points stacked and
evaluated with ``torch.func.vmap`` in chunks) versus a loop that loads every grid point into the model and
runs it over the data: once with ``model.load_state_dict`` (the common way) and once with ``param.copy_``
into the parameters (a leaner loop).

All sides evaluate the same grid in the same plane on the same batches, measured side by side in
interleaved rounds (median points/s per side); the printed difference of the loss grids checks that they
compute the same thing. Target: batched >= 3x the load_state_dict loop on the CPU for an MLP. The
BatchNorm case recomputes running statistics at every point on every side (the BN policy); on the CPU
``plane`` evaluates it with the loop (a single point already fills the CPU chunk budget).

    PYTHONPATH=. python3 bench/plane.py             # CUDA when available
    PYTHONPATH=. python3 bench/plane.py --threads 1 # one intra-op thread (a machine shared with other jobs)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench._common import add_device_arguments, setup_device
from lgeom.models import build_model
from lgeom.params import get_params
from lgeom.surfaces import plane, plane_basis

CASES = [
    # name, model, options, input shape, classes, samples, eval batch, grid, BN batches
    ("MLP 2-16-16-2 (quick matrix), 1000 samples", "mlp", {"depth": 2, "width": 16}, (2,), 2, 1000, 512, 21, 0),
    ("MLP 2-32-32-2 (quick preset), 1000 samples", "mlp", {"depth": 2, "width": 32}, (2,), 2, 1000, 512, 21, 0),
    ("MLP 2-64-64-2 (quick matrix), 1000 samples", "mlp", {"depth": 2, "width": 64}, (2,), 2, 1000, 512, 21, 0),
    ("MLP 784-512-512-10, 1000 samples", "mlp", {"depth": 2, "width": 512}, (784,), 10, 1000, 512, 11, 0),
    ("PreResNet-8 (BN), 3x16x16, 256 samples", "preresnet", {"depth": 8}, (3, 16, 16), 10, 256, 128, 4, 2),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def loop_baseline(
    model: nn.Module, basis, xs: np.ndarray, ys: np.ndarray, data: list, bn: list, *, load: str
) -> np.ndarray:
    """Load each grid point into the model (``load_state_dict`` or ``copy_`` into the parameters) and
    evaluate it (BN statistics recomputed first for BN models); loss sums stay on the device.
    """
    names = list(basis.origin)
    params = dict(model.named_parameters())
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    losses = np.zeros((len(ys), len(xs)))
    with torch.no_grad():
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                point = {n: basis.origin[n] + float(x) * basis.u[n] + float(y) * basis.v[n] for n in names}
                if load == "load_state_dict":
                    model.load_state_dict(point, strict=False)
                else:
                    for n in names:
                        params[n].copy_(point[n])
                if bns:
                    model.train()
                    for m in bns:
                        m.reset_running_stats()
                        m.momentum = None
                    for xb, _ in bn:
                        model(xb)
                model.eval()
                total = torch.zeros((), dtype=torch.float64, device=xb.device if bns else data[0][0].device)
                n_seen = 0
                for xb, yb in data:
                    total += F.cross_entropy(model(xb), yb, reduction="sum").double()
                    n_seen += int(yb.shape[0])
                losses[j, i] = float(total) / n_seen
    return losses


def bench_case(
    name: str,
    arch: str,
    opts: dict,
    shape: tuple,
    classes: int,
    samples: int,
    batch: int,
    grid: int,
    n_bn: int,
    rounds: int,
    device: torch.device,
) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, *shape, generator=gen).to(device)
    y = torch.randint(0, classes, (samples,), generator=gen).to(device)
    data = [(x[i : i + batch], y[i : i + batch]) for i in range(0, samples, batch)]
    bn = data[:n_bn] if n_bn else None
    points = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        points.append(get_params(build_model(arch, num_classes=classes, in_shape=shape, **opts).to(device)))
    a, b, c = (
        points[0],
        points[1],
        {n: 0.5 * (points[0][n] + points[1][n]) + 0.5 * (points[2][n] - points[0][n]) for n in points[0]},
    )
    model = build_model(arch, num_classes=classes, in_shape=shape, **opts).to(device)
    basis = plane_basis(a, c, b)
    rates: dict[str, list[float]] = {"batched": [], "load_state_dict": [], "copy_": []}
    result, diff = None, 0.0
    for r in range(rounds + 1):  # round 0 warms up every side
        for side in rates:
            sync(device)
            t0 = time.perf_counter()
            if side == "batched":
                result = plane(model, a, c, b, test=data, bn_batches=bn, grid=grid, margin=0.2)
            else:
                assert result is not None
                looped = loop_baseline(model, basis, result.xs, result.ys, data, bn or [], load=side)
                diff = max(diff, float(np.abs(result.grids["test_loss"] - looped).max()))
            sync(device)
            if r:
                rates[side].append(grid * grid / (time.perf_counter() - t0))
    assert result is not None
    med = {k: statistics.median(v) for k, v in rates.items()}
    r_state, r_copy = med["batched"] / med["load_state_dict"], med["batched"] / med["copy_"]
    target = "" if arch == "preresnet" else f" ({'meets' if r_state >= 3 else 'misses'} >= 3x)"
    print(
        f"{name:44s} {grid}x{grid}: batched {med['batched']:8.1f} pts/s [{result.method}]   "
        f"load_state_dict loop {med['load_state_dict']:8.1f} pts/s (ratio {r_state:4.2f}{target})   "
        f"copy_ loop {med['copy_']:8.1f} pts/s (ratio {r_copy:4.2f})   max |loss diff| {diff:.1e}"
    )
    return r_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds per case")
    add_device_arguments(parser)
    args = parser.parse_args()
    device = setup_device(args)
    for case in CASES:
        case_name, arch, opts, shape, classes, samples, batch, grid, n_bn = case
        if device.type == "cuda" and arch == "preresnet":
            shape, samples, batch, grid = (3, 32, 32), 1024, 256, 11
            case_name = "PreResNet-8 (BN), 3x32x32, 1024 samples"
        bench_case(case_name, arch, opts, shape, classes, samples, batch, grid, n_bn, args.rounds, device)


if __name__ == "__main__":
    main()
