"""What the plane's sample cap (``curve.plane_samples``) costs in accuracy and saves in time, on real data.

A small CNN (the ``mnist-arch`` preset's ``cnn``, 16 channels) is trained briefly from two seeds on
Fashion-MNIST (Debian's ``dataset-fashion-mnist``, laid out by ``prepare_fashion_mnist``; sklearn's digits when
it is missing), a Bezier curve is fitted between them, and the plane through A, C, B is evaluated on a grid:

* on the full evaluation sets of the ``mnist-arch`` preset (``--full`` training samples, the
  ``eval_train_samples`` subset, and every test sample), and
* on class-stratified subsets of ``--caps`` samples per split (``lgeom.data.stratified_subset``, as
  ``lgeom.connect.prepare_data`` draws them),

timed side by side in one run, as CPU time of this process (``time.process_time``: on a machine shared with
other jobs, wall time measures the other jobs too; with ``--threads 1`` CPU time is the work done) and wall
time. Printed per cap: max and mean absolute error of the loss (nats) and accuracy
(percentage points) over the grid against the full sets, per split, and the time ratio full / cap. Then the
stages of one ``mnist-arch`` CNN cell on 2 cores are extrapolated from the throughputs measured here (see
:func:`cell_estimate`), giving the plane stage's share of the cell with the cap and without it.

    PYTHONPATH=. python3 bench/plane_samples.py --threads 1            # 4x4 grid, caps 1000 and 2000
    PYTHONPATH=. python3 bench/plane_samples.py --grid 11 --caps 2000  # a finer grid
    PYTHONPATH=. python3 bench/plane_samples.py --threads 1 --hvp-only 4355  # the probe stage's estimate
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from bench._common import add_device_arguments, setup_device
from lgeom.curves import CurveFitSpec, build_curve, fit_curve
from lgeom.data import build_dataset, make_loader, random_subset, stratified_subset
from lgeom.data.vision import DEBIAN_FASHION_MNIST
from lgeom.models import build_model
from lgeom.multipoint import evaluate_path
from lgeom.surfaces import plane
from lgeom.train import TrainSpec, train

EVAL_BATCH = 1000  # mnist-arch's data.eval_batch_size


def load(root: str, n_train: int) -> tuple[str, object, object, object]:
    """``(name, training subset, evaluated training subset, test set)``."""
    from pathlib import Path

    if Path(DEBIAN_FASHION_MNIST).is_dir():
        name = "fashion-mnist"
        full_train = build_dataset(name, "train", root=root)
        test = build_dataset(name, "test", root=root)
    else:
        name = "digits"
        full_train, test = build_dataset(name, "train"), build_dataset(name, "test")
    train_set = random_subset(full_train, n_train, seed=0)
    return name, train_set, train_set, test


def grid_errors(full: dict[str, np.ndarray], capped: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Per grid (``train_loss`` ...): ``(max, mean)`` absolute difference."""
    return {k: (float(np.abs(capped[k] - full[k]).max()), float(np.abs(capped[k] - full[k]).mean())) for k in full}


def cell_estimate(
    *, train_sps: float, fit_sps: float, eval_pps: float, cap: int | None, grid: int = 21
) -> dict[str, float]:
    """Seconds of one ``mnist-arch`` CNN cell by stage, from measured throughputs (samples per second).

    The preset: two endpoints trained 3 epochs on 60,000 images; Bezier and PolyChain fitted 3 epochs each,
    with and without alignment (4 fits); 6 paths (line, Bezier, PolyChain, each aligned too) at 61 points
    on 10,000 training + 10,000 test samples; planes on a ``grid`` x ``grid`` grid for the two unaligned curves
    (``curve.plane_aligned`` off), on ``cap`` samples per split (``None``: the paths' 10,000 + 10,000), and
    four in the old default (every curve's plane, uncapped) for comparison. Probes are left out (their cost
    does not depend on the plane), so the plane's share is an upper bound.
    """
    train_s = 2 * 3 * 60_000 / train_sps
    fit_s = 4 * 3 * 60_000 / fit_sps
    path_s = 6 * 61 * 20_000 / eval_pps
    per_split = 10_000 if cap is None else min(cap, 10_000)
    plane_s = 2 * grid * grid * 2 * per_split / eval_pps
    old_plane_s = 4 * grid * grid * 20_000 / eval_pps
    total = train_s + fit_s + path_s + plane_s
    return {
        "train_s": train_s,
        "fit_s": fit_s,
        "path_s": path_s,
        "plane_s": plane_s,
        "plane_share": plane_s / total,
        "old_plane_s": old_plane_s,
        "old_plane_share": old_plane_s / (train_s + fit_s + path_s + old_plane_s),
    }


