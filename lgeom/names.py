"""The metric contract: every metric, tag, param and artifact name that lgeom's results are stored under.

Library summaries (:mod:`lgeom.path`, :mod:`lgeom.connect`, :mod:`lgeom.probes`), the tracking layer and
the pipelines all build names with these functions and constants; nothing else spells a name by hand.
Each function takes the parts of a name (path, split, point, family, quantity) rather than returning a
format string, so regrouping the names changes this module only.

Metric names are grouped in families separated by :data:`SEP` (``/``), so the MLflow UI shows each
family as one section: ``train/`` (live per-epoch training of an endpoint), ``fit/`` (live curve fits),
``endpoint/``, ``barrier/``, ``gap/``, ``path/`` (series along a path), ``triangle/``, ``align/``,
the probe families (``hessian/``, ``sharpness/``, ``curvature/``, ``probe/``), ``diag/`` (solver
diagnostics), ``pca/``, ``gradients/``, ``trial/`` and ``study/``. Params keep dotted
``<section>.<key>`` names and tags the ``lgeom.`` prefix.

Pure strings: this module imports nothing, so any layer may use it. :func:`contract_markdown` renders
the contract as the table the README's "MLflow layout" section holds (a test keeps the two equal).

>>> barrier_metric("bezier", "test", "loss_barrier")
'barrier/bezier/test/loss'
>>> probe_metric("hessian", "lambda_max", point="mid")
'hessian/mid/lambda_max'
>>> probe_metric("hessian", "n_hvp", point="mid")
'diag/mid/hessian_n_hvp'
>>> endpoint_metric("a", "test", "acc")
'endpoint/a/test_acc'
>>> history_metric("a", "train_loss")
'train/a/loss'
>>> path_table_artifact("linear")
'paths/linear.csv'
"""

from __future__ import annotations

# --- vocabulary ----------------------------------------------------------------------------------------------

#: Joins the parts of a metric name (family, path, split, quantity ...): one UI section per family.
SEP = "/"
#: Data splits every path and endpoint is evaluated on.
SPLITS = ("train", "test")
#: The straight path between the endpoints; fitted curves are named by kind.
LINE = "linear"
#: Fitted curve kinds (``lgeom.curves`` builds them by these names).
CURVES = ("bezier", "polychain")
#: Every path a cell connects its endpoints with, before alignment.
PATHS = (LINE, *CURVES)
#: Appended to a path name when endpoint B was permuted onto A first.
ALIGNED_SUFFIX = "_aligned"
#: Points probed by a study trial: the endpoints and the curve's midpoint.
ENDPOINTS = ("a", "b")
MID = "mid"
POINTS = (*ENDPOINTS, MID)

#: Quantities measured on an endpoint or along a path per split (``<split>_<quantity>``).
SPLIT_QUANTITIES = ("loss", "acc")
#: Scalar quantities of a path per split (DESIGN.md's definitions, lgeom.path).
BARRIER_QUANTITIES = ("loss_barrier", "loss_barrier_interp", "acc_drop", "acc_auc")
#: Generalisation-gap maxima of a path (both splits needed).
GAP_QUANTITIES = ("gen_gap_max", "gen_gap_acc_max")
#: Generalisation gap columns of a path table.
GAP_COLUMNS = ("gen_gap", "gen_gap_acc")
#: Geometry of the triangle A, C, B (lgeom.path.Triangle's fields).
TRIANGLE_QUANTITIES = ("dist_ac", "dist_bc", "dist_ab", "angle_acb_deg", "area")
#: How a fitted curve's training ended.
FIT_QUANTITIES = ("fit_loss", "fit_time_s")
#: Permutation alignment of B onto A.
ALIGN_QUANTITIES = ("iterations", "similarity_before", "similarity_after")
#: Per-endpoint numbers that are not split-specific.
ENDPOINT_STATS = ("samples_per_s", "n_params")
#: Seconds a study trial spent per stage (``trial/<quantity>``): training both endpoints, fitting the curves,
#: evaluating every path, the planes through A, C, B, the whole connect stage (the three before plus the
#: endpoints' evaluation and the alignment), the probes, and logging the bundle to MLflow. A stage a resumed
#: trial skipped keeps the seconds of the attempt that ran it.
TRIAL_STAGE_TIMES = ("train_s", "fit_s", "path_eval_s", "plane_s", "connect_s", "probe_s", "log_s")
#: A trial's compute (every stage but logging), the CPU seconds its process spent on it (all threads; on a
#: machine shared with other jobs the closer figure to what a quiet machine's wall time would be) and its wall
#: time (from before its child run starts to after everything is logged).
TRIAL_TIMES = (*TRIAL_STAGE_TIMES, "compute_s", "compute_cpu_s", "wall_time_s")

