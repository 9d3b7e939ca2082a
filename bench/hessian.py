"""Hessian probes: time to the top-5 eigenvalues, block Lanczos vs Lanczos vs PyHessian 0.1, and HVP time /
gradient time.

Measured in one run on the same trained model and data for each case: an MLP 2-32-32-2 (the quick preset's
model) on 1000 moons samples, and PreResNet-8 on 512 CIFAR-shaped (3x32x32) samples. For each case:

* reference: the top 5 by Lanczos from another start vector, run to residuals of 1e-10 or 60 steps (the
  accuracy every method is judged against);
* lgeom: ``top_eigenvalues(k=5, tol=...)`` by single-vector Lanczos (``method="lanczos"``) and by block
  Lanczos (``method="block_lanczos"``, ``--block-size`` vectors per pass), both with full
  reorthogonalisation, at tol 1e-3 and 1e-2 (still more accurate than PyHessian at its 1e-3: the "equal
  accuracy" comparison; for the MLP also 3e-2, whose errors are still below PyHessian's), with the ``rop``
  engine (the MLP only: its products written out by hand, what ``auto`` picks for lgeom's MLP), the ``cached``
  engine (gradient graphs kept; what ``auto`` picks for other models when they fit in memory), the ``stream``
  engine (the graph built once per pass and shared by the pass's vectors: what ``auto`` picks when they do not)
  and, for the MLP, the ``forward`` engine (forward-over-reverse, vmapped over a block);
* PyHessian: ``hessian(model, CrossEntropyLoss(), dataloader=batches).eigenvalues(top_n=5)`` (deflated power
  iteration, its defaults tol 1e-3 and maxIter 100), when ``pyhessian`` is importable;
* HVPs and passes: every solver's Hessian-vector products and passes over the data (one ``matmat`` per
  Lanczos or block step; one per product for PyHessian);
* small chunks (``--cases chunks``): block vs single-vector Lanczos with the stream engine over the MLP's data
  held in 20 chunks of 50 that may not be merged, where a pass (20 small graph builds) dominates;
* HVP / gradient: one Hessian-vector product over the data (forward, cached, stream and, for the MLP, rop
  engines; and per vector when a block of ``--block-size`` vectors is applied in one pass, one after another or
  batched) against one plain autograd gradient.

Timings of the eigenvalue solvers are interleaved rounds (Lanczos, block, ..., PyHessian, Lanczos, ...) and
medians, so load changes on a shared machine hit all alike. Targets: top-5 at equal accuracy >= 20x
PyHessian on the CPU MLP, block faster than Lanczos where a pass over the data dominates; HVP <= 2.5x a
gradient.

    PYTHONPATH=. python3 bench/hessian.py --threads 1 # one intra-op thread (a machine shared with other jobs)
    PYTHONPATH=. python3 bench/hessian.py             # torch's default threads; CUDA when available
    PYTHONPATH=. python3 bench/hessian.py --quick     # smaller data, one round
    PYTHONPATH=. python3 bench/hessian.py --threads 1 --cpu-time  # CPU time instead of wall time
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench._common import add_device_arguments, setup_device
from lgeom.data import ArrayDataset, build_dataset
from lgeom.hessian import HessianOperator, block_lanczos_eigenvalues, lanczos_eigenvalues, top_eigenvalues
from lgeom.models import build_model
from lgeom.train import TrainSpec, train

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Seconds ``fn`` took (wall clock, or this process's CPU time with ``--cpu-time``) and its result."""
    clock = time.process_time if CPU_TIME else time.perf_counter
    sync(device)
    t0 = clock()
    out = fn()
    sync(device)
    return clock() - t0, out


# --cpu-time: time solvers by this process's CPU time (one intra-op thread: what the work costs, without the
# waits a machine shared with other jobs adds to wall time).
CPU_TIME = False


