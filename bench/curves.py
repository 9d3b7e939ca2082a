"""Curve-fitting step time / plain training step time, for the same model, batch and data.

Both sides are the library's real loops, measured side by side in one run: ``lgeom.train.train`` (plain
SGD training of the model) and ``lgeom.curves.fit_curve`` (SGD on the bend of a Bezier curve: phi(t),
functional_call forward, backward into the bend). The step time is the median interval between
consecutive "step" progress events, collected over interleaved rounds (train, fit, train, fit, ...) so
that load changes on the machine hit both alike. Target: ratio <= 1.3.

Also printed: the time to form phi(t) with ``torch._foreach`` list ops (what ``Curve.point`` does) versus
a per-tensor Python loop (the naive baseline).

    PYTHONPATH=. python3 bench/curves.py            # CUDA when available
    PYTHONPATH=. python3 bench/curves.py --quick    # fewer steps
    PYTHONPATH=. python3 bench/curves.py --threads 1  # one intra-op thread (a machine shared with other jobs)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench._common import add_device_arguments, setup_device
from lgeom.curves import Bezier, CurveFitSpec, fit_curve
from lgeom.data import ArrayDataset
from lgeom.models import build_model
from lgeom.params import get_params
from lgeom.train import TrainSpec, train

CASES = [
    # name, model name, options, input shape, classes, batch size
    ("PreResNet-8, 3x32x32, batch 128", "preresnet", {"depth": 8}, (3, 32, 32), 10, 128),
    ("MLP 784-512-512-10, batch 128", "mlp", {"depth": 2, "width": 512}, (784,), 10, 128),
    ("MLP 2-32-32-2 (quick preset), batch 64", "mlp", {"depth": 2, "width": 32}, (2,), 2, 64),
]


def step_intervals(events: list[tuple[str, int, float]]) -> list[float]:
    """Seconds between consecutive step events within one epoch (the first step of an epoch is skipped:
    it also pays for the epoch's start).
    """
    out = []
    prev = None
    for kind, _, stamp in events:
        if kind == "step" and prev is not None and prev[0] == "step":
            out.append(stamp - prev[1])
        prev = (kind, stamp)
    return out


def recorder(events: list[tuple[str, int, float]]):
    return lambda e: events.append((e.kind, e.step, time.perf_counter()))


def bench_case(
    name: str,
    arch: str,
    opts: dict,
    shape: tuple,
    classes: int,
    batch: int,
    steps: int,
    rounds: int,
    device: torch.device,
) -> float:
    gen = torch.Generator().manual_seed(0)
    n = batch * steps
    data = ArrayDataset(
        torch.randn(n, *shape, generator=gen), torch.randint(0, classes, (n,), generator=gen), classes
    ).to(device)
    torch.manual_seed(0)
    model = build_model(arch, num_classes=classes, in_shape=shape, **opts).to(device)
    a = get_params(model)
    torch.manual_seed(1)
    b = get_params(build_model(arch, num_classes=classes, in_shape=shape, **opts).to(device))
    curve = Bezier(a, b)
    train_spec = TrainSpec(epochs=1, batch_size=batch, lr=0.01, momentum=0.9, device=str(device), seed=0)
    fit_spec = CurveFitSpec(epochs=1, batch_size=batch, lr=0.01, momentum=0.9, seed=0)
    plain: list[float] = []
    fitted: list[float] = []
    for r in range(rounds + 1):  # round 0 warms up both
        ev_train: list = []
        train(model, data, None, train_spec, callbacks=[recorder(ev_train)], progress=False)
        ev_fit: list = []
        fit_curve(model, curve, data, fit_spec, callbacks=[recorder(ev_fit)], progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if r:
            plain += step_intervals(ev_train)
            fitted += step_intervals(ev_fit)
    t_plain, t_fit = statistics.median(plain), statistics.median(fitted)
    ratio = t_fit / t_plain
    print(
        f"{name:42s} train step {t_plain * 1e3:8.2f} ms   fit_curve step {t_fit * 1e3:8.2f} ms   "
        f"ratio {ratio:5.2f}  ({'meets' if ratio <= 1.3 else 'misses'} <= 1.3; {len(plain)}+{len(fitted)} steps)"
    )
    return ratio


def bench_point(device: torch.device, repeats: int = 200) -> None:
    torch.manual_seed(0)
    model = build_model("preresnet", num_classes=10, in_shape=(3, 32, 32), depth=8).to(device)
    a = get_params(model)
    b = {k: v + 1 for k, v in a.items()}
    curve = Bezier(a, b)
    names = list(a)

    def naive(t: float) -> dict:
        w = curve.coefficients(t)
        return {n: w[0] * a[n] + w[1] * curve.bends[0][n] + w[2] * b[n] for n in names}

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(5):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(repeats):
                fn(i / repeats)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - t0) / repeats)
        return best

    fast, slow = timed(curve.point), timed(naive)
    print(
        f"phi(t) for PreResNet-8 ({len(names)} tensors): foreach {fast * 1e6:.0f} us, per-tensor loop "
        f"{slow * 1e6:.0f} us ({slow / fast:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    add_device_arguments(parser)
    args = parser.parse_args()
    device = setup_device(args)
    bench_point(device)
    for case_name, arch, opts, shape, classes, batch in CASES:
        small = arch == "mlp" and shape == (2,)
        steps = 40 if small else (8 if device.type == "cpu" and arch == "preresnet" else 20)
        rounds = 2 if args.quick else (4 if arch == "preresnet" and device.type == "cpu" else 5)
        bench_case(case_name, arch, opts, shape, classes, batch, steps, rounds, device)


if __name__ == "__main__":
    main()