#: Probe families and their scalar quantities (lgeom.probes.PointProbes).
HESSIAN = "hessian"
SHARPNESS = "sharpness"
CURVATURE = "curvature"
PROBE = "probe"
PROBE_QUANTITIES = {
    PROBE: ("loss",),
    HESSIAN: ("lambda_max", "topk_mean", "converged", "n_hvp", "trace", "trace_stderr", "density_mean"),
    SHARPNESS: ("eps_avg", "eps_avg_max", "flatness", "eps_worst"),
    CURVATURE: ("mc_mean", "mc_std", "mc_frac_negative"),
}
#: Solver diagnostics of a probe family: logged under :data:`DIAG` (``diag/<point>/<family>_<quantity>``),
#: out of the way of the measurements themselves.
DIAG_QUANTITIES = {HESSIAN: ("converged", "n_hvp")}
#: Trajectory probes (PCA plane, gradients' effective dimensionality).
PCA = "pca"
GRADIENTS = "gradients"
TRAJECTORY_QUANTITIES = {
    PCA: ("explained_variance_1", "explained_variance_2", "max_relative_residual"),
    GRADIENTS: ("effective_dim", "effective_dim_ratio"),
}

#: Metric families (the first part of every metric name; one MLflow UI section each).
ENDPOINT = "endpoint"
TRAIN = "train"
FIT = "fit"
BARRIER = "barrier"
GAP = "gap"
PATH = "path"
TRIANGLE = "triangle"
ALIGN = "align"
DIAG = "diag"
TRIAL = "trial"
STUDY = "study"
TUNE = "tune"
#: Columns of an endpoint's per-epoch history (``lgeom.train``) that are on the training split: logged
#: without the ``train_`` prefix inside the ``train/`` family (``train/a/loss``, ``train/a/test_loss``).
_TRAIN_PREFIX = "train_"
#: Live Hessian tracking during training: the top eigenvalue and 2/lr (the edge of stability for SGD).
TRACK_QUANTITIES = ("lambda_max", "two_over_lr")
#: Barrier quantities as they appear in names (the family says "barrier" already).
_BARRIER_SHORT = {"loss_barrier": "loss", "loss_barrier_interp": "loss_interp"}
#: Fit quantities as they appear in names (``fit/<curve>/loss`` is the live per-epoch series).
_FIT_SHORT = {"fit_loss": "final_loss", "fit_time_s": "time_s"}

# --- tags, stages, params -------------------------------------------------------------------------------------

TAG_STUDY = "lgeom.study"
TAG_CELL = "lgeom.cell"
TAG_CONFIG_HASH = "lgeom.config_hash"
TAG_STAGE = "lgeom.stage"
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"
TAG_ERROR = "lgeom.error"
#: Bookkeeping tags (orphan detection), kept apart from the tags a researcher reads under ``lgeom.sys.``.
TAG_SYS_PREFIX = "lgeom.sys."
TAG_HOST = f"{TAG_SYS_PREFIX}host"
TAG_PID = f"{TAG_SYS_PREFIX}pid"
TAG_PROC_START = f"{TAG_SYS_PREFIX}proc_start"
#: The Ray node IP a run was started on (set only inside a Ray process): tells the nodes of a cluster apart
#: when their host names agree (several nodes on one machine).
TAG_NODE_IP = f"{TAG_SYS_PREFIX}node_ip"
#: The stage a running trial is in now (train, connect, probe, log), updated live.
TAG_CURRENT_STAGE = "lgeom.current_stage"
#: The long loops a running trial is in and their fraction done (``plane bezier 40%``), updated live.
TAG_PROGRESS = "lgeom.progress"
#: Provenance: the git commit (MLflow's own tag) and whether the working tree had uncommitted changes.
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_DIRTY = "lgeom.git_dirty"
#: MLflow's entry-point tag (shown as the run's source in the UI).
TAG_SOURCE_NAME = "mlflow.source.name"
#: On an ``mlflow run`` project run that could not be the step's run (another experiment): the run that was.
TAG_LINKED_RUN = "lgeom.linked_run"
TAG_STAGES_SKIPPED = "lgeom.stages_skipped"
#: On a cell with ``curve.align`` whose model has no permutation spec (e.g. attention): why alignment was
#: skipped (the cell is connected without ``_aligned`` paths).
TAG_ALIGN_SKIPPED = "lgeom.align_skipped"
#: ``lgeom.plugin.model`` / ``lgeom.plugin.data``: ``<module:callable>@<sha256 of its source file, 16 hex>``
#: of a plug-in builder, so a changed plug-in file shows next to the same reference.
TAG_PLUGIN_PREFIX = "lgeom.plugin."
TAG_FAILED_CELLS = "lgeom.failed_cells"
TAG_MODEL_PREFIX = "lgeom.model."
#: Whether a trial's per-cell figures were drawn (:data:`FIGURES_DRAWN`) or left for ``lgeom figures``
#: (:data:`FIGURES_DEFERRED`, ``study.cell_figures=false``).
TAG_FIGURES = "lgeom.figures"
FIGURES_DRAWN = "drawn"
FIGURES_DEFERRED = "deferred"