def make_case(name: str, n: int, device: torch.device, epochs: int) -> tuple[nn.Module, Batches]:
    """A briefly trained model and its data (batches on the device), eval mode with trained BN statistics."""
    torch.manual_seed(0)
    if name == "mlp":
        ds = build_dataset("moons", "train", n_train=n, n_test=10, seed=0, noise=0.2)
        model = build_model("mlp", num_classes=2, in_shape=(2,), depth=2, width=32)
        batch = 250
    else:
        gen = torch.Generator().manual_seed(0)
        ds = ArrayDataset(
            torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen), 10, "cifar-shaped"
        )
        model = build_model("preresnet", num_classes=10, in_shape=(3, 32, 32), depth=8)
        batch = 128
    device_name = "cuda" if device.type == "cuda" else "cpu"
    train(model, ds, spec=TrainSpec(epochs=epochs, batch_size=batch, lr=0.05, device=device_name), progress=False)
    model.eval()
    x, y = ds.inputs.to(device), ds.targets.to(device)
    return model, [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def gradient_pass(model: nn.Module, batches: Batches) -> None:
    """One plain autograd gradient of the summed loss over the data (the baseline the HVP is compared with)."""
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        F.cross_entropy(model(x), y, reduction="sum").backward()


def pyhessian_top5(model: nn.Module, batches: Batches, device: torch.device) -> tuple[list[float], int]:
    """PyHessian's top 5 and the passes over the data it made (one per Hessian-vector product)."""
    from pyhessian import hessian

    model.zero_grad(set_to_none=True)
    h = hessian(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=device.type == "cuda")
    passes = 0
    product = h.dataloader_hv_product

    def counted(v: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        nonlocal passes
        passes += 1
        return product(v)

    h.dataloader_hv_product = counted
    values, _ = h.eigenvalues(top_n=5, tol=1e-3)
    model.zero_grad(set_to_none=True)
    return sorted((float(v) for v in values), reverse=True), passes


def times_x(ratio: float) -> str:
    """``"0.45x"``, or ``"n/a"`` for an engine the case's model does not take (NaN)."""
    return "n/a" if ratio != ratio else f"{ratio:.2f}x"


def rel_err(values: list[float] | np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(values) - ref) / np.abs(ref)))


# A solver configuration: (method, engine, tol) with method "lanczos" or "block_lanczos".
Config = tuple[str, str, float]


def config_name(config: Config, block_size: int) -> str:
    method, engine, tol = config
    name = "Lanczos" if method == "lanczos" else f"block Lanczos b={block_size}"
    return f"{name} ({engine}, tol {tol:g})"


