"""lgeom: loss-landscape geometry in pure PyTorch / NumPy / SciPy.

The library trains models, connects endpoints with curves and measures the geometry of the loss surface.
It knows nothing of MLflow, Ray, Optuna or boto3: results come back as dataclasses, tensors, arrays and
:class:`~lgeom.table.Table` objects, and progress goes to optional callbacks.
"""

from lgeom.align import Alignment, weight_matching
from lgeom.batchnorm import has_batchnorm, recompute_bn_stats
from lgeom.connect import ConnectResult, ConnectSpec, PathResult, connect_pair
from lgeom.curves import (
    Bezier,
    Curve,
    CurveFitResult,
    CurveFitSpec,
    Line,
    PolyChain,
    build_curve,
    fit_curve,
    load_curve,
    save_curve,
)
from lgeom.data import (
    ArrayDataset,
    DatasetNotFoundError,
    build_dataset,
    build_splits,
    fixed_batches,
    make_loader,
    stratified_subset,
)
from lgeom.device import resolve_device
from lgeom.evaluate import EvalResult, evaluate, evaluate_point
from lgeom.gradients import (
    EffectiveDimensionality,
    effective_dimensionality,
    loss_and_gradient,
)
from lgeom.hessian import (
    Density,
    EigenResult,
    HessianOperator,
    TraceResult,
    hvp,
    spectral_density,
    top_eigenvalues,
    trace,
)
from lgeom.models import available_models, build_model
from lgeom.multipoint import PointsEval, evaluate_path, evaluate_points
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
from lgeom.path import (
    Triangle,
    acc_auc,
    acc_drop,
    loss_barrier,
    loss_barrier_interp,
    path_metrics,
    triangle,
)
from lgeom.permutation import PermutationSpecError
from lgeom.probes import PointProbes, ProbeSettings, probe_path, probe_point
from lgeom.progress import FractionReporter, PercentLines, ProgressEvent, TqdmProgress
from lgeom.seed import set_seed
from lgeom.sharpness import (
    ModelLandscape,
    average_sharpness,
    mc_curvature,
    perturbation_flatness,
    worst_sharpness,
)
from lgeom.table import Table
from lgeom.train import (
    NonFiniteLossError,
    TrainResult,
    TrainSpec,
    load_checkpoint,
    train,
)

__all__ = [
    "Alignment",
    "ArrayDataset",
    "Bezier",
    "ConnectResult",
    "ConnectSpec",
    "Curve",
    "CurveFitResult",
    "CurveFitSpec",
    "DatasetNotFoundError",
    "Density",
    "EffectiveDimensionality",
    "EigenResult",
    "EvalResult",
    "FractionReporter",
    "HessianOperator",
    "Line",
    "ModelLandscape",
    "NonFiniteLossError",
    "OptimSpec",
    "ParamLayout",
    "PathResult",
    "PercentLines",
    "PermutationSpecError",
    "PointProbes",
    "PointsEval",
    "PolyChain",
    "ProbeSettings",
    "ProgressEvent",
    "Table",
    "TqdmProgress",
    "TraceResult",
    "TrainResult",
    "TrainSpec",
    "Triangle",
    "acc_auc",
    "acc_drop",
    "available_models",
    "average_sharpness",
    "build_curve",
    "build_dataset",
    "build_model",
    "build_splits",
    "connect_pair",
    "count_params",
    "effective_dimensionality",
    "evaluate",
    "evaluate_path",
    "evaluate_point",
    "evaluate_points",
    "filter_normalized_direction",
    "fit_curve",
    "fixed_batches",
    "flatten",
    "functional_forward",
    "get_buffers",
    "get_params",
    "has_batchnorm",
    "hvp",
    "load_checkpoint",
    "load_curve",
    "load_params",
    "loss_and_gradient",
    "loss_barrier",
    "loss_barrier_interp",
    "make_loader",
    "mc_curvature",
    "path_metrics",
    "perturbation_flatness",
    "probe_path",
    "probe_point",
    "recompute_bn_stats",
    "resolve_device",
    "save_curve",
    "set_seed",
    "spectral_density",
    "stratified_subset",
    "top_eigenvalues",
    "trace",
    "train",
    "triangle",
    "unflatten",
    "weight_matching",
    "worst_sharpness",
]