STAGE_STUDY = "study"
STAGE_TRIAL = "trial"
STAGE_TRAIN = "train"
STAGE_CONNECT = "connect"
STAGE_PROBE = "probe"
STAGE_TUNE = "tune"
STAGE_TUNE_TRIAL = "tune-trial"
STAGES = (STAGE_STUDY, STAGE_TRIAL, STAGE_TRAIN, STAGE_CONNECT, STAGE_PROBE, STAGE_TUNE, STAGE_TUNE_TRIAL)

PARAM_N_PARAMS = "n_params"

# --- artifacts (a result bundle's layout is the run's artifact layout) ---------------------------------------

METRICS_FILE = "metrics.json"
PARAMS_FILE = "params.json"
TAGS_FILE = "tags.json"
PROBES_FILE = "probes.json"
ALIGNMENT_FILE = "alignment.json"
EFFECTIVE_DIM_FILE = "effective_dim.json"
#: What draws each per-run figure from the bundle's data files: ``{figure name: {"kind", inputs ...}}``.
FIGURE_INPUTS_FILE = "figure_inputs.json"
PATHS_DIR = "paths"
CURVES_DIR = "curves"
SPECTRA_DIR = "spectra"
PLANES_DIR = "planes"
FIGURES_DIR = "figures"
ENDPOINTS_DIR = "endpoints"
FITS_DIR = "fits"
TRAINING_DIR = "training"
TUNED_DIR = "tuned"
REPORT_DIR = "report"
REPORT_TABLES_DIR = "tables"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"


def _join(*parts: str | None) -> str:
    # Parts left out (None or "") are skipped, so one function names a metric with or without its path/point.
    return SEP.join(p for p in parts if p)


# --- metric names ---------------------------------------------------------------------------------------------


def endpoint_name(index: int) -> str:
    """The name of the ``index``-th endpoint of a cell: ``a``, ``b``, ``c`` ...

    Raises:
        ValueError: ``index`` outside 0..25.
    """
    if not 0 <= index < 26:
        raise ValueError(f"endpoint index: expected 0..25, got {index}")
    return chr(ord("a") + index)


def aligned(path: str) -> str:
    """The name of ``path`` computed with B aligned onto A: ``linear`` -> ``linear_aligned``."""
    return f"{path}{ALIGNED_SUFFIX}"


def is_aligned(path: str) -> bool:
    """Whether ``path`` names an aligned path (see :func:`aligned`)."""
    return path.endswith(ALIGNED_SUFFIX)


#: Quantity of a plane's sample count per split (``train_samples`` in ``planes/<curve>.npz``).
SAMPLES = "samples"


def split_column(split: str, quantity: str) -> str:
    """A per-split column of a path table (and endpoint metric suffix): ``test``, ``acc`` -> ``test_acc``."""
    return f"{split}_{quantity}"


def endpoint_metric(endpoint: str, split: str, quantity: str) -> str:
    """An endpoint's final loss or accuracy (eval mode): ``a``, ``test``, ``acc`` -> ``endpoint/a/test_acc``."""
    return _join(ENDPOINT, endpoint, split_column(split, quantity))


def endpoint_stat_metric(endpoint: str, quantity: str) -> str:
    """A per-endpoint number from :data:`ENDPOINT_STATS`: ``a``, ``samples_per_s`` -> ``endpoint/a/samples_per_s``."""
    return _join(ENDPOINT, endpoint, quantity)


def history_prefix(endpoint: str) -> str:
    """Series prefix of an endpoint's per-epoch history: ``train/a`` (see :func:`history_metric`)."""
    return _join(TRAIN, endpoint)


def history_metric(endpoint: str, column: str) -> str:
    """A column of an endpoint's per-epoch history as a live series (step = epoch): training-split columns
    lose their ``train_`` prefix (``train_loss`` -> ``train/a/loss``), others keep their name
    (``test_acc`` -> ``train/a/test_acc``, ``lr`` -> ``train/a/lr``, ``lambda_max`` -> ``train/a/lambda_max``).
    """
    return _join(history_prefix(endpoint), column.removeprefix(_TRAIN_PREFIX))


def fit_history_metric(curve: str, column: str) -> str:
    """A column of a curve fit's per-epoch history as a live series (step = epoch): ``fit/bezier/loss``."""
    return _join(FIT, curve, column)


