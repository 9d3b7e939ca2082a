"""``TrainSpec.track_hessian_every``: the top Hessian eigenvalue as a training series, with 2 / lr for SGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lgeom.data import build_dataset
from lgeom.hessian import top_eigenvalues
from lgeom.models import build_model
from lgeom.seed import set_seed
from lgeom.train import TRACK_HESSIAN_SAMPLES, TrainSpec, train


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
