"""Live logging into a RUNNING run: per-epoch series and the current stage, visible in the MLflow UI while
a trial computes.

:class:`LiveLogger` buffers metrics and tags and sends them with ``log_batch`` from a background thread
every ``interval_s`` seconds (and when the buffer is large), so the training loop never waits for the
store; :meth:`LiveLogger.close` flushes what is left and joins the thread before the run ends. A
``(metric, step)`` pair is logged once per logger: a resumed loop that reports an epoch again, or a
history backfilled after training, adds nothing twice.

:func:`progress_metrics` turns :class:`lgeom.progress.ProgressEvent` epoch events into metric names of the
contract (``train/<endpoint>/<column>``, ``fit/<curve>/<column>``); :meth:`LiveLogger.progress_callback`
is the callback a trial passes to lgeom's loops. It also keeps tag ``lgeom.progress`` saying which long
loops (plane, path evaluation, Hessian along a path, density, sharpness) the trial is in and how far
(``"plane bezier 40%"``, from :class:`lgeom.progress.FractionReporter`). That tag changes at most once per
whole percent of a loop and is sent with the next periodic flush (it does not wake the thread), so a
running trial writes it at most once every ``interval_s`` seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from lgeom import names
from lgeom.progress import FractionReporter, ProgressEvent
from tracking.log import TrackedRun, check_metric_name
from tracking.redact import redact
from tracking.store import with_retries

logger = logging.getLogger(__name__)

#: lgeom loops whose epoch events become live series, and how their scope names the series.
_TASK_NAMING = {"train": names.history_metric, "fit_curve": names.fit_history_metric}
_BATCH = 1000


def progress_metrics(event: ProgressEvent) -> tuple[dict[str, float], int] | None:
    """``({metric name: value}, step)`` for an epoch event of a scoped training or curve-fit loop (step =
    the 1-based epoch, as in the loops' history tables), ``None`` for any other event. Non-finite values
    (e.g. ``test_loss`` on epochs without evaluation) are left out.
    """
    naming = _TASK_NAMING.get(event.task)
    if naming is None or event.kind != "epoch" or not event.scope or event.epoch < 0:
        return None
    metrics = {
        naming(event.scope, k): float(v)
        for k, v in event.metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    }
    return metrics, event.epoch + 1


class LiveLogger:
    """Buffered, asynchronous metric and tag logging into ``run`` (see module doc).

    Use as a context manager, or call :meth:`close` before the run ends.

    Args:
        run: the RUNNING run.
        interval_s: seconds between background flushes.
    """

    def __init__(self, run: TrackedRun, *, interval_s: float = 2.0) -> None:
        self.run = run
        self.interval_s = interval_s
        self._client = run.store.client()  # its own client: the thread never shares the trial's
        self._lock = threading.Lock()
        self._metrics: list[Any] = []
        self._tags: dict[str, str] = {}
        self._seen: set[tuple[str, int]] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warned = False
        self._fractions = FractionReporter(lambda text: self.set_tag(names.TAG_PROGRESS, text, wake=False))
        self.batches = 0
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"lgeom-live-{run.run_id[:8]}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(raise_errors=exc is None)

    # --- what the trial calls --------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Queue ``metrics`` at ``step``; pairs ``(name, step)`` queued before are skipped.

        Raises:
            ValueError: a metric name MLflow would reject.
        """
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        with self._lock:
            for name, value in metrics.items():
                if (name, step) in self._seen:
                    continue
                check_metric_name(name)
                self._seen.add((name, step))
                self._metrics.append(Metric(name, float(value), ts, int(step)))
            large = len(self._metrics) >= _BATCH
        if large:
            self._wake.set()

    def set_tag(self, key: str, value: str, *, wake: bool = True) -> None:
        """Queue a tag (the latest value of a key wins); sent now with ``wake``, else at the next periodic flush."""
        with self._lock:
            self._tags[key] = str(value)
        if wake:
            self._wake.set()

    def progress_callback(self, event: ProgressEvent) -> None:
        """A :data:`lgeom.progress.Callback`: epoch events of scoped loops become live series; events of the
        long loops keep tag ``lgeom.progress`` up to date.
        """
        self._fractions(event)
        found = progress_metrics(event)
        if found is not None and found[0]:
            self.log_metrics(found[0], step=found[1])

    def log_history(self, scope: str, history: Any, *, task: str = "train") -> None:
        """Log a finished loop's history table (rows with a 1-based ``epoch`` column, e.g.
        ``TrainResult.history``) as the same series its live events make; rows already logged live are
        skipped (a resumed loop reports only the epochs after its checkpoint).
        """
        rows = history.rows() if hasattr(history, "rows") else list(history)
        for row in rows:
            event = ProgressEvent(
                task, "epoch", 0, 0, int(row["epoch"]) - 1, {k: v for k, v in row.items() if k != "epoch"}, scope=scope
            )
            self.progress_callback(event)

    # --- sending ---------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send everything queued now (retried on transient errors); on failure the entries stay queued.

        Raises:
            whatever the store raises after the retries.
        """
        with self._lock:
            metrics, self._metrics = self._metrics, []
            tags, self._tags = self._tags, {}
        if not metrics and not tags:
            return
        from mlflow.entities import RunTag

        t0 = time.perf_counter()
        try:
            tag_items = [RunTag(k, v) for k, v in tags.items()]
            for i in range(0, max(len(metrics), 1), _BATCH):
                chunk = metrics[i : i + _BATCH]
                extra = tag_items if i == 0 else []
                if not chunk and not extra:
                    continue
                with_retries(
                    lambda c=chunk, t=extra: self._client.log_batch(
                        self.run.run_id, metrics=c, tags=t, synchronous=True
                    ),
                    what=f"live logging {len(chunk)} metrics",
                    policy=self.run.retry,
                )
                self.batches += 1
        except BaseException:
            with self._lock:
                self._metrics = metrics + self._metrics
                self._tags = {**tags, **self._tags}
            raise
        finally:
            self.seconds += time.perf_counter() - t0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception as err:  # noqa: BLE001 - live logging must not kill the trial; close() retries
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"live logging to run {self.run.run_id} failed ({redact(str(err))[:300]}); "
                        "retrying at the next flush",
                        RuntimeWarning,
                        stacklevel=1,
                    )

    def close(self, *, raise_errors: bool = True) -> None:
        """Stop the background thread, join it, and flush what is left.

        Raises:
            the store's error when the last flush fails and ``raise_errors`` (else it only warns).
        """
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            self.flush()
        except Exception as err:
            if raise_errors:
                raise
            warnings.warn(
                f"live logging to run {self.run.run_id}: last flush failed ({redact(str(err))[:300]})",
                RuntimeWarning,
                stacklevel=2,
            )


__all__ = ["LiveLogger", "progress_metrics"]