def barrier_metric(path: str | None, split: str, quantity: str) -> str:
    """A path's scalar from :data:`BARRIER_QUANTITIES` on ``split``: ``bezier``, ``test``, ``loss_barrier`` ->
    ``barrier/bezier/test/loss`` (``barrier/test/loss`` with ``path=None``, as library summaries of one path
    key it); ``loss_barrier_interp`` is named ``loss_interp``.
    """
    return _join(BARRIER, path, split, _BARRIER_SHORT.get(quantity, quantity))


def gap_metric(path: str | None, quantity: str) -> str:
    """A path's generalisation-gap maximum (:data:`GAP_QUANTITIES`): ``gap/linear/gen_gap_max``."""
    return _join(GAP, path, quantity)


def triangle_metric(curve: str, quantity: str, *, point: str | None = None) -> str:
    """Triangle geometry (:data:`TRIANGLE_QUANTITIES`) of ``curve``: ``triangle/bezier/dist_ac`` for A, C, B;
    ``triangle/bezier/mid/dist_ac`` for A, phi(0.5), B with ``point="mid"``.
    """
    return _join(TRIANGLE, curve, point, quantity)


def fit_metric(curve: str, quantity: str) -> str:
    """How the fit of ``curve`` ended (:data:`FIT_QUANTITIES`): ``fit_loss`` -> ``fit/bezier/final_loss``,
    ``fit_time_s`` -> ``fit/bezier/time_s`` (``fit/bezier/loss`` is the live series, :func:`fit_history_metric`).
    """
    return _join(FIT, curve, _FIT_SHORT.get(quantity, quantity))


def align_metric(quantity: str) -> str:
    """Permutation alignment of B onto A (:data:`ALIGN_QUANTITIES`): ``align/iterations``."""
    return _join(ALIGN, quantity)


def probe_metric(family: str, quantity: str, *, point: str | None = None) -> str:
    """A probe scalar at a point: ``hessian``, ``lambda_max``, point ``a`` -> ``hessian/a/lambda_max``
    (``hessian/lambda_max`` without a point, as :meth:`lgeom.probes.PointProbes.summary` keys it). Solver
    diagnostics (:data:`DIAG_QUANTITIES`) go to the ``diag`` family: ``diag/a/hessian_n_hvp``.
    """
    if quantity in DIAG_QUANTITIES.get(family, ()):
        return _join(DIAG, point, f"{family}_{quantity}")
    return _join(family, point, quantity)


def probe_column(family: str, quantity: str) -> str:
    """A probe scalar as a path-table column: ``hessian``, ``lambda_max`` -> ``hessian_lambda_max``."""
    return f"{family}_{quantity}"


def topk_quantity(index: int) -> str:
    """The ``index``-th (1-based) largest Hessian eigenvalue as a quantity: ``top1``, ``top2`` ..."""
    return f"top{index}"


def topk_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """The Hessian top-k columns (``hessian_top1`` ...) among ``columns``, in their order."""
    head = probe_column(HESSIAN, "top")
    return [c for c in columns if c.startswith(head) and c[len(head) :].isdigit()]


def trajectory_metric(family: str, quantity: str) -> str:
    """A trajectory probe (:data:`TRAJECTORY_QUANTITIES`): ``pca/explained_variance_1``."""
    return _join(family, quantity)


def trial_metric(quantity: str) -> str:
    """A study trial's own numbers (:data:`TRIAL_TIMES`: ``compute_s``, ``plane_s`` ...): ``trial/compute_s``."""
    return _join(TRIAL, quantity)


def study_metric(quantity: str) -> str:
    """A study parent run's counts (``cells_finished`` ...): ``study/cells_finished``."""
    return _join(STUDY, quantity)


def series_metric(path: str, column: str) -> str:
    """A column of a path table logged along the path with step = point index: ``path/linear/test_acc``."""
    return _join(PATH, path, column)


def parse_series_metric(name: str) -> tuple[str, str] | None:
    """``(path, column)`` of a :func:`series_metric` name, ``None`` for a name of another shape."""
    parts = name.split(SEP)
    if len(parts) != 3 or parts[0] != PATH or not all(parts):
        return None
    return parts[1], parts[2]


#: Tune runs: the best trial's test accuracy on the parent, per trial ``test_acc`` and ``epochs``.
TUNE_BEST_METRIC = "best_test_acc"
TUNE_TRIAL_METRICS = ("test_acc", "epochs")


def tune_best_param(key: str) -> str:
    """Param of a tune parent run holding the best value of ``key``: ``best.train.lr`` (params are dotted)."""
    return f"best.{key}"


#: Characters MLflow refuses in a LoggedModel name, and what :func:`model_name` writes instead.
_MODEL_NAME_FORBIDDEN = {"/": "-", ":": "_", ".": "_", "%": "_", '"': "_", "'": "_"}


