"""Where runs go, whether that place answers, and retrying what fails transiently.

* Embedded default (nothing configured): tracking URI ``sqlite:///<cwd>/mlflow.db``, artifacts under
  ``<cwd>/mlruns``. The path is made absolute when the store is resolved, so a :class:`Store` handed to a
  Ray worker (which runs in another folder) still points at the same database.
* Server: ``MLFLOW_TRACKING_URI=http(s)://...``. Artifacts are proxied through the server
  (``mlflow-artifacts:``) or, when the server was started with ``--no-serve-artifacts``, written straight
  to S3 by the client with ``MLFLOW_S3_ENDPOINT_URL`` + ``AWS_*``.

:func:`check_health` answers within ``timeout`` seconds (bounded retries, short timeouts) with a
:class:`StoreUnavailableError` that names the URI and what to fix, so that a study never starts against
a store it cannot write to and never leaves a half-made run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlparse

from tracking.redact import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")
Mode = Literal["embedded", "server", "database"]

# MLflow's own HTTP retries default to 7 attempts with a backoff factor of 2 and a 120 s timeout, which
# turns an outage into minutes of silence; ours are short and the logging layer retries on top.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# Settings forced whatever the environment says: MLflow's "View run <name> at: <tracking URI>/#/..." and
# "View experiment at" lines, printed when a run ends, would show a password inside the URI (lgeom prints
# the store's address masked instead, see Store.describe).
FORCED = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class StoreUnavailableError(RuntimeError):
    """The tracking server, database or artifact store cannot be reached or used (says which and why)."""


@dataclass(frozen=True)
class Store:
    """Where runs go. Picklable (plain strings), so it can be sent to Ray trials.

    Attributes:
        tracking_uri: the MLflow tracking URI (absolute for sqlite).
        mode: ``embedded`` (sqlite + local artifacts), ``server`` (HTTP) or ``database`` (another DB URI).
        artifact_root: where new experiments put artifacts in embedded mode (``file://.../mlruns``);
            ``None`` lets the server decide.
    """

    tracking_uri: str
    mode: Mode
    artifact_root: str | None = None

    def client(self) -> MlflowClient:
        """An ``MlflowClient`` bound to this store (no global MLflow state is touched)."""
        configure_http_defaults()
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def describe(self) -> str:
        """One line for humans, credentials masked."""
        where = redact(self.tracking_uri)
        if self.mode == "embedded":
            return f"embedded MLflow store {where} (artifacts in {self.artifact_root})"
        return f"MLflow {self.mode} {where}"


def configure_http_defaults() -> None:
    """Give MLflow's HTTP client short retries and timeouts unless the user set them (see HTTP_DEFAULTS),
    and keep MLflow from printing tracking URIs (see FORCED).
    """
    for k, v in HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    os.environ.update(FORCED)


def embedded_store(workdir: str | os.PathLike[str] | None = None) -> Store:
    """The embedded default in ``workdir`` (default: the current folder): ``mlflow.db`` + ``mlruns/``."""
    root = Path(workdir or os.getcwd()).resolve()
    return Store(f"sqlite:///{root / 'mlflow.db'}", "embedded", (root / "mlruns").as_uri())


def resolve_store(tracking_uri: str | None = None, *, environ: Mapping[str, str] | None = None) -> Store:
    """The store for ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded default.

    Raises:
        ValueError: a URI of an unsupported scheme (names it and lists the supported ones).
    """
    env = os.environ if environ is None else environ
    uri = (tracking_uri or env.get("MLFLOW_TRACKING_URI") or "").strip()
    if not uri:
        return embedded_store()
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("http", "https"):
        return Store(uri.rstrip("/"), "server")
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"tracking URI: expected sqlite:///<path to .db>, got {redact(uri)!r}")
        db = Path(path).resolve()
        return Store(f"sqlite:///{db}", "embedded", (db.parent / "mlruns").as_uri())
    if scheme.startswith(("postgresql", "mysql", "mssql")):
        return Store(uri, "database")
    raise ValueError(
        f"tracking URI: expected http(s)://host:port, sqlite:///path or a SQLAlchemy database URI, got {redact(uri)!r}"
    )


# --- retries ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``attempts`` tries, waiting ``initial_delay * factor**i`` (capped at
    ``max_delay``, with +-25 % jitter) between them, never past ``deadline`` seconds in total.

    The default rides out a restart of the tracking server or S3 (``lgeom down; lgeom up`` takes
    20-40 s on a busy machine): about two minutes before giving up.
    """

    attempts: int = 10
    initial_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 15.0
    deadline: float = 150.0

    def delays(self) -> list[float]:
        """The waits between attempts (without jitter)."""
        return [min(self.max_delay, self.initial_delay * self.factor**i) for i in range(max(0, self.attempts - 1))]


DEFAULT_RETRY = RetryPolicy()
_PERMANENT_CODES = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "BAD_REQUEST",
    "INVALID_STATE",
    "FEATURE_DISABLED",
    "ENDPOINT_NOT_FOUND",
}


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` looks like a passing outage (connection refused/reset, timeouts, HTTP 5xx/429,
    S3 gateway errors) rather than a mistake that a retry cannot fix.
    """
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(err, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(err, ClientError):
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return status >= 500 or status == 429
        if isinstance(err, BotoCoreError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from mlflow.exceptions import MlflowException

        if isinstance(err, MlflowException):
            return err.error_code not in _PERMANENT_CODES
    except ImportError:  # pragma: no cover
        pass
    text = str(err)
    return any(s in text for s in ("Connection refused", "Max retries exceeded", "503", "502", "504", "timed out"))


def announce_retry(what: str, attempts: int) -> Callable[[int, BaseException, float], None]:
    """An ``on_retry`` callback printing one line per retry to stderr: what failed, why (credentials
    masked, first line only) and how long it waits.
    """
    import sys

    def say(attempt: int, err: BaseException, wait: float) -> None:
        reason = redact(str(err)).strip().splitlines()[0][:200] if str(err).strip() else ""
        print(
            f"lgeom: {what} failed ({type(err).__name__}{': ' + reason if reason else ''}); the tracking server or "
            f"S3 may be restarting: retrying in {wait:.0f} s (attempt {attempt + 1} of {attempts})",
            file=sys.stderr,
            flush=True,
        )

    return say


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient errors (:func:`is_transient`) with backoff.

    Each retry is announced (default: :func:`announce_retry`, one line on stderr) so a user sees that a
    study is waiting for its store rather than hanging.

    Raises:
        the last error when it is not transient or the attempts / deadline are used up; its message is
        prefixed with ``what`` and the number of attempts.
    """
    start = time.monotonic()
    delays = policy.delays()
    on_retry = on_retry or announce_retry(what, policy.attempts)
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - classified below
            last_try = attempt >= len(delays)
            wait = 0.0 if last_try else delays[attempt] * random.uniform(0.75, 1.25)
            if not is_transient(err) or last_try or time.monotonic() - start + wait > policy.deadline:
                err.add_note(f"{what}: gave up after {attempt + 1} attempt(s)")
                raise
            on_retry(attempt + 1, err, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# --- health checks ----------------------------------------------------------------------------------------


def _auth(environ: Mapping[str, str]) -> dict[str, Any]:
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    token = environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        return {"auth": (user, password)}
    if token:
        return {"headers": {"Authorization": f"Bearer {token}"}}
    return {}


def _get(url: str, *, timeout: float, deadline: float, environ: Mapping[str, str], what: str) -> Any:
    """GET with bounded retries on connection errors and 5xx, stopping at ``deadline`` (monotonic)."""
    import requests

    last = "no attempt"
    delay = 0.5
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            r = requests.get(url, timeout=(min(3.0, remaining), min(timeout, remaining)), **_auth(environ))
            if r.status_code < 500:
                return r
            body = r.text.strip()
            last = f"HTTP {r.status_code}" + ("" if body.startswith("<") or not body else f": {redact(body[:200])}")
        except requests.RequestException as err:
            last = f"{type(err).__name__}: {redact(str(err))[:300]}"
        if time.monotonic() + delay >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 4.0)
    raise StoreUnavailableError(f"{what}: no answer from {redact(url)} ({last})")


def check_health(
    store: Store,
    *,
    timeout: float = 15.0,
    artifact_uri: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Make sure ``store`` can take runs: the server answers ``/health`` and the REST API (auth), the
    artifact store behind it answers, the database opens. Gives up after ``timeout`` seconds in total.

    Args:
        artifact_uri: an experiment's artifact location to check as well (``s3://...`` is checked
            directly with boto3, ``mlflow-artifacts:`` through the server's proxy).

    Raises:
        StoreUnavailableError: naming the URI, what did not answer, and what to set or start.
    """
    env = os.environ if environ is None else environ
    deadline = time.monotonic() + timeout
    if store.mode == "server":
        base = store.tracking_uri
        hint = (
            "is the server running? ('lgeom up' starts a local one; unset MLFLOW_TRACKING_URI for the embedded store)"
        )
        try:
            r = _get(f"{base}/health", timeout=5, deadline=deadline, environ=env, what="MLflow server")
        except StoreUnavailableError as err:
            raise StoreUnavailableError(f"{err}; {hint}") from None
        if r.status_code == 404:
            r = None  # some proxies hide /health; the API call below decides
        r = _get(
            f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
            timeout=5,
            deadline=deadline,
            environ=env,
            what="MLflow server API",
        )
        if r.status_code in (401, 403):
            raise StoreUnavailableError(
                f"MLflow server {redact(base)}: expected access, got HTTP {r.status_code}; "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            )
        if r.status_code != 200:
            raise StoreUnavailableError(
                f"MLflow server {redact(base)}: expected HTTP 200 from the API, got {r.status_code}"
            )
    elif store.mode in ("embedded", "database"):
        try:
            store.client().search_experiments(max_results=1)
        except Exception as err:  # noqa: BLE001
            raise StoreUnavailableError(
                f"MLflow store {redact(store.tracking_uri)}: cannot be opened ({redact(str(err))[:300]})"
            ) from err
    if artifact_uri:
        check_artifact_store(store, artifact_uri, deadline=deadline, environ=env)


def check_artifact_store(
    store: Store, artifact_uri: str, *, deadline: float | None = None, environ: Mapping[str, str] | None = None
) -> None:
    """Check that artifacts can be written under ``artifact_uri`` (an experiment's artifact location).

    Raises:
        StoreUnavailableError: S3 unreachable, bucket missing, credentials missing or refused.
    """
    env = os.environ if environ is None else environ
    deadline = deadline or time.monotonic() + 20.0
    if artifact_uri.startswith("mlflow-artifacts:"):
        if store.mode != "server":
            raise StoreUnavailableError(
                f"artifact location {artifact_uri}: expected an MLflow server to proxy it, got {store.describe()}"
            )
        # Listing the experiment's folder makes the server touch its artifact store (S3) without writing.
        path = urlparse(artifact_uri).path.lstrip("/")
        r = _get(
            f"{store.tracking_uri}/api/2.0/mlflow-artifacts/artifacts?path={path}",
            timeout=10,
            deadline=deadline,
            environ=env,
            what="artifact store behind the MLflow server",
        )
        if r.status_code != 200:
            raise StoreUnavailableError(
                f"artifact store behind MLflow server {redact(store.tracking_uri)}: expected HTTP 200 listing "
                f"{artifact_uri}, got {r.status_code} ({redact(r.text[:200])})"
            )
    elif artifact_uri.startswith("s3://"):
        _check_s3(artifact_uri, deadline=deadline, environ=env)


def _check_s3(artifact_uri: str, *, deadline: float, environ: Mapping[str, str]) -> None:
    import boto3
    from botocore.config import Config as BotoConfig

    bucket = artifact_uri[len("s3://") :].split("/", 1)[0]
    endpoint = environ.get("MLFLOW_S3_ENDPOINT_URL")
    has_creds = bool(environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY")) or bool(
        environ.get("AWS_PROFILE")
    )
    if not has_creds:
        raise StoreUnavailableError(
            f"artifact location {artifact_uri}: the client writes to S3 directly (server started with "
            "--no-serve-artifacts); expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
            "MLFLOW_S3_ENDPOINT_URL for a non-AWS S3), got none"
        )
    remaining = max(1.0, deadline - time.monotonic())
    # Credentials are passed explicitly: boto3's default session caches the first ones it resolved, so a
    # process whose environment changed would otherwise keep asking S3 with stale keys.
    client = boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        config=BotoConfig(
            connect_timeout=min(3.0, remaining),
            read_timeout=min(5.0, remaining),
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.head_bucket(Bucket=bucket)
            return
        except Exception as err:  # noqa: BLE001
            last = err
            if not is_transient(err):
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    where = endpoint or "AWS S3"
    raise StoreUnavailableError(
        f"S3 {where}: expected bucket {bucket!r} to answer, got {type(last).__name__}: {redact(str(last))[:300]} "
        "(check MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and that the bucket exists)"
    )


def wait_for_store(store: Store, *, policy: RetryPolicy = DEFAULT_RETRY, check_timeout: float = 15.0) -> None:
    """Wait, announcing each retry (:func:`announce_retry`), until ``store`` answers :func:`check_health`:
    for a study trial that starts while the tracking server is being restarted.

    Raises:
        StoreUnavailableError: it did not answer within ``policy``'s attempts / deadline.
    """
    start = time.monotonic()
    delays = policy.delays()
    say = announce_retry(f"reaching {store.describe()}", policy.attempts)
    for attempt in range(policy.attempts):
        try:
            check_health(store, timeout=check_timeout)
            return
        except StoreUnavailableError as err:
            last_try = attempt >= len(delays)
            wait = 0.0 if last_try else delays[attempt] * random.uniform(0.75, 1.25)
            if last_try or time.monotonic() - start + wait > policy.deadline:
                err.add_note(
                    f"waited {time.monotonic() - start:.0f} s for the store: gave up after {attempt + 1} attempt(s)"
                )
                raise
            say(attempt + 1, err, wait)
            time.sleep(wait)


def connect(tracking_uri: str | None = None, *, check: bool = True, timeout: float = 15.0) -> Store:
    """Resolve the store (:func:`resolve_store`), and with ``check`` make sure it answers (:func:`check_health`).

    Raises:
        StoreUnavailableError: the store does not answer within ``timeout`` seconds.
        ValueError: unsupported tracking URI.
    """
    store = resolve_store(tracking_uri)
    configure_http_defaults()
    if check:
        check_health(store, timeout=timeout)
    return store
