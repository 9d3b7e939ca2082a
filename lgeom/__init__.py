"""lgeom: loss-landscape geometry in pure PyTorch / NumPy / SciPy.

The library trains models, connects endpoints with curves and measures the geometry of the loss surface.
It knows nothing of MLflow, Ray, Optuna or boto3: results come back as dataclasses, tensors, arrays and
:class:`~lgeom.table.Table` objects, and progress goes to optional callbacks.
"""

from lgeom.data import ArrayDataset, DatasetNotFoundError, build_dataset, build_splits, fixed_batches, make_loader
from lgeom.device import resolve_device
from lgeom.evaluate import EvalResult, evaluate, evaluate_path, evaluate_point, has_batchnorm, recompute_bn_stats
from lgeom.models import available_models, build_model
from lgeom.optim import OptimSpec
from lgeom.params import (
    ParamLayout,
    count_params,
    filter_normalized_direction,
    flatten,
    functional_forward,
    get_buffers,
    get_params,
    load_params,
    unflatten,
)
from lgeom.progress import ProgressEvent, TqdmProgress
from lgeom.seed import set_seed
from lgeom.table import Table
from lgeom.train import NonFiniteLossError, TrainResult, TrainSpec, load_checkpoint, train

__all__ = [
    "ArrayDataset",
    "DatasetNotFoundError",
    "EvalResult",
    "NonFiniteLossError",
    "OptimSpec",
    "ParamLayout",
    "ProgressEvent",
    "Table",
    "TqdmProgress",
    "TrainResult",
    "TrainSpec",
    "available_models",
    "build_dataset",
    "build_model",
    "build_splits",
    "count_params",
    "evaluate",
    "evaluate_path",
    "evaluate_point",
    "filter_normalized_direction",
    "fixed_batches",
    "flatten",
    "functional_forward",
    "get_buffers",
    "get_params",
    "has_batchnorm",
    "load_checkpoint",
    "load_params",
    "make_loader",
    "recompute_bn_stats",
    "resolve_device",
    "set_seed",
    "train",
    "unflatten",
]