def model_name(cell: str, role: str) -> str:
    """The MLflow LoggedModel name of endpoint ``role`` of ``cell``: ``mlp2x16/moons/sgd``, ``a`` ->
    ``mlp2x16-moons-sgd-a`` (MLflow refuses ``/ : . % " '`` in model names: ``/`` becomes ``-``, the others ``_``).
    """
    return "".join(_MODEL_NAME_FORBIDDEN.get(ch, ch) for ch in f"{cell}/{role}")


def plugin_tag(section: str) -> str:
    """The tag naming the plug-in builder of ``section`` (``model`` or ``data``), e.g. ``lgeom.plugin.model``."""
    return f"{TAG_PLUGIN_PREFIX}{section}"


def model_tag(endpoint: str) -> str:
    """Run tag pointing at the MLflow model of ``endpoint``: ``lgeom.model.a`` = ``models:/<id>``."""
    return f"{TAG_MODEL_PREFIX}{endpoint}"


# --- artifact paths -------------------------------------------------------------------------------------------


def path_table_artifact(path: str) -> str:
    """Table of ``path`` (column ``t`` plus every column): ``paths/<path>.csv``."""
    return f"{PATHS_DIR}/{path}.csv"


def curve_artifact(curve: str) -> str:
    """Control points of ``curve`` and what rebuilds it: ``curves/<curve>.pt``."""
    return f"{CURVES_DIR}/{curve}.pt"


def spectrum_artifact(point: str) -> str:
    """Hessian eigenvalues, trace and density at ``point``: ``spectra/<point>.json``."""
    return f"{SPECTRA_DIR}/{point}.json"


def plane_artifact(name: str) -> str:
    """Plane grids (``<curve>``, ``slice_<point>``, ``pca``): ``planes/<name>.npz``."""
    return f"{PLANES_DIR}/{name}.npz"


def figure_artifact(name: str) -> str:
    """A PNG figure: ``figures/<name>.png``."""
    return f"{FIGURES_DIR}/{name}.png"


def sharpness_history_artifact(endpoint: str) -> str:
    """An endpoint's tracked top Hessian eigenvalue per epoch (columns epoch, lambda_max, two_over_lr):
    ``training/<endpoint>_sharpness.csv``.
    """
    return f"{TRAINING_DIR}/{endpoint}_sharpness.csv"


def endpoint_artifact(endpoint: str) -> str:
    """An endpoint's ``{"params", "buffers"}`` in a bundle: ``endpoints/<endpoint>.pt`` (logged as model
    ``endpoint``).
    """
    return f"{ENDPOINTS_DIR}/{endpoint}.pt"


def fit_artifact(curve: str) -> str:
    """Training history of a fitted curve: ``fits/<curve>.json``."""
    return f"{FITS_DIR}/{curve}.json"


# --- units and definitions of reported quantities -------------------------------------------------------------

#: Loss units (mean cross-entropy, natural log), accuracy units and their differences.
NATS = "nats"
PERCENT = "%"
PP = "pp"
#: Curvature units: loss per squared parameter unit (Euclidean weight space).
CURV = "nats/param²"
DIST = "param L2"

