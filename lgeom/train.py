"""Training endpoints: ``train(model, train_data, test_data, spec) -> TrainResult``.

Deterministic for a given seed on the CPU (shuffling comes from a generator seeded by ``spec.seed``).
With ``checkpoint_dir`` the loop saves its whole state after every ``checkpoint_every`` epochs and a rerun
resumes from the last saved epoch, bit-for-bit on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from lgeom import names
from lgeom._checks import expected
from lgeom.data import make_loader
from lgeom.device import resolve_device
from lgeom.evaluate import EvalResult, evaluate
from lgeom.models._layers import channels_last_steps
from lgeom.optim import OptimSpec, build_optimizer, lr_factor, set_lr
from lgeom.params import Params, flatten, get_buffers, get_params, load_params
from lgeom.progress import Callback, ProgressEvent, emit, resolve_callbacks
from lgeom.safe_io import load_plain, save_plain
from lgeom.seed import set_seed
from lgeom.specs import Problem, neutral_setting
from lgeom.table import Table

#: Samples (the first ones of the unaugmented training set) and Lanczos steps of ``track_hessian_every``.
TRACK_HESSIAN_SAMPLES = 256
TRACK_HESSIAN_ITER = 12
#: History columns of ``track_hessian_every`` (the contract's ``train/<endpoint>/<column>`` series).
TRACK_QUANTITIES = names.TRACK_QUANTITIES
#: Optimisers whose stability threshold 2 / lr is tracked next to lambda_max.
_TWO_OVER_LR_OPTIMIZERS = ("sgd",)


def tracked_sharpness(model: nn.Module, data: Dataset, seed: int) -> float:
    """The top Hessian eigenvalue of ``model``'s loss on the first :data:`TRACK_HESSIAN_SAMPLES` samples of
    ``data`` (eval mode, :data:`TRACK_HESSIAN_ITER` Lanczos steps, loose tolerance): cheap enough to track
    during training. The model's train/eval mode is restored.
    """
    from lgeom.hessian import top_eigenvalues  # lgeom.hessian is heavier than the training loop needs

    was_training = model.training
    n = min(TRACK_HESSIAN_SAMPLES, len(data))  # type: ignore[arg-type]
    device = next(model.parameters()).device
    batch = next(iter(make_loader(torch.utils.data.Subset(data, range(n)), n, shuffle=False)))
    batches = [(batch[0].to(device), batch[1].to(device))]
    try:
        result = top_eigenvalues(model, batches, k=1, max_iter=TRACK_HESSIAN_ITER, tol=1e-2, seed=seed)
    finally:
        model.train(was_training)
    return float(result.values[0])


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; carries ``epoch``, ``step`` and ``value``."""

    def __init__(self, epoch: int, step: int, value: float, task: str = "training") -> None:
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"{task} loss became {value} at epoch {epoch}, step {step} (global step): "
            f"expected a finite loss; lower the learning rate or check the data"
        )


def check_finite_losses(pending: list[tuple[int, torch.Tensor]], epoch: int, *, task: str = "training") -> None:
    """Raise for the first non-finite loss among ``pending`` ``(global step, loss tensor)`` pairs of the
    0-based ``epoch`` (checked together, one device sync), naming ``task`` in the message.

    Raises:
        NonFiniteLossError: a loss is NaN or infinite (its 1-based epoch, its step and its value).
    """
    if not pending:
        return
    values = torch.stack([v for _, v in pending])
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    i = int((~finite).nonzero()[0])
    raise NonFiniteLossError(epoch + 1, pending[i][0], float(values[i]), task=task)


