"""Convolutional models on the CPU: channels-last layout and batches cut into slices, each side by side with
torch's defaults on the same model and batches, in interleaved rounds (median CPU seconds per side).

1. ``lgeom.evaluate`` (loss and accuracy without autograd: what path evaluation, planes and slices run) on
   ``mnist-arch``'s batches of 1,000 images (PreResNet: 500): NCHW on whole batches (before), channels-last
   (``lgeom.models._layers.CPU_CHANNELS_LAST``), slices of about 16 MiB of activations
   (``lgeom.evaluate.CPU_SLICE_BYTES``), and both (lgeom's default). The largest difference of the mean
   losses checks they compute the same thing.
2. One Hessian-vector product of ``HessianOperator(engine="cached")`` over the probes' batches of 256 (128
   for PreResNet-8): batches merged into chunks of up to 256 MiB of graph and never split (before) against the
   CPU's 16 MiB chunks, big batches split (now); relative difference of the products.
3. A training step (forward inside ``channels_last_steps``, as ``train`` and ``fit_curve`` run it, backward,
   SGD step) on a batch of 128 with the switch off and on.
4. Why double backward stays NCHW: one Hessian-vector product with the input in each layout.

    PYTHONPATH=. python3 bench/conv_layout.py             # one intra-op thread (what a 1-CPU trial gets)
    PYTHONPATH=. python3 bench/conv_layout.py --rounds 7
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import lgeom.models._layers as layers
from lgeom.hessian import HessianOperator
from lgeom.models import build_model

# The module (``lgeom.evaluate`` the attribute is the function of that name).
evaluation = importlib.import_module("lgeom.evaluate")
CASES = [
    # name, model, options, input shape, evaluation samples and batch, probe samples and batch
    ("CNN 16 (mnist-arch)", "cnn", {"channels": 16}, (1, 28, 28), (2000, 1000), (1024, 256)),
    ("ResCNN 16 (mnist-arch)", "rescnn", {"channels": 16}, (1, 28, 28), (2000, 1000), (1024, 256)),
    ("PreResNet-8 (BN), 3x32x32", "preresnet", {"depth": 8}, (3, 32, 32), (1000, 500), (512, 128)),
]
SIDES = {"before": (False, 0), "channels-last": (True, 0), "slices": (False, evaluation.CPU_SLICE_BYTES)}
SIDES["both (default)"] = (True, evaluation.CPU_SLICE_BYTES)


def cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU seconds of this process while ``fn`` runs."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def batches(shape: tuple[int, ...], samples: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded random images and labels in batches."""
    gen = torch.Generator().manual_seed(samples)
    x, y = torch.randn(samples, *shape, generator=gen), torch.randint(0, 10, (samples,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, samples, batch)]


def bench_evaluate(rounds: int) -> None:
    """Table 1: a pass of ``evaluate`` per side."""
    print("\n| case, samples in batches of | " + " | ".join(f"{s}, s" for s in SIDES) + " | speed-up | max loss diff |")
    print("| --- " * (len(SIDES) + 3) + "|")
    for name, arch, options, shape, (samples, batch), _ in CASES:
        model = build_model(arch, num_classes=10, in_shape=shape, **options).eval()
        data = batches(shape, samples, batch)
        times: dict[str, list[float]] = {s: [] for s in SIDES}
        losses: dict[str, float] = {}
        for _ in range(rounds):
            for side, (channels_last, slice_bytes) in SIDES.items():
                layers.CPU_CHANNELS_LAST, evaluation.CPU_SLICE_BYTES = channels_last, slice_bytes
                out: dict[str, float] = {}
                times[side].append(cpu_seconds(lambda: out.update(loss=evaluation.evaluate(model, data).loss)))  # noqa: B023
                losses[side] = out["loss"]
        layers.CPU_CHANNELS_LAST, evaluation.CPU_SLICE_BYTES = SIDES["both (default)"]
        med = {s: statistics.median(t) for s, t in times.items()}
        diff = max(abs(v - losses["before"]) for v in losses.values())
        cells = " | ".join(f"{med[s]:.3f}" for s in SIDES)
        print(f"| {name}, {samples} in {batch} | {cells} | {med['before'] / med['both (default)']:.2f}x | {diff:.1e} |")