#: ``family -> quantity -> (unit, one-line definition)`` of every quantity the study report tabulates, the
#: quantity spelled as it ends a metric name (``barrier/<path>/<split>/loss`` -> ``loss``). The one source
#: of units and definitions: the report's tables and figure axes and the README's units table use it.
QUANTITY_INFO: dict[str, dict[str, tuple[str, str]]] = {
    ENDPOINT: {
        split_column("train", "loss"): (NATS, "final training-set loss of the endpoint (eval mode)"),
        split_column("test", "loss"): (NATS, "final test-set loss of the endpoint (eval mode)"),
        split_column("train", "acc"): (PERCENT, "final training-set accuracy of the endpoint"),
        split_column("test", "acc"): (PERCENT, "final test-set accuracy of the endpoint"),
        "samples_per_s": ("samples/s", "training throughput of the endpoint"),
        "n_params": ("count", "trainable parameters of the model"),
    },
    BARRIER: {
        "loss": (NATS, "max_t L(t) - max(L(0), L(1)) along the path"),
        "loss_interp": (NATS, "max_t [L(t) - ((1-t) L(0) + t L(1))]: barrier above the chord"),
        "acc_drop": (PP, "max_t acc(t) - min_t acc(t)"),
        "acc_auc": (f"{PP} x t", "area between acc(t) and its maximum, over t between argmin and argmax of acc"),
    },
    GAP: {
        "gen_gap_max": (NATS, "max_t test_loss(t) - train_loss(t) along the path"),
        "gen_gap_acc_max": (PP, "max_t train_acc(t) - test_acc(t) along the path"),
    },
    TRIANGLE: {
        "dist_ac": (DIST, "||A - C||_2, endpoint A to the control point C"),
        "dist_bc": (DIST, "||B - C||_2, endpoint B to the control point C"),
        "dist_ab": (DIST, "||A - B||_2 between the endpoints"),
        "angle_acb_deg": ("deg", "angle ACB at the control point (180 = C on the segment AB)"),
        "area": (f"{DIST}²", "area of the triangle A, C, B: ||A-C|| ||B-C|| sin(ACB) / 2"),
    },
    FIT: {
        _FIT_SHORT["fit_loss"]: (NATS, "curve-fit objective E_t L(phi(t)) at the last fit epoch"),
        _FIT_SHORT["fit_time_s"]: ("s", "wall time of the curve fit"),
    },
    ALIGN: {
        "iterations": ("count", "weight-matching iterations until the permutation stopped changing"),
        "similarity_before": ("param²", "sum of <A, B> over permuted parameters before alignment"),
        "similarity_after": ("param²", "the same after permuting B onto A"),
    },
    PROBE: {"loss": (NATS, "loss at the point (BN statistics recomputed except at trained endpoints)")},
    HESSIAN: {
        "lambda_max": (CURV, "largest Hessian eigenvalue of the loss"),
        "topk_mean": (CURV, "mean of the top-k Hessian eigenvalues"),
        "trace": (CURV, "Hessian trace (Hutch++ estimate)"),
        "trace_stderr": (CURV, "standard error of the trace estimate"),
        "density_mean": (CURV, "mean of the estimated spectral density (SLQ)"),
    },
    SHARPNESS: {
        "eps_avg": (NATS, "mean loss increase over random perturbations of radius eps"),
        "eps_avg_max": (NATS, "largest loss increase among those perturbations"),
        "flatness": (NATS, "mean |L(theta + delta) - L(theta)| over the same perturbations"),
        "eps_worst": (NATS, "largest loss increase found by gradient ascent inside the eps-ball"),
    },
    CURVATURE: {
        "mc_mean": (CURV, "mean of (L(theta+eps d) - 2 L(theta) + L(theta-eps d)) / eps² over random unit d"),
        "mc_std": (CURV, "standard deviation of those curvatures"),
        "mc_frac_negative": ("fraction", "share of directions with negative curvature"),
    },
    PCA: {
        "explained_variance_1": ("fraction", "trajectory variance along the first PCA direction"),
        "explained_variance_2": ("fraction", "trajectory variance along the second PCA direction"),
        "max_relative_residual": ("fraction", "largest distance of a snapshot from the PCA plane / its norm"),
    },
    GRADIENTS: {
        "effective_dim": ("count", "principal components explaining 90% of the gradients' variance"),
        "effective_dim_ratio": ("fraction", "effective dimension / number of gradient snapshots"),
    },
    PATH: {
        split_column("train", "loss"): (NATS, "training-set loss at the point phi(t)"),
        split_column("test", "loss"): (NATS, "test-set loss at the point phi(t)"),
        split_column("train", "acc"): (PERCENT, "training-set accuracy at phi(t)"),
        split_column("test", "acc"): (PERCENT, "test-set accuracy at phi(t)"),
        probe_column(HESSIAN, "lambda_max"): (CURV, "largest Hessian eigenvalue at phi(t)"),
    },
}
#: The families the report shows as tables, in order, with the labels of the name parts between family and
#: quantity (a table's row keys): ``barrier/<path>/<split>/<quantity>`` -> ``("path", "split")``.
REPORT_FAMILIES: dict[str, tuple[str, ...]] = {
    ENDPOINT: ("endpoint",),
    BARRIER: ("path", "split"),
    GAP: ("path",),
    TRIANGLE: ("curve",),
    FIT: ("curve",),
    ALIGN: (),
    PROBE: ("point",),
    HESSIAN: ("point",),
    SHARPNESS: ("point",),
    CURVATURE: ("point",),
    PCA: (),
    GRADIENTS: (),
}


def quantity_info(family: str, quantity: str) -> tuple[str, str]:
    """``(unit, one-line definition)`` of ``quantity`` of ``family`` (see :data:`QUANTITY_INFO`).

    >>> quantity_info("barrier", "acc_drop")
    ('pp', 'max_t acc(t) - min_t acc(t)')

    Raises:
        KeyError: a family or quantity :data:`QUANTITY_INFO` does not describe.
    """
    quantities = QUANTITY_INFO.get(family)
    if quantities is None or quantity not in quantities:
        known = ", ".join(sorted(quantities or QUANTITY_INFO))
        raise KeyError(f"quantity {family}{SEP}{quantity}: expected one of {known}, got {quantity!r}")
    return quantities[quantity]


def split_metric_name(name: str) -> tuple[str, tuple[str, ...], str] | None:
    """``(family, middle parts, quantity)`` of a metric name: ``barrier/bezier/test/loss`` ->
    ``("barrier", ("bezier", "test"), "loss")``; ``None`` for a name without a family part.
    """
    parts = name.split(SEP)
    if len(parts) < 2 or not all(parts):
        return None
    return parts[0], tuple(parts[1:-1]), parts[-1]