def run_case(
    name: str,
    label: str,
    n: int,
    epochs: int,
    rounds: int,
    hvp_reps: int,
    device: torch.device,
    configs: list[Config],
    block_size: int,
) -> dict:
    model, batches = make_case(name, n, device, epochs)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n== {label}: {n_params} parameters, {n} samples in {len(batches)} batches ==")
    # An independent reference: another start vector than the timed runs, residual tolerance 1e-10 (at most
    # 60 steps, beyond float32 reach on the conv net); its residuals bound its own error.
    ref = lanczos_eigenvalues(
        HessianOperator(model, batches, engine="cached"), 5, tol=1e-10, max_iter=min(n_params, 60), seed=12345
    )
    print(
        f"reference top-5 (Lanczos, {ref.n_hvp} HVPs, "
        f"max relative residual {np.max(ref.residuals / np.abs(ref.values)):.1e}): "
        f"{np.array2string(ref.values, precision=6)}"
    )
    try:
        import pyhessian  # noqa: F401

        have_pyhessian = True
    except ImportError:
        have_pyhessian = False
        print("pyhessian is not importable: skipping the PyHessian comparison (pip install pyhessian==0.1)")

    def solve(config: Config) -> object:
        method, engine, tol = config
        return top_eigenvalues(
            model,
            batches,
            k=5,
            method=method,
            tol=tol,
            engine=engine,
            block_size=block_size if method == "block_lanczos" else None,
        )

    times: dict[object, list[float]] = {c: [] for c in configs}
    times["pyhessian"] = []
    results: dict[object, object] = {}
    for _ in range(rounds):
        for config in configs:
            t, res = timed(lambda config=config: solve(config), device)
            times[config].append(t)
            results[config] = res
        if have_pyhessian:
            t, out_ph = timed(lambda: pyhessian_top5(model, batches, device), device)
            times["pyhessian"].append(t)
            results["pyhessian"] = out_ph
    out: dict[str, object] = {"label": label, "n_params": n_params, "ref": ref.values, "solvers": {}}
    pyh = None
    if have_pyhessian:
        vals, passes = results["pyhessian"]  # type: ignore[misc]
        pyh = (statistics.median(times["pyhessian"]), rel_err(vals, ref.values), passes)
        out["pyhessian"] = pyh
        print(
            f"{'PyHessian power (tol 1e-3)':40s}: {pyh[0]:8.3f} s  {passes:4d} HVPs {passes:4d} passes  "
            f"max rel err {pyh[1]:.1e}  values {np.array2string(np.asarray(vals), precision=6)}"
        )
    for config in configs:
        res = results[config]
        t = statistics.median(times[config])
        # One matmat per Lanczos step or block step: a pass over the data (over the cached graphs for "cached").
        row = (t, rel_err(res.values, ref.values), res.n_hvp, res.n_iter)  # type: ignore[attr-defined]
        out["solvers"][config] = row  # type: ignore[index]
        versus = ""
        if pyh is not None:
            verdict = "at least as accurate" if row[1] <= pyh[1] else "LESS accurate"
            versus = f"  {pyh[0] / t:5.1f}x PyHessian ({verdict})"
        if config[0] == "block_lanczos" and ("lanczos", config[1], config[2]) in out["solvers"]:  # type: ignore[operator]
            versus += f"  {out['solvers'][('lanczos', config[1], config[2])][0] / t:4.2f}x Lanczos"  # type: ignore[index]
        print(
            f"{config_name(config, block_size):40s}: {t:8.3f} s  {row[2]:4d} HVPs {row[3]:4d} passes  "
            f"max rel err {row[1]:.1e}{versus}"
        )

    fwd = HessianOperator(model, batches, engine="forward")
    cached = HessianOperator(model, batches, engine="cached")
    rop = HessianOperator(model, batches, engine="rop") if name == "mlp" else None
    stream = HessianOperator(model, batches, engine="stream")
    cached_batched = HessianOperator(model, batches, engine="cached", batch_vectors=True)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(fwd.size, generator=gen).to(device)
    vs = torch.randn(block_size, fwd.size, generator=gen).to(device)
    t_build, _ = timed(lambda: cached.matvec(v), device)  # the first product builds the graphs
    # Interleaved rounds (gradient, HVPs, gradient, ...) so that load changes hit every measurement alike.
    kinds = {
        "grad": lambda: gradient_pass(model, batches),
        "fwd": lambda: fwd.matvec(v),
        "cached": lambda: cached.matvec(v),
        "stream": lambda: stream.matvec(v),
        "fwd_block": lambda: fwd.matmat(vs),
        "cached_block": lambda: cached.matmat(vs),
        "stream_block": lambda: stream.matmat(vs),
        "batched_block": lambda: cached_batched.matmat(vs),
    }
    if rop is not None:
        kinds["rop"] = lambda: rop.matvec(v)
        kinds["rop_block"] = lambda: rop.matmat(vs)
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for fn in kinds.values():
        fn()  # warm-up
    for _ in range(hvp_reps):
        for k, fn in kinds.items():
            samples[k].append(timed(fn, device)[0])
    med = {k: statistics.median(x) for k, x in samples.items()}
    t_grad = med["grad"]
    auto = HessianOperator(model, batches, engine="auto").engine
    out["grad"] = t_grad
    out["ratios"] = {
        "fwd": med["fwd"] / t_grad,
        "cached": med["cached"] / t_grad,
        "build": t_build / t_grad,
        "fwd_block": med["fwd_block"] / block_size / t_grad,
        "cached_block": med["cached_block"] / block_size / t_grad,
        "stream": med["stream"] / t_grad,
        "stream_block": med["stream_block"] / block_size / t_grad,
        "batched_block": med["batched_block"] / block_size / t_grad,
        "rop": med["rop"] / t_grad if rop is not None else float("nan"),
        "rop_block": med["rop_block"] / block_size / t_grad if rop is not None else float("nan"),
    }
    r = out["ratios"]
    print(
        f"gradient over the data: {1e3 * t_grad:.2f} ms; HVP / gradient: forward-over-reverse {r['fwd']:.2f}x, "  # type: ignore[index]
        f"cached {r['cached']:.2f}x (first product incl. graph build {r['build']:.2f}x); "  # type: ignore[index]
        f"per vector with {block_size} "
        f"vectors per pass: forward {r['fwd_block']:.2f}x (vectorised: {fwd.vectorize}), "  # type: ignore[index]
        f"cached {r['cached_block']:.2f}x (batched: {r['batched_block']:.2f}x); "  # type: ignore[index]
        f"stream {r['stream']:.2f}x, {block_size} per pass {r['stream_block']:.2f}x per vector; "  # type: ignore[index]
        f"rop {times_x(r['rop'])}, {block_size} per pass {times_x(r['rop_block'])} per vector; "  # type: ignore[index]
        f"engine='auto' (the estimators' default) picks {auto!r} here"
    )
    return out