def bench_products(rounds: int) -> None:
    """Table 2: one Hessian-vector product, chunks before and now."""
    print("\n| case, samples in batches of | chunks before | s | chunks now | s | speed-up | rel diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, arch, options, shape, _, (samples, batch) in CASES:
        model = build_model(arch, num_classes=10, in_shape=shape, **options)
        data = batches(shape, samples, batch)
        ops = {
            "before": HessianOperator(model, data, engine="cached", merge_bytes=256 * 2**20, split_bytes=2**50),
            "now": HessianOperator(model, data, engine="cached"),
        }
        vec = torch.randn(1, ops["now"].size, generator=torch.Generator().manual_seed(1))
        prods = {k: op.matmat(vec) for k, op in ops.items()}  # builds and caches the graphs
        times: dict[str, list[float]] = {k: [] for k in ops}
        for _ in range(rounds):
            for key, op in ops.items():
                times[key].append(cpu_seconds(lambda: op.matmat(vec)))  # noqa: B023
        med = {k: statistics.median(t) for k, t in times.items()}
        rel = float((prods["now"] - prods["before"]).norm() / prods["before"].norm())

        def show(sizes: list[int]) -> str:
            return f"{len(sizes)} x {sizes[0]}" if len(set(sizes)) == 1 else "+".join(map(str, sizes))

        print(
            f"| {name}, {samples} in {batch} | {show(ops['before'].chunk_sizes)} | {med['before']:.3f} | "
            f"{show(ops['now'].chunk_sizes)} | {med['now']:.3f} | {med['before'] / med['now']:.2f}x | {rel:.1e} |"
        )


def bench_training_steps(rounds: int) -> None:
    """Table 3: a training step with the switch off and on."""
    print("\n| case, batch | NCHW, s/step | channels-last, s/step | speed-up |")
    print("| --- | --- | --- | --- |")
    for name, arch, options, shape, _, _ in CASES:
        model = build_model(arch, num_classes=10, in_shape=shape, **options)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        xb, yb = batches(shape, 128, 128)[0]

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)  # noqa: B023
            with layers.channels_last_steps():
                logits = model(xb)  # noqa: B023
            F.cross_entropy(logits, yb).backward()  # noqa: B023
            optimizer.step()  # noqa: B023

        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for flag in (False, True):
                layers.CPU_CHANNELS_LAST = flag
                times[flag].append(cpu_seconds(lambda: [step() for _ in range(5)]) / 5)
        layers.CPU_CHANNELS_LAST = True
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name}, 128 | {off:.4f} | {on:.4f} | {off / on:.2f}x |")


def bench_layout_under_autograd(rounds: int) -> None:
    """Table 4: a double backward with the input NCHW or channels-last."""
    print("\n| case, samples | NCHW input, s | channels-last input, s | speed-up |")
    print("| --- | --- | --- | --- |")
    for name, arch, options, shape, _, (_, batch) in CASES:
        if shape[0] == 1:  # one input channel: both layouts are the same tensor
            continue
        model = build_model(arch, num_classes=10, in_shape=shape, **options).eval()
        xb, yb = batches(shape, batch, batch)[0]
        params = [p for p in model.parameters() if p.requires_grad]
        vec = [torch.randn_like(p) for p in params]

        def hvp(inputs: torch.Tensor) -> None:
            grads = torch.autograd.grad(F.cross_entropy(model(inputs), yb), params, create_graph=True)  # noqa: B023
            torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vec)), params)  # noqa: B023

        sides = {"nchw": xb.contiguous(), "cl": xb.contiguous(memory_format=torch.channels_last)}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(rounds):
            for key, inputs in sides.items():
                times[key].append(cpu_seconds(lambda: hvp(inputs)))  # noqa: B023
        nchw, cl = statistics.median(times["nchw"]), statistics.median(times["cl"])
        print(f"| {name}, {batch} | {nchw:.3f} | {cl:.3f} | {nchw / cl:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per side (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} interleaved rounds, CPU seconds")
    bench_evaluate(args.rounds)
    bench_products(args.rounds)
    bench_training_steps(args.rounds)
    bench_layout_under_autograd(max(3, args.rounds // 2))


if __name__ == "__main__":
    main()