def report_table_artifact(family: str) -> str:
    """The report table of one metric family, logged with ``mlflow.log_table``: ``tables/<family>.json``."""
    return f"{REPORT_TABLES_DIR}/{family}.json"


def units_markdown() -> str:
    """The units and definitions of :data:`QUANTITY_INFO` as a Markdown table (the README's units section)."""
    lines = ["| metric | unit | definition |", "|---|---|---|"]
    for family, quantities in QUANTITY_INFO.items():
        keys = REPORT_FAMILIES.get(family, ("path",) if family == PATH else ())
        middle = "".join(f"<{k}>{SEP}" for k in keys)
        for quantity, (unit, meaning) in quantities.items():
            lines.append(f"| `{family}{SEP}{middle}{quantity}` | {unit} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


# --- the contract as a table ----------------------------------------------------------------------------------


_PROBE_MEANINGS = {
    PROBE: "loss at the probed point (BN statistics recomputed except at trained endpoints)",
    HESSIAN: f"Hessian top-k (`{probe_column(HESSIAN, topk_quantity(1))}`... along paths), trace (Hutch++), density",
    SHARPNESS: "eps-sharpness: average and worst case, flatness",
    CURVATURE: "Monte-Carlo curvature along random directions",
}
_TRAJECTORY_MEANINGS = {
    PCA: "PCA plane of endpoint A's training trajectory",
    GRADIENTS: "effective dimensionality of A's gradient snapshots",
}


def contract_rows() -> list[tuple[str, str, str]]:
    """The contract as ``(kind, name, meaning)`` rows, names rendered with ``<placeholders>``."""
    p, c, s, pt, e = "<path>", "<curve>", "<split>", "<point>", "<endpoint>"

    def q(options: tuple[str, ...]) -> str:
        return options[0] if len(options) == 1 else "{" + ",".join(options) + "}"

    rows = [
        ("placeholder", f"`{p}`", f"{', '.join(PATHS)}, each also as `{aligned(p)}` when B is aligned onto A"),
        (
            "placeholder",
            f"`{c}`, `{s}`, `{pt}`, `{e}`",
            f"{', '.join(CURVES)}; {', '.join(SPLITS)}; {', '.join(POINTS)}; {', '.join(ENDPOINTS)}",
        ),
        (
            "tag",
            f"`{TAG_STUDY}`, `{TAG_CELL}`, `{TAG_CONFIG_HASH}`, `{TAG_STAGE}`",
            "study (= experiment), matrix cell (e.g. `preresnet8/cifar10/sgd`), config hash, "
            f"stage ({', '.join(STAGES)})",
        ),
        ("tag", f"`{TAG_PARENT}`", "the study invocation's parent run, on every cell's child run"),
        ("tag", f"`{model_tag(e)}`", "`models:/<id>` of the endpoint's MLflow PyTorch model"),
        (
            "tag",
            f"`{TAG_ERROR}`, `{TAG_STAGES_SKIPPED}`, `{TAG_FAILED_CELLS}`",
            "error of a FAILED run, stages a resumed trial skipped, failed cells of a study",
        ),
        ("tag", f"`{TAG_CURRENT_STAGE}`", "the stage a trial is in now (updated while it runs)"),
        ("tag", f"`{TAG_ALIGN_SKIPPED}`", "why a cell with `curve.align` was connected without alignment"),
        (
            "tag",
            f"`{TAG_FIGURES}`",
            f"a trial's per-cell figures: `{FIGURES_DRAWN}`, or `{FIGURES_DEFERRED}` (`study.cell_figures=false`; "
            "drawn later by `lgeom figures`)",
        ),
        (
            "tag",
            f"`{plugin_tag('<section>')}`",
            "a plug-in model / dataset (`model`, `data`): `module:callable@<sha256 of its file>`",
        ),
        (
            "tag",
            f"`{TAG_PROGRESS}`",
            "the long loops a trial is in and their fraction done, e.g. `plane bezier 40%` (updated while it runs)",
        ),
        (
            "tag",
            f"`{TAG_GIT_COMMIT}`, `{TAG_GIT_DIRTY}`, `{TAG_SOURCE_NAME}`, `{TAG_NOTE}`",
            "provenance: git commit, uncommitted changes (true/false), entry point, description",
        ),
        ("tag", f"`{TAG_SYS_PREFIX}*`", "bookkeeping for orphan detection (host, pid, process start)"),
        ("param", f"`<section>.<key>`, `{PARAM_N_PARAMS}`", "the flattened cell config and the parameter count"),
        (
            "metric",
            f"`{endpoint_metric(e, s, q(SPLIT_QUANTITIES))}`",
            "endpoint's final loss / accuracy (%), eval mode",
        ),
        (
            "metric",
            f"`{barrier_metric(p, s, q(tuple(_BARRIER_SHORT.get(x, x) for x in BARRIER_QUANTITIES)))}`",
            "barriers, accuracy drop and AUC along a path",
        ),
        ("metric", f"`{gap_metric(p, q(GAP_QUANTITIES))}`", "max over t of test - train loss / train - test accuracy"),
        (
            "metric",
            f"`{triangle_metric(c, q(TRIANGLE_QUANTITIES))}`",
            f"triangle A, C, B (`{triangle_metric(c, '*', point=MID)}`: A, phi(0.5), B)",
        ),
        (
            "metric",
            f"`{fit_metric(c, q(tuple(_FIT_SHORT.get(x, x) for x in FIT_QUANTITIES)))}`",
            "final fit loss and fit time of a curve",
        ),
        ("metric", f"`{align_metric(q(ALIGN_QUANTITIES))}`", "permutation alignment of B onto A"),
        *[
            (
                "metric",
                f"`{probe_metric(fam, q(tuple(x for x in qs if x not in DIAG_QUANTITIES.get(fam, ()))), point=pt)}`",
                _PROBE_MEANINGS[fam],
            )
            for fam, qs in PROBE_QUANTITIES.items()
        ],
        *[
            ("metric", f"`{_join(DIAG, pt, fam)}_{q(qs)}`", f"solver diagnostics of the {fam} probe")
            for fam, qs in DIAG_QUANTITIES.items()
        ],
        *[
            ("metric", f"`{trajectory_metric(fam, q(qs))}`", _TRAJECTORY_MEANINGS[fam])
            for fam, qs in TRAJECTORY_QUANTITIES.items()
        ],
        (
            "metric",
            f"`{trial_metric(q(TRIAL_TIMES))}`",
            "a trial's seconds per stage (train, curve fits, path evaluation, planes, connect in all, probes, "
            "logging), compute (wall and CPU seconds) and wall time",
        ),
        ("metric", f"`{study_metric('<quantity>')}`", "a study's cell counts and wall time"),
        (
            "series",
            f"`{history_metric(e, '{loss,acc,test_loss,test_acc,lr,time_s}')}`",
            "per-epoch training of an endpoint, logged live while the trial runs, step = epoch",
        ),
        (
            "series",
            f"`{history_metric(e, q(TRACK_QUANTITIES))}`",
            "top Hessian eigenvalue every `train.track_hessian_every` epochs, and 2/lr (SGD)",
        ),
        ("series", f"`{fit_history_metric(c, '{loss,lr,time_s}')}`", "per-epoch curve fit, logged live, step = epoch"),
        ("series", f"`{series_metric(p, '<column>')}`", "every column of `paths/<path>.csv` but t, step = point index"),
        ("artifact", f"`{ENDPOINTS_DIR}/` -> model `{e}`", "endpoints as MLflow PyTorch models (pickle)"),
        ("artifact", f"`{path_table_artifact(p)}`", "t plus train/test loss and accuracy, probe columns"),
        ("artifact", f"`{curve_artifact(c)}`", "control points and the config to rebuild the curve"),
        ("artifact", f"`{spectrum_artifact(pt)}`", "Hessian eigenvalues, trace, density"),
        (
            "artifact",
            f"`{plane_artifact('<name>')}`",
            f"plane through A, C, B (with `{split_column(s, SAMPLES)}`: the samples of every grid point); "
            "2-D slices; PCA plane",
        ),
        ("artifact", f"`{figure_artifact('<name>')}`", "figures; the study's on its parent run (`mlflow.log_figure`)"),
        (
            "artifact",
            f"`{FIGURE_INPUTS_FILE}`",
            "what draws each figure from the data files (kind, data file, title, sample counts)",
        ),
        (
            "artifact",
            f"`{sharpness_history_artifact(e)}`",
            "lambda_max and 2/lr per epoch when `train.track_hessian_every` is on",
        ),
        (
            "artifact",
            f"`{report_table_artifact('<family>')}`",
            "the report's table of one metric family on the study's parent run (`mlflow.log_table`)",
        ),
        (
            "artifact",
            f"`{REPORT_DIR}/{REPORT_MARKDOWN}`, `{REPORT_DIR}/{REPORT_HTML}`",
            "the study report on its parent run (self-contained HTML: images embedded)",
        ),
    ]
    return rows


def contract_markdown() -> str:
    """The contract as a Markdown table (what the README's "MLflow layout" section shows)."""
    lines = ["| kind | name | meaning |", "|---|---|---|"]
    lines += [f"| {kind} | {name} | {meaning} |" for kind, name, meaning in contract_rows()]
    return "\n".join(lines)