#: Hessian-vector products of the ``mnist-arch`` probe stage, as assumed for the estimate (see ``probe_estimate``).
LANCZOS_HVPS = 30


def probe_estimate(*, hvp_s: float, eval_pps: float, samples: int = 1024) -> dict[str, float]:
    """CPU seconds of the ``mnist-arch`` probe stage from one HVP's time on ``samples`` probe samples and the
    evaluation throughput: top-5 Lanczos (about ``LANCZOS_HVPS`` HVPs), 32 trace probes and 4 x 40 density
    steps at A, B and the midpoint, Lanczos at 11 points on 6 paths, and the 1-D (51) and 2-D (21 x 21) slices
    at the three points. Sharpness and Monte-Carlo curvature (a few dozen evaluations) are left out.
    """
    hvps = 3 * (LANCZOS_HVPS + 32 + 4 * 40) + 6 * 11 * LANCZOS_HVPS
    slices_s = 3 * (51 + 21 * 21) * samples / eval_pps
    return {"hvps": hvps, "hvp_s": hvps * hvp_s, "slices_s": slices_s, "probes_s": hvps * hvp_s + slices_s}


def measure_hvp(root: str, samples: int = 1024) -> float:
    """CPU seconds of one Hessian-vector product of the ``mnist-arch`` CNN on ``samples`` Fashion-MNIST images
    (batches of 256, as ``probe.batch_size``), median of 5 after a warm-up.
    """
    from lgeom.hessian import HessianOperator

    _, train_set, _, _ = load(root, samples)
    torch.manual_seed(0)
    model = build_model("cnn", channels=16, num_classes=10, in_shape=tuple(train_set.in_shape))
    op = HessianOperator(model, list(make_loader(train_set, 256)))
    v = torch.randn(op.size)
    op.matvec(v)
    times = []
    for _ in range(5):
        t = time.process_time()
        op.matvec(v)
        times.append(time.process_time() - t)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--grid", type=int, default=4, help="plane grid points per axis")
    parser.add_argument("--caps", type=int, nargs="+", default=[1000, 2000], help="plane_samples values")
    parser.add_argument("--full", type=int, default=10_000, help="evaluated training samples (eval_train_samples)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of each endpoint")
    parser.add_argument("--root", default=None, help="data root (default: a temporary folder)")
    parser.add_argument(
        "--hvp-only",
        type=float,
        default=None,
        metavar="PLANE_PPS",
        help="only time one HVP of the CNN on 1,024 samples and estimate the probe stage, given the plane's "
        "point-samples per CPU s from an earlier run",
    )
    args = parser.parse_args()
    device = setup_device(args)
    root = args.root or tempfile.mkdtemp(prefix="lgeom-bench-data-")
    if args.hvp_only is not None:
        hvp_s = measure_hvp(root)
        est = probe_estimate(hvp_s=hvp_s, eval_pps=args.hvp_only)
        print(
            f"HVP on 1,024 samples: {hvp_s:.3f} CPU s ({hvp_s * args.hvp_only / 1024:.1f} forward passes); "
            f"probe stage estimate: {est['hvps']} HVPs {est['hvp_s']:.0f} s + slices {est['slices_s']:.0f} s "
            f"= {est['probes_s']:.0f} s"
        )
        return
    name, train_set, evaluated, test = load(root, args.full)
    print(f"data: {name}, {len(train_set)} training images (trained on and evaluated), {len(test)} test images")

    ends = []
    t0 = time.process_time()
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("cnn", channels=16, num_classes=10, in_shape=tuple(test.in_shape)).to(device)
        spec = TrainSpec(optimizer="adam", lr=1e-3, epochs=args.epochs, batch_size=128, schedule="constant", seed=seed)
        res = train(model, train_set, None, spec, progress=False)
        ends.append(res)
        print(f"endpoint seed {seed}: train acc {res.final['train'].acc:.1f} %")
    train_sps = 2 * args.epochs * len(train_set) / (time.process_time() - t0)
    curve = build_curve("bezier", ends[0].final_params, ends[1].final_params, 1)
    t0 = time.process_time()
    fit_curve(model, curve, train_set, CurveFitSpec(lr=0.01, epochs=1, batch_size=128), progress=False)
    fit_sps = len(train_set) / (time.process_time() - t0)
    a, c, b = curve.start, curve.apex(), curve.end

    def run(cap: int | None) -> tuple[dict[str, np.ndarray], float, dict[str, int], float]:
        tr = stratified_subset(evaluated, cap, seed=0)
        te = stratified_subset(test, cap, seed=0)
        batches = {k: list(make_loader(d, EVAL_BATCH)) for k, d in (("train", tr), ("test", te))}
        t, wall = time.process_time(), time.perf_counter()
        res = plane(model, a, c, b, train=batches["train"], test=batches["test"], grid=args.grid, margin=0.2)
        return res.grids, time.process_time() - t, res.samples, time.perf_counter() - wall

    full, full_s, full_n, full_wall = run(None)
    eval_pps = args.grid**2 * sum(full_n.values()) / full_s
    print(
        f"\nplane {args.grid}x{args.grid}, full sets {full_n}: {full_s:.1f} CPU s "
        f"({eval_pps:.0f} point-samples per CPU s; wall {full_wall:.1f} s)"
    )
    print(
        "| plane_samples | train loss err max / mean | train acc err max / mean (pp) | test loss err max / mean |"
        " test acc err max / mean (pp) | CPU s (wall s) | full / cap (CPU) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cap in args.caps:
        grids, secs, n, wall = run(cap)
        err = grid_errors(full, grids)
        cells = [
            f"{err[k][0]:.4f} / {err[k][1]:.4f}" if "loss" in k else f"{err[k][0]:.2f} / {err[k][1]:.2f}"
            for k in ("train_loss", "train_acc", "test_loss", "test_acc")
        ]
        print(
            f"| {cap} ({n['train']} + {n['test']}) | "
            + " | ".join(cells)
            + f" | {secs:.1f} ({wall:.1f}) | {full_s / secs:.2f} |"
        )
    # The full sets' own sampling noise, for scale: the test loss range over the grid.
    print(
        f"\ngrid ranges (full): test loss {full['test_loss'].min():.3f}..{full['test_loss'].max():.3f}, "
        f"test acc {full['test_acc'].min():.1f}..{full['test_acc'].max():.1f} %"
    )

    # Path evaluation throughput, for the cell estimate (61 points would take long: 3 points on the full sets).
    t = time.process_time()
    full_batches = [list(make_loader(d, EVAL_BATCH)) for d in (evaluated, test)]
    evaluate_path(model, curve, np.linspace(0, 1, 3), *full_batches)
    path_pps = 3 * (len(evaluated) + len(test)) / (time.process_time() - t)
    print(
        f"\nthroughputs: train {train_sps:.0f} samples/s, curve fit {fit_sps:.0f} samples/s, "
        f"plane {eval_pps:.0f} / path {path_pps:.0f} point-samples/s"
    )
    for cap in (None, *args.caps):
        est = cell_estimate(train_sps=train_sps, fit_sps=fit_sps, eval_pps=eval_pps, cap=cap)
        label = "all 10,000 + 10,000" if cap is None else f"plane_samples={cap}"
        print(
            f"mnist-arch CNN cell estimate, 21x21 planes on {label} (2 planes; probes left out): "
            f"train {est['train_s']:.0f} s, fit {est['fit_s']:.0f} s, paths {est['path_s']:.0f} s, "
            f"planes {est['plane_s']:.0f} s -> plane share {est['plane_share']:.0%}"
        )
    est = cell_estimate(train_sps=train_sps, fit_sps=fit_sps, eval_pps=eval_pps, cap=None)
    print(f"old default (4 uncapped planes): planes {est['old_plane_s']:.0f} s, share {est['old_plane_share']:.0%}")


if __name__ == "__main__":
    main()
