"""Training: accuracy on moons, determinism, schedules, snapshots, NaN detection, resume, bad specs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lgeom.data import ArrayDataset, build_dataset
from lgeom.hessian import top_eigenvalues
from lgeom.models import build_model
from lgeom.optim import lr_factor
from lgeom.params import flatten
from lgeom.progress import ProgressEvent, TqdmProgress
from lgeom.seed import set_seed
from lgeom.train import (
    TRACK_HESSIAN_SAMPLES,
    NonFiniteLossError,
    TrainSpec,
    check_finite_losses,
    load_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def moons() -> tuple[ArrayDataset, ArrayDataset]:
    return build_dataset("moons", "train", n_train=600, n_test=600, seed=0), build_dataset(
        "moons", "test", n_train=600, n_test=600, seed=0
    )


def _mlp(seed: int, width: int = 32) -> torch.nn.Module:
    set_seed(seed)
    return build_model("mlp", num_classes=2, in_shape=(2,), depth=2, width=width)


def test_small_mlp_learns_moons(moons) -> None:
    train_ds, test_ds = moons
    spec = TrainSpec(lr=0.1, epochs=25, batch_size=32, schedule="piecewise", seed=0, device="cpu")
    result = train(_mlp(0), train_ds, test_ds, spec, progress=False)
    assert result.final["test"].acc > 95.0
    assert result.final["test"].n == 600
    h = result.history
    assert h.names == ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "time_s"]
    assert list(h["epoch"]) == list(range(1, 26))
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert result.steps == 25 * math.ceil(600 / 32)
    assert result.samples_per_s > 0


def test_same_seed_gives_identical_weights(moons) -> None:
    spec = TrainSpec(lr=0.05, epochs=3, batch_size=50, seed=7, device="cpu")
    r1 = train(_mlp(7), moons[0], None, spec, progress=False)
    r2 = train(_mlp(7), moons[0], None, spec, progress=False)
    assert all(torch.equal(r1.final_params[k], r2.final_params[k]) for k in r1.final_params)
    r3 = train(
        _mlp(8), moons[0], None, TrainSpec(lr=0.05, epochs=3, batch_size=50, seed=8, device="cpu"), progress=False
    )
    assert not torch.equal(flatten(r1.final_params), flatten(r3.final_params))


def test_init_checkpoint_is_the_untrained_model(moons) -> None:
    model = _mlp(3)
    before = {k: v.clone() for k, v in model.named_parameters()}
    result = train(model, moons[0], None, TrainSpec(epochs=1, batch_size=100, device="cpu"), progress=False)
    assert all(torch.equal(result.init_params[k], before[k]) for k in before)
    assert not torch.equal(result.final_params["head.weight"], before["head.weight"])


def test_piecewise_schedule_is_applied_per_step(moons) -> None:
    spec = TrainSpec(lr=0.2, epochs=10, batch_size=600, schedule="piecewise", device="cpu")
    result = train(_mlp(0), moons[0], None, spec, progress=False)
    # lr recorded at each epoch's (single) step: progress = epoch_index / 10
    expected = [0.2 * lr_factor(spec, i / 10) for i in range(10)]
    assert list(result.history["lr"]) == pytest.approx(expected)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers_and_weight_decay(moons, optimizer: str) -> None:
    lr = 0.05 if optimizer == "sgd" else 0.01
    plain = train(
        _mlp(1), moons[0], None, TrainSpec(optimizer=optimizer, lr=lr, epochs=4, device="cpu"), progress=False
    )
    decayed = train(
        _mlp(1),
        moons[0],
        None,
        TrainSpec(optimizer=optimizer, lr=lr, weight_decay=0.5, epochs=4, device="cpu"),
        progress=False,
    )
    assert flatten(decayed.final_params).norm() < flatten(plain.final_params).norm()


def test_snapshots_every_k_steps(moons) -> None:
    spec = TrainSpec(epochs=2, batch_size=100, snapshot_every=4, grad_snapshot_every=3, device="cpu")
    result = train(_mlp(0), moons[0], None, spec, progress=False)
    assert result.steps == 12
    assert result.snapshot_steps == [0, 4, 8, 12]
    assert result.grad_steps == [3, 6, 9, 12]
    n = sum(v.numel() for v in result.final_params.values())
    assert all(s.shape == (n,) for s in result.snapshots + result.grad_snapshots)
    assert torch.equal(result.snapshots[0], flatten(result.init_params))
    assert torch.equal(result.snapshots[-1], flatten(result.final_params))


def test_nan_loss_raises_naming_epoch_and_step() -> None:
    x = torch.randn(64, 2)
    x[40:] = float("nan")
    ds = ArrayDataset(x, torch.zeros(64, dtype=torch.long), 2)
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at epoch 1, step \d+") as err:
        train(_mlp(0), ds, None, TrainSpec(epochs=3, batch_size=8, device="cpu"), progress=False)
    assert err.value.epoch == 1 and 1 <= err.value.step <= 8


def test_exploding_learning_rate_raises(moons) -> None:
    with pytest.raises(NonFiniteLossError):
        train(
            _mlp(0, width=64),
            moons[0],
            None,
            TrainSpec(lr=1e12, momentum=0.0, epochs=5, batch_size=16, device="cpu"),
            progress=False,
        )


class _Stop(Exception):
    pass


def test_interrupted_training_resumes_to_identical_weights(moons, tmp_path: Path) -> None:
    spec = TrainSpec(lr=0.05, epochs=4, batch_size=64, seed=2, snapshot_every=5, device="cpu")
    straight = train(_mlp(2), moons[0], moons[1], spec, progress=False)

    def stop_after_second_epoch(event: ProgressEvent) -> None:
        if event.kind == "epoch" and event.epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train(
            _mlp(2),
            moons[0],
            moons[1],
            spec,
            progress=False,
            callbacks=[stop_after_second_epoch],
            checkpoint_dir=tmp_path,
        )
    assert (tmp_path / "init.pt").exists() and (tmp_path / "last.pt").exists() and not (tmp_path / "final.pt").exists()
    resumed = train(_mlp(99), moons[0], moons[1], spec, progress=False, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 2
    assert all(torch.equal(straight.final_params[k], resumed.final_params[k]) for k in straight.final_params)
    assert all(torch.equal(straight.init_params[k], resumed.init_params[k]) for k in straight.init_params)
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4]
    assert resumed.snapshot_steps == straight.snapshot_steps
    assert (tmp_path / "final.pt").exists()

    steps = []
    again = train(
        _mlp(5),
        moons[0],
        moons[1],
        spec,
        progress=False,
        checkpoint_dir=tmp_path,
        callbacks=[lambda e: steps.append(e.kind)],
    )
    assert again.resumed_from_epoch == 4 and "step" not in steps, "a finished run must not train again"
    model = load_checkpoint(tmp_path / "final.pt", _mlp(11))
    assert torch.equal(model.head.weight, straight.final_params["head.weight"])


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint: expected a file at"):
        load_checkpoint(tmp_path / "nope.pt", _mlp(0))
    torch.save({"params": {"x": torch.zeros(1)}, "buffers": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="parameters of model and params differ"):
        load_checkpoint(tmp_path / "bad.pt", _mlp(0))


def test_bad_specs_are_reported_together() -> None:
    with pytest.raises(ValueError) as err:
        TrainSpec(lr=-1.0, epochs=0, optimizer="rmsprop", schedule="linear", batch_size=0, device="tpu")
    msg = str(err.value)
    for part in [
        "lr: expected a finite number > 0, got -1.0",
        "epochs: expected an integer > 0, got 0",
        "optimizer: expected one of sgd, adam, adamw, got 'rmsprop'",
        "schedule: expected one of constant, step, piecewise, cosine, got 'linear'",
        "batch_size: expected an integer > 0, got 0",
        "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'",
    ]:
        assert part in msg


def test_empty_training_data() -> None:
    empty = ArrayDataset(torch.zeros(0, 2), torch.zeros(0), 2)
    with pytest.raises(ValueError, match="train_data: expected a non-empty dataset"):
        train(_mlp(0), empty, None, TrainSpec(device="cpu"), progress=False)


def test_amp_is_ignored_on_cpu(moons) -> None:
    r = train(_mlp(0), moons[0], None, TrainSpec(epochs=1, amp=True, device="cpu"), progress=False)
    assert all(v.dtype == torch.float32 for v in r.final_params.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_with_amp(moons) -> None:
    spec = TrainSpec(lr=0.1, epochs=10, batch_size=32, device="cuda", amp=True)
    result = train(_mlp(0), moons[0], moons[1], spec, progress=False)
    assert result.final["test"].acc > 90.0
    assert all(v.device.type == "cpu" for v in result.final_params.values())


def test_default_progress_bar_runs_to_the_end(moons, capsys) -> None:
    train_ds, test_ds = moons
    spec = TrainSpec(lr=0.1, epochs=2, batch_size=100, seed=0, device="cpu")
    steps = 2 * math.ceil(600 / 100)
    train(_mlp(0), train_ds, test_ds, spec)  # progress=True by default; stderr is no terminal here: lines
    err = capsys.readouterr().err
    assert f"train: started ({steps} steps)" in err and f"train: 100% ({steps}/{steps}, " in err, err[-500:]
    # the same bar, kept and redrawn on every update, counts every step
    bar = TqdmProgress(leave=True, mininterval=0)
    train(_mlp(0), train_ds, test_ds, spec, callbacks=[bar], progress=False)
    err = capsys.readouterr().err
    assert f"train: 100%|██████████| {steps}/{steps}" in err, err[-500:]
    assert bar.bar is None  # closed by the end event


def test_training_on_cuda_where_there_is_none_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="no CUDA device"):
        train(
            _mlp(0),
            ArrayDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2),
            None,
            TrainSpec(epochs=1, device="cuda"),
            progress=False,
        )


def test_pending_losses_are_checked_together_and_the_first_bad_one_named() -> None:
    check_finite_losses([], 0)
    check_finite_losses([(1, torch.tensor(0.5)), (2, torch.tensor(0.4))], 0)
    pending = [(7, torch.tensor(0.5)), (8, torch.tensor(float("inf"))), (9, torch.tensor(float("nan")))]
    with pytest.raises(NonFiniteLossError, match=r"curve fitting loss became inf at epoch 3, step 8") as err:
        check_finite_losses(pending, 2, task="curve fitting")
    assert (err.value.epoch, err.value.step) == (3, 8)


def _setup() -> tuple[torch.nn.Module, object, object]:
    set_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(2,), depth=2, width=16)
    return (
        model,
        build_dataset("moons", "train", n_train=400, n_test=200, seed=0),
        build_dataset("moons", "test", n_train=400, n_test=200, seed=0),
    )


def test_lambda_max_every_k_epochs_and_two_over_lr_for_sgd() -> None:
    model, train_ds, test_ds = _setup()
    spec = TrainSpec(optimizer="sgd", lr=0.1, epochs=5, batch_size=50, schedule="constant", track_hessian_every=2)
    hist = train(model, train_ds, test_ds, spec, progress=False).history
    lam, ref = np.asarray(hist["lambda_max"]), np.asarray(hist["two_over_lr"])
    assert [bool(np.isfinite(v)) for v in lam] == [False, True, False, True, True]  # epochs 2, 4 and the last
    assert ref[1] == pytest.approx(2 / 0.1) and math.isnan(ref[0])
    # the cheap estimate agrees with a converged one on the same samples at the final weights
    xs = torch.stack([train_ds[i][0] for i in range(TRACK_HESSIAN_SAMPLES)])
    ys = torch.stack([torch.as_tensor(train_ds[i][1]) for i in range(TRACK_HESSIAN_SAMPLES)])
    exact = top_eigenvalues(model, [(xs, ys)], k=1, tol=1e-6).values[0]
    assert lam[-1] == pytest.approx(float(exact), rel=0.05)


def test_adam_has_no_two_over_lr_and_zero_turns_tracking_off() -> None:
    model, train_ds, _ = _setup()
    hist = train(
        model,
        train_ds,
        None,
        TrainSpec(optimizer="adam", lr=0.01, epochs=2, batch_size=50, track_hessian_every=1),
        progress=False,
    ).history
    assert np.isfinite(hist["lambda_max"]).all() and np.isnan(hist["two_over_lr"]).all()
    model, train_ds, _ = _setup()
    assert (
        "lambda_max"
        not in train(model, train_ds, None, TrainSpec(epochs=1, batch_size=50), progress=False).history.names
    )
    with pytest.raises(ValueError, match="track_hessian_every: expected an integer >= 0, got -1"):
        TrainSpec(track_hessian_every=-1)