def small_chunks_case(device: torch.device, rounds: int, chunk: int, n: int = 1000) -> None:
    """Block vs single-vector Lanczos where a pass dominates: the stream engine over ``n`` MLP samples kept in
    chunks of ``chunk`` (``merge_bytes=1``: a memory cap that allows no merging), so every pass builds
    ``n / chunk`` small graphs, each call dominated by per-call overhead; the block's vectors go through one
    batched double backward per chunk (``batch_vectors=True``) or one after another.
    """
    model, batches = make_case("mlp", n, device, 20)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    data = [(x[i : i + chunk], y[i : i + chunk]) for i in range(0, n, chunk)]

    def op(batched: bool) -> HessianOperator:
        return HessianOperator(model, data, engine="stream", merge_bytes=1, batch_vectors=batched)

    solvers: dict[str, Callable[[], object]] = {"Lanczos": lambda: lanczos_eigenvalues(op(False), 5, tol=1e-3)}
    for b in (2, 3, 5):
        for batched in (False, True):
            solvers[f"block b={b}{', batched' if batched else ''}"] = lambda b=b, batched=batched: (
                block_lanczos_eigenvalues(op(batched), 5, block_size=b, tol=1e-3)
            )
    times: dict[str, list[float]] = {k: [] for k in solvers}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for k, fn in solvers.items():
            t, results[k] = timed(fn, device)
            times[k].append(t)
    t_lanczos = statistics.median(times["Lanczos"])
    print(f"\n== stream engine, {n} MLP samples in {len(data)} chunks of {chunk}, tol 1e-3 ==")
    print("| solver | time (s) | HVPs | passes | block vs Lanczos |")
    print("|---|---|---|---|---|")
    for k in solvers:
        t, res = statistics.median(times[k]), results[k]
        print(f"| {k} | {t:.3f} | {res.n_hvp} | {res.n_iter} | {t_lanczos / t:.2f}x |")  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and one round")
    add_device_arguments(parser)
    parser.add_argument(
        "--cases", default="mlp,preresnet,chunks", help="comma-separated: mlp, preresnet, chunks (small chunks)"
    )
    parser.add_argument("--block-size", type=int, default=5, help="block Lanczos block size (default 5 = k)")
    parser.add_argument(
        "--rounds", type=int, default=0, help="solver rounds per case (0: 5 for the MLP, 1 for PreResNet-8)"
    )
    parser.add_argument("--cpu-time", action="store_true", help="time by this process's CPU time, not wall time")
    args = parser.parse_args()
    global CPU_TIME
    CPU_TIME = args.cpu_time
    print(f"clock: {'process CPU time' if CPU_TIME else 'wall time'}")
    device = setup_device(args)
    every = [
        ("lanczos", "rop", 1e-3),
        ("block_lanczos", "rop", 1e-3),
        ("lanczos", "rop", 1e-2),
        ("lanczos", "rop", 3e-2),
        ("lanczos", "cached", 1e-3),
        ("block_lanczos", "cached", 1e-3),
        ("lanczos", "cached", 1e-2),
        ("block_lanczos", "cached", 1e-2),
        ("lanczos", "stream", 1e-3),
        ("block_lanczos", "stream", 1e-3),
        ("lanczos", "forward", 1e-3),
        ("block_lanczos", "forward", 1e-3),
    ]
    # PreResNet-8: tol 1e-3 with the cached and stream engines only. The forward engine loops over the vectors
    # of a block for conv nets (no batching to gain from) and is slower per product, and tol 1e-3 is already
    # more accurate than PyHessian; leaving the rest out keeps the case near 10 minutes on a shared 2-core CPU.
    cached_only = [c for c in every if c[1] in ("cached", "stream") and c[2] == 1e-3]
    cases = {
        "mlp": (
            "mlp",
            "MLP 2-32-32-2 on moons",
            1000 if not args.quick else 500,
            20,
            5 if not args.quick else 1,
            200 if not args.quick else 20,
            every,
        ),
        "preresnet": (
            "preresnet",
            "PreResNet-8 on CIFAR-shaped 3x32x32",
            512 if not args.quick else 128,
            2,
            1,
            2,
            cached_only,
        ),
    }
    results = [
        run_case(name, label, n, epochs, args.rounds or rounds, reps, device, configs, args.block_size)
        for key, (name, label, n, epochs, rounds, reps, configs) in cases.items()
        if key in args.cases.split(",")
    ]
    if "chunks" in args.cases.split(","):
        small_chunks_case(device, args.rounds or (1 if args.quick else 5), 50)
    print("\n| case | solver | time (s) | HVPs | passes | max rel err | speed-up vs PyHessian | block vs Lanczos |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        p = r.get("pyhessian")
        if p:
            print(
                f"| {r['label']} ({r['n_params']} params) | PyHessian (tol 1e-3) "
                f"| {p[0]:.3f} | {p[2]} | {p[2]} | {p[1]:.1e} | 1 | |"
            )
        for config, (t, err, hvps, passes) in r["solvers"].items():
            lanczos = r["solvers"].get(("lanczos", config[1], config[2]))
            vs_lanczos = f"{lanczos[0] / t:.2f}x" if config[0] == "block_lanczos" and lanczos else ""
            print(
                f"| {r['label']} | {config_name(config, args.block_size)} | {t:.3f} | {hvps} | {passes} | {err:.1e} | "
                f"{p[0] / t:.1f}x | {vs_lanczos} |"
                if p
                else f"| {r['label']} | {config_name(config, args.block_size)} | {t:.3f} | "
                f"{hvps} | {passes} | {err:.1e} | n/a | {vs_lanczos} |"
            )
    print(
        "\n| case | HVP/grad forward | cached | stream | rop | per vector, block of B: forward | cached "
        "| cached batched | stream | rop |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        q = r["ratios"]
        print(
            f"| {r['label']} | {q['fwd']:.2f}x | {q['cached']:.2f}x | {q['stream']:.2f}x | {times_x(q['rop'])} "
            f"| {q['fwd_block']:.2f}x | {q['cached_block']:.2f}x | {q['batched_block']:.2f}x "
            f"| {q['stream_block']:.2f}x | {times_x(q['rop_block'])} |"
        )


if __name__ == "__main__":
    main()