@dataclass(frozen=True)
class TrainSpec(OptimSpec):
    """Optimiser, schedule (see :class:`~lgeom.optim.OptimSpec`) and the training loop's settings.

    Attributes:
        epochs: passes over the training data.
        batch_size: samples per step.
        seed: seeds shuffling (and everything else through :func:`~lgeom.seed.set_seed`).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
        amp: bfloat16 autocast on CUDA (ignored on the CPU).
        snapshot_every: keep the flat parameter vector every k steps (0: never), for the PCA plane.
        grad_snapshot_every: keep the flat gradient every k steps (0: never), for effective dimensionality.
        eval_every: evaluate the test set every k epochs (and always after the last).
        num_workers: DataLoader workers for datasets that are not in memory.
        checkpoint_every: with a checkpoint folder, save the loop state every k epochs.
        track_hessian_every: every k epochs (0: never) estimate the top Hessian eigenvalue of the current
            weights (a few Lanczos steps on the first :data:`TRACK_HESSIAN_SAMPLES` training samples, eval
            mode) into history column ``lambda_max``, and for SGD ``two_over_lr`` = 2 / lr, the stability
            threshold that full-batch gradient descent's sharpness hovers at (edge of stability).
    """

    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    # Where and how the loop runs, not what it computes: caches and config hashes leave these out.
    device: str = neutral_setting("auto", "the device computes the same training run")
    amp: bool = False
    snapshot_every: int = 0
    grad_snapshot_every: int = 0
    eval_every: int = 1
    num_workers: int = neutral_setting(0, "loader workers deliver the same batches")
    checkpoint_every: int = neutral_setting(1, "a resumed run continues bit-for-bit")
    track_hessian_every: int = 0

    def problems(self) -> list[Problem]:
        """Every invalid field (empty when valid)."""
        out = super().problems()
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                out.append(Problem(name, f"expected an integer > 0, got {v!r}"))
        for name in ("seed", "snapshot_every", "grad_snapshot_every", "num_workers", "track_hessian_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                out.append(Problem(name, f"expected an integer >= 0, got {v!r}"))
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            out.append(Problem("device", f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"))
        return out


@dataclass
class TrainResult:
    """What :func:`train` returns (tensors on the CPU).

    Attributes:
        history: per-epoch table: ``epoch`` (1-based), ``lr`` (at the epoch's end), ``train_loss`` and
            ``train_acc`` (running averages over the epoch in train mode), ``test_loss``, ``test_acc``
            (eval mode; NaN on epochs not evaluated), ``time_s``.
        init_params, init_buffers: the model at initialisation.
        final_params, final_buffers: the trained model.
        final: ``{"train": EvalResult, "test": EvalResult}`` of the trained model in eval mode.
        snapshots, snapshot_steps: flat parameter vectors and the global steps they were taken at.
        grad_snapshots, grad_steps: flat mini-batch gradients and their steps.
        steps: optimiser steps taken in total.
        wall_time_s: seconds spent in this call (not counting epochs restored from a checkpoint).
        samples_per_s: training throughput of this call.
        resumed_from_epoch: epochs restored from a checkpoint (0 for a fresh run).
    """

    history: Table
    init_params: Params
    init_buffers: Params
    final_params: Params
    final_buffers: Params
    final: dict[str, EvalResult]
    snapshots: list[torch.Tensor] = field(default_factory=list)
    snapshot_steps: list[int] = field(default_factory=list)
    grad_snapshots: list[torch.Tensor] = field(default_factory=list)
    grad_steps: list[int] = field(default_factory=list)
    steps: int = 0
    wall_time_s: float = 0.0
    samples_per_s: float = 0.0
    resumed_from_epoch: int = 0

    @property
    def final_state(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the trained model (a ``state_dict``)."""
        return {**self.final_params, **self.final_buffers}

    @property
    def init_state(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers at initialisation (a ``state_dict``)."""
        return {**self.init_params, **self.init_buffers}


def _cpu(d: Params) -> Params:
    return {k: v.detach().to("cpu", copy=True) for k, v in d.items()}


def train(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset | None = None,
    spec: TrainSpec | None = None,
    *,
    train_eval_data: Dataset | None = None,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy and return its history and checkpoints.

    Args:
        model: the network (moved to ``spec.device``).
        train_data: training set (map-style dataset, e.g. from :func:`~lgeom.data.build_dataset`).
        test_data: test set evaluated every ``spec.eval_every`` epochs, or ``None``.
        spec: optimiser, schedule and loop settings (default ``TrainSpec()``).
        train_eval_data: unaugmented training set for the final train loss/accuracy (default: ``train_data``).
        callbacks: receive :class:`~lgeom.progress.ProgressEvent` (task ``"train"``) per step and epoch.
        progress: add a tqdm bar.
        checkpoint_dir: folder for ``init.pt``, ``last.pt`` (the resumable loop state) and ``final.pt``.

    Returns:
        :class:`TrainResult`.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names the epoch and step).
        ValueError: empty training data.
    """
    spec = spec or TrainSpec()
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise expected("train_data", "a non-empty dataset", "an empty one (0 samples)")
    set_seed(spec.seed)
    device = resolve_device(spec.device)
    model.to(device)
    loader = make_loader(train_data, spec.batch_size, shuffle=True, seed=spec.seed, num_workers=spec.num_workers)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * spec.epochs
    optimizer = build_optimizer(model.parameters(), spec)
    use_amp = spec.amp and device.type == "cuda"

    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    init_params, init_buffers = _cpu(get_params(model)), _cpu(get_buffers(model))
    rows: list[dict[str, float]] = []
    snapshots: list[torch.Tensor] = []
    snapshot_steps: list[int] = []
    grads: list[torch.Tensor] = []
    grad_steps: list[int] = []
    start_epoch, step = 0, 0
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if (ckpt / "last.pt").exists():
            state = load_plain(
                ckpt / "last.pt", "training checkpoint", "the loop state written by lgeom.train (plain data)"
            )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            loader.generator.set_state(state["loader_generator"])
            torch.set_rng_state(state["torch_rng"])
            init_params, init_buffers = state["init_params"], state["init_buffers"]
            rows, step, start_epoch = state["rows"], state["step"], state["epoch"]
            snapshots, snapshot_steps = state["snapshots"], state["snapshot_steps"]
            grads, grad_steps = state["grads"], state["grad_steps"]
        else:
            save_plain({"params": init_params, "buffers": init_buffers}, ckpt / "init.pt")

    cbs = resolve_callbacks(callbacks, progress, "train")
    emit(cbs, ProgressEvent("train", "start", step, total_steps, start_epoch))
    if spec.snapshot_every and step == 0:
        snapshots.append(flatten(get_params(model)).cpu())
        snapshot_steps.append(0)

    t0 = time.perf_counter()
    samples_seen = 0
    for epoch in range(start_epoch, spec.epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        n_epoch = 0
        pending: list[tuple[int, torch.Tensor]] = []
        lr = spec.lr
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            lr = spec.lr * lr_factor(spec, step / total_steps)
            set_lr(optimizer, lr)
            with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
                with channels_last_steps():
                    logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step += 1
            if spec.grad_snapshot_every and step % spec.grad_snapshot_every == 0:
                grads.append(
                    torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).detach().cpu()
                )
                grad_steps.append(step)
            optimizer.step()
            bs = int(yb.shape[0])
            n_epoch += bs
            loss_sum += loss.detach() * bs
            correct += (logits.detach().argmax(1) == yb).sum()
            # Checking finiteness forces a device sync: on a GPU the check is batched to keep steps
            # asynchronous; on the CPU a plain float comparison is cheapest.
            if device.type == "cpu":
                value = loss.detach().item()
                if not math.isfinite(value):
                    raise NonFiniteLossError(epoch + 1, step, value)
            else:
                pending.append((step, loss.detach()))
                if len(pending) >= 25:
                    check_finite_losses(pending, epoch)
                    pending = []
            if spec.snapshot_every and step % spec.snapshot_every == 0:
                snapshots.append(flatten(get_params(model)).cpu())
                snapshot_steps.append(step)
            emit(cbs, ProgressEvent("train", "step", step, total_steps, epoch))
        check_finite_losses(pending, epoch)
        samples_seen += n_epoch
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": float(loss_sum) / n_epoch,
            "train_acc": 100.0 * float(correct) / n_epoch,
            "test_loss": math.nan,
            "test_acc": math.nan,
        }
        last = epoch + 1 == spec.epochs
        if test_data is not None and ((epoch + 1) % spec.eval_every == 0 or last):
            res = evaluate(model, make_loader(test_data, max(spec.batch_size, 256)))
            row["test_loss"], row["test_acc"] = res.loss, res.acc
        if spec.track_hessian_every:
            row.update(dict.fromkeys(TRACK_QUANTITIES, math.nan))
            if (epoch + 1) % spec.track_hessian_every == 0 or last:
                row[TRACK_QUANTITIES[0]] = tracked_sharpness(model, train_eval_data or train_data, spec.seed)
                if spec.optimizer in _TWO_OVER_LR_OPTIMIZERS:
                    row[TRACK_QUANTITIES[1]] = 2.0 / lr
        row["time_s"] = time.perf_counter() - t0
        rows.append(row)
        emit(
            cbs,
            ProgressEvent("train", "epoch", step, total_steps, epoch, {k: v for k, v in row.items() if k != "epoch"}),
        )
        if ckpt is not None and ((epoch + 1) % spec.checkpoint_every == 0 or last):
            save_plain(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loader_generator": loader.generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "init_params": init_params,
                    "init_buffers": init_buffers,
                    "rows": rows,
                    "step": step,
                    "epoch": epoch + 1,
                    "snapshots": snapshots,
                    "snapshot_steps": snapshot_steps,
                    "grads": grads,
                    "grad_steps": grad_steps,
                },
                ckpt / "last.pt",
            )
    wall = time.perf_counter() - t0
    if spec.snapshot_every and (not snapshot_steps or snapshot_steps[-1] != step):
        snapshots.append(flatten(get_params(model)).cpu())
        snapshot_steps.append(step)

    eval_bs = max(spec.batch_size, 256)
    final = {"train": evaluate(model, make_loader(train_eval_data or train_data, eval_bs))}
    if test_data is not None:
        final["test"] = evaluate(model, make_loader(test_data, eval_bs))
    emit(
        cbs,
        ProgressEvent(
            "train",
            "end",
            step,
            total_steps,
            spec.epochs - 1,
            {names.split_column(k, "acc"): v.acc for k, v in final.items()},
        ),
    )
    result = TrainResult(
        history=Table.from_rows(rows),
        init_params=init_params,
        init_buffers=init_buffers,
        final_params=_cpu(get_params(model)),
        final_buffers=_cpu(get_buffers(model)),
        final=final,
        snapshots=snapshots,
        snapshot_steps=snapshot_steps,
        grad_snapshots=grads,
        grad_steps=grad_steps,
        steps=step,
        wall_time_s=wall,
        samples_per_s=samples_seen / wall if wall > 0 else 0.0,
        resumed_from_epoch=start_epoch,
    )
    if ckpt is not None:
        save_plain({"params": result.final_params, "buffers": result.final_buffers}, ckpt / "final.pt")
    return result


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Load ``init.pt`` / ``final.pt`` written by :func:`train` (``{"params", "buffers"}``) into ``model``.

    The file is read as plain data (``torch.load(weights_only=True)``): nothing in it is executed.

    Raises:
        FileNotFoundError: the file does not exist.
        lgeom.safe_io.UnsafeFileError: (a ValueError) the file is not plain data or not a torch file.
        ValueError: its parameters do not match ``model``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint: expected a file at {p}, got nothing there")
    state = load_plain(p, "checkpoint", "a dict with 'params' and 'buffers' (as written by lgeom.train)")
    if not isinstance(state, dict) or "params" not in state:
        raise expected(
            "checkpoint", "a dict with 'params' and 'buffers' (as written by lgeom.train)", type(state).__name__
        )
    return load_params(model, state["params"], state.get("buffers"))
