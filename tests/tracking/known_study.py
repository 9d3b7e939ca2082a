"""A known study logged to the session's MLflow server (a parent run, two endpoint pairs per model and one
FAILED trial), shared by the tests of the code that reads studies back: import the ``study`` fixture.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lgeom import names
from tracking.log import log_series
from tracking.runs import run_tags, tracked_run
from tracking.store import resolve_store

# model -> (depth, n_params, [(bezier auc, linear auc, bezier drop, linear drop, dist_ac, angle) per pair])
KNOWN = {
    "preresnet8": (8, 78_000, [(0.4, 10.0, 2.0, 30.0, 9.0, 70.0), (0.6, 14.0, 4.0, 50.0, 11.0, 80.0)]),
    "preresnet26": (26, 370_000, [(1.0, 20.0, 6.0, 60.0, 19.0, 60.0), (2.0, 30.0, 8.0, 70.0, 21.0, 64.0)]),
}


@pytest.fixture(scope="module")
def study(local_stack: Any) -> dict[str, Any]:
    """The known study: a parent run, two endpoint pairs per model, and one FAILED trial to ignore."""
    barrier, tri, endpoint = names.barrier_metric, names.triangle_metric, names.endpoint_metric
    test_acc, lam = names.split_column("test", "acc"), names.probe_column(names.HESSIAN, "lambda_max")
    store = resolve_store(local_stack.tracking_uri)
    name = f"depth-known-{np.random.default_rng().integers(1 << 30)}"
    children = {}
    with tracked_run(store, experiment=name, run_name="study", tags=run_tags(study=name, stage="study")) as parent:
        for model, (depth, n_params, pairs) in KNOWN.items():
            for pair, (bz_auc, ln_auc, bz_drop, ln_drop, dist_ac, angle) in enumerate(pairs):
                cell = f"{model}/cifar10/sgd/seeds=[{2 * pair}, {2 * pair + 1}]"
                tags = run_tags(
                    study=name, stage="trial", cell=cell, config_hash=f"{model}-{pair}", parent_run_id=parent.run_id
                )
                with tracked_run(
                    store,
                    experiment_id=parent.experiment_id,
                    run_name=cell,
                    tags=tags,
                    params={"model.depth": depth, "n_params": n_params},
                ) as run:
                    run.log_metrics(
                        {
                            barrier("bezier", "test", "acc_auc"): bz_auc,
                            barrier("linear", "test", "acc_auc"): ln_auc,
                            barrier("bezier", "test", "acc_drop"): bz_drop,
                            barrier("linear", "test", "acc_drop"): ln_drop,
                            tri("bezier", "dist_ac"): dist_ac,
                            tri("bezier", "dist_bc"): dist_ac + 1,
                            tri("bezier", "angle_acb_deg"): angle,
                            tri("polychain", "dist_ac"): dist_ac - 1,
                            tri("polychain", "dist_bc"): dist_ac,
                            tri("polychain", "angle_acb_deg"): angle + 10,
                            endpoint("a", "train", "acc"): 100.0,
                            endpoint("a", "test", "acc"): 90.0 - depth / 10,
                            endpoint("b", "train", "acc"): 99.0,
                            endpoint("b", "test", "acc"): 89.0 - depth / 10,
                            barrier("linear", "test", "loss_barrier"): ln_drop / 10,
                        }
                    )
                    t = np.linspace(0, 1, 5)
                    log_series(
                        run, "bezier", {test_acc: 90 - bz_drop * np.sin(np.pi * t), lam: depth + np.sin(np.pi * t)}
                    )
                    log_series(run, "linear", {test_acc: 90 - ln_drop * np.sin(np.pi * t), lam: depth + t})
                children[(model, pair)] = run.run_id
        with pytest.raises(RuntimeError):
            with tracked_run(
                store,
                experiment_id=parent.experiment_id,
                run_name="broken",
                tags=run_tags(
                    study=name, stage="trial", cell="preresnet8/cifar10/sgd/broken", parent_run_id=parent.run_id
                ),
            ) as bad:
                bad.log_metrics({barrier("bezier", "test", "acc_auc"): 1e6})
                raise RuntimeError("NaN loss")
    return {"store": store, "name": name, "parent": parent.run_id, "children": children, "failed": bad.run_id}
