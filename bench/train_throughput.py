"""Training throughput (samples/s): lgeom.train vs a bare PyTorch loop on the same model, data and device.

Two workloads: an MLP (2x64) on moons, and PreResNet-8 on CIFAR-shaped random tensors (3x32x32). Both
loops run in this process, one after the other, after a warm-up epoch; the ratio lgeom / bare shows what
lgeom's loop (schedule, finiteness checks, metrics, callbacks) costs.

    PYTHONPATH=. python3 bench/train_throughput.py [--epochs 3] [--cifar-samples 2048]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench._common import add_device_arguments, setup_device
from lgeom.data import ArrayDataset, build_dataset, make_loader
from lgeom.models import build_model
from lgeom.seed import set_seed
from lgeom.train import TrainSpec, train


def bare_loop(model: torch.nn.Module, data: ArrayDataset, spec: TrainSpec, device: torch.device) -> float:
    """Samples/s of a minimal SGD loop (no schedule, checks or metrics)."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)
    loader = make_loader(data, spec.batch_size, shuffle=True, seed=0)
    n = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(spec.epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += yb.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def lgeom_loop(model: torch.nn.Module, data: ArrayDataset, spec: TrainSpec) -> float:
    """Samples/s of lgeom.train (training only; no test set)."""
    result = train(model, data, None, spec, progress=False)
    return result.samples_per_s


def measure(name: str, build: callable, data: ArrayDataset, spec: TrainSpec, device: torch.device) -> dict[str, float]:
    warm = TrainSpec(**{**spec.__dict__, "epochs": 1})
    bare_loop(build(), data, warm, device)
    set_seed(0)
    bare = bare_loop(build(), data, spec, device)
    set_seed(0)
    ours = lgeom_loop(build(), data, spec)
    print(f"{name:<28} bare {bare:>11.0f} samples/s   lgeom {ours:>11.0f} samples/s   lgeom/bare {ours / bare:.2f}")
    return {"bare": bare, "lgeom": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cifar-samples", type=int, default=2048)
    add_device_arguments(parser)
    args = parser.parse_args()
    device = setup_device(args)

    moons = build_dataset("moons", "train", n_train=4000, n_test=100)
    mlp_spec = TrainSpec(lr=0.05, epochs=args.epochs * 3, batch_size=128, device=str(device))
    measure(
        "MLP 2x64 / moons (bs 128)",
        lambda: build_model("mlp", num_classes=2, in_shape=(2,), depth=2, width=64),
        moons,
        mlp_spec,
        device,
    )

    gen = torch.Generator().manual_seed(0)
    cifar = ArrayDataset(
        torch.randn(args.cifar_samples, 3, 32, 32, generator=gen),
        torch.randint(0, 10, (args.cifar_samples,), generator=gen),
        10,
    )
    if device.type == "cuda":
        cifar = cifar.to(device)
    res_spec = TrainSpec(lr=0.1, epochs=args.epochs, batch_size=128, device=str(device))
    measure(
        "PreResNet-8 / 3x32x32 (bs 128)",
        lambda: build_model("preresnet", num_classes=10, in_shape=(3, 32, 32), depth=8),
        cifar,
        res_spec,
        device,
    )


if __name__ == "__main__":
    main()
