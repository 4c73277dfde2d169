"""This process's settings: one frozen, typed object, built from the environment once.

Every environment variable the product reads is a field here, declared with ``var()``: its
name, its default, how it is parsed and what it means. Nothing else in the product reads
``os.environ``; a process calls ``current()`` (or ``Settings.from_environ`` for another
mapping) and hands the parts on. A bad value stops the process at start-up with an error
that names the variable. The README's configuration table is ``python -m vigil.settings``'s
output, and a test keeps the two equal.

``SCHEDULER_*`` variables (tiers, batch sizes, leases) are parsed by
``schedules.config.SchedulerConfig.from_mapping``, which knows their pattern; the result is
the ``scheduler`` field.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schedules.config import SchedulerConfig
from vigil.env import (
    SettingsError,
    boolean,
    comma_list,
    deep_model_name,
    file_contents,
    key_namespace,
    non_negative_integer,
    positive_integer,
    positive_number,
    process_var,
    url,
    url_list,
    var,
)

MINUTE = 60
DAY = 24 * 3600
# homes.retention_days' CHECK: no tier keeps more.
MAX_RETENTION_DAYS = 3650
BLOB_BACKENDS = ("filesystem", "s3")


def blob_backend_name(name: str, raw: str) -> str:
    if raw not in BLOB_BACKENDS:
        raise SettingsError(f"{name} must be one of {', '.join(BLOB_BACKENDS)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Every setting of every Vigil process; the defaults are the development values."""

    # Servers
    database_url: str | None = var(
        "DATABASE_URL",
        None,
        "PostgreSQL; unset in dev and tests = the embedded server",
        url,
        group="servers",
        shown_default="embedded",
    )
    redis_url: str | None = var(
        "REDIS_URL",
        None,
        "Redis (candidates, buckets, leases); unset = the embedded server",
        url,
        group="servers",
        shown_default="embedded",
    )
    candidate_shard_urls: tuple[str, ...] = var(
        "CANDIDATE_SHARD_URLS",
        (),
        "Redis servers (comma-separated) homes' candidates are spread over, in a fixed order",
        url_list,
        group="servers",
        shown_default="`REDIS_URL` alone",
    )
    candidate_key_namespace: str = var(
        "CANDIDATE_KEY_NAMESPACE",
        "",
        "prefix of every scheduler key (a `{tag}` keeps a shard in one Cluster slot)",
        key_namespace,
        group="servers",
        shown_default="none",
    )
    celery_broker_url: str | None = var(
        "CELERY_BROKER_URL",
        None,
        "Celery's broker, if not `REDIS_URL` (e.g. another database)",
        url,
        group="servers",
        shown_default="`REDIS_URL`",
    )
    db_pool_max_size: int = var(
        "DB_POOL_MAX_SIZE",
        10,
        "PostgreSQL connections per web process, at most",
        positive_integer,
        group="servers",
    )

    # Blob store
    blob_backend: str = var(
        "BLOB_BACKEND",
        "filesystem",
        "where uploaded frames and snapshots are kept: `filesystem` (under `BLOB_ROOT`) or "
        "`s3` (`S3_*`); PostgreSQL keeps their keys",
        blob_backend_name,
        group="blobs",
    )
    blob_root: str | None = var(
        "BLOB_ROOT",
        None,
        "the filesystem store's folder; web and workers must share it",
        group="blobs",
        shown_default="`var/blobs` of the checkout",
    )
    s3_bucket: str | None = var(
        "S3_BUCKET",
        None,
        "the bucket of the `s3` store (required with it)",
        group="blobs",
        shown_default="none",
    )
    s3_endpoint_url: str | None = var(
        "S3_ENDPOINT_URL",
        None,
        "an S3-compatible server (MinIO, Ceph, R2...); unset = AWS",
        url,
        group="blobs",
        shown_default="AWS",
    )
    s3_region: str | None = var(
        "S3_REGION",
        None,
        "the bucket's region",
        group="blobs",
        shown_default="the client's",
    )
    s3_access_key_id: str | None = var(
        "S3_ACCESS_KEY_ID",
        None,
        "with `S3_SECRET_ACCESS_KEY`, both or none; none: the AWS client's own credentials "
        "(`AWS_*` variables, an instance role)",
        group="blobs",
        shown_default="none",
    )
    s3_secret_access_key: str | None = var(
        "S3_SECRET_ACCESS_KEY",
        None,
        "the access key's secret",
        group="blobs",
        shown_default="none",
    )
    s3_presign_expires_s: int = var(
        "S3_PRESIGN_EXPIRES_S",
        300,
        "longest a presigned GET URL of a blob may live, seconds (S3 allows 7 days at most)",
        positive_integer,
        group="blobs",
    )

    # Accounts and tokens
    jwt_secret_key: str | None = var(
        "JWT_SECRET_KEY",
        None,
        "signs access and refresh tokens; required outside tests",
        group="auth",
        shown_default="none",
    )
    jwt_access_token_expires_s: int = var(
        "JWT_ACCESS_TOKEN_EXPIRES_S",
        15 * MINUTE,
        "access token lifetime, seconds",
        positive_integer,
        group="auth",
    )
    jwt_refresh_token_expires_s: int = var(
        "JWT_REFRESH_TOKEN_EXPIRES_S",
        30 * DAY,
        "refresh token lifetime, seconds",
        positive_integer,
        group="auth",
    )
    auth_session_cache_s: int = var(
        "AUTH_SESSION_CACHE_S",
        60,
        "how long Redis may vouch for a live session before PostgreSQL is asked again; "
        "logout, refresh reuse and `flask users disable|delete` end sessions at once "
        "(`docs/auth.md`)",
        positive_integer,
        group="auth",
    )
    login_limit_account: str = var(
        "LOGIN_LIMIT_ACCOUNT",
        "5/minute;20/hour",
        "failed logins allowed per account",
        group="auth",
    )
    login_limit_address: str = var(
        "LOGIN_LIMIT_ADDRESS",
        "30/minute;300/hour",
        "failed logins allowed per client address",
        group="auth",
    )
    auth_registration: bool = var(
        "AUTH_REGISTRATION",
        False,
        "`POST /auth/register` creates a user and their first home (standard tier)",
        boolean,
        group="auth",
        shown_default="off",
    )
    register_limit_address: str = var(
        "REGISTER_LIMIT_ADDRESS",
        "5/hour;20/day",
        "sign-up attempts allowed per client address",
        group="auth",
    )
    trusted_proxies: int = var(
        "TRUSTED_PROXIES",
        0,
        "reverse proxies in front whose `X-Forwarded-For` entry names the client (Heroku: 1)",
        non_negative_integer,
        group="auth",
    )

    # The web API
    upload_max_bytes: int = var(
        "UPLOAD_MAX_BYTES",
        10 * 1024 * 1024,
        "largest image upload, bytes",
        positive_integer,
        group="web",
        shown_default="10 MiB",
    )
    ingest_device_rate_per_min: int = var(
        "INGEST_DEVICE_RATE_PER_MIN",
        60,
        "`POST /events` per device, sustained; over a limit: 429 with Retry-After "
        "(`docs/limits.md`)",
        positive_integer,
        group="web",
    )
    ingest_device_burst: int = var(
        "INGEST_DEVICE_BURST",
        20,
        "`POST /events` per device, burst",
        positive_integer,
        group="web",
    )
    ingest_home_rate_per_min: int = var(
        "INGEST_HOME_RATE_PER_MIN",
        300,
        "`POST /events` per home, sustained; a critical event passes its device's limit, "
        "only its home's can refuse it",
        positive_integer,
        group="web",
    )
    ingest_home_burst: int = var(
        "INGEST_HOME_BURST",
        100,
        "`POST /events` per home, burst",
        positive_integer,
        group="web",
    )
    stream_max_s: int = var(
        "STREAM_MAX_S",
        300,
        "a `GET /stream` response ends after this long; clients reconnect with `Last-Event-ID`",
        positive_integer,
        group="web",
    )
    stream_keepalive_s: float = var(
        "STREAM_KEEPALIVE_S",
        15.0,
        "a comment line on an idle live stream this often, seconds",
        positive_number,
        group="web",
    )
    stream_max_per_process: int = var(
        "STREAM_MAX_PER_PROCESS",
        8,
        "open live streams per web process (each holds a thread: keep below `WEB_THREADS`)",
        positive_integer,
        group="web",
    )
    stream_max_per_user: int = var(
        "STREAM_MAX_PER_USER",
        4,
        "open live streams per user, across processes",
        positive_integer,
        group="web",
    )
    metrics_token: str | None = var(
        "METRICS_TOKEN",
        None,
        "if set, `/metrics` requires `Authorization: Bearer <token>`",
        group="web",
        shown_default="none",
    )
    prometheus_multiproc_dir: str | None = var(
        "PROMETHEUS_MULTIPROC_DIR",
        None,
        "where gunicorn's workers keep their metrics files (Prometheus multiprocess mode); "
        "emptied when the web process starts (`docs/operations.md`)",
        group="web",
        shown_default="a new temporary folder",
    )
    health_worker_fresh_s: int = var(
        "HEALTH_WORKER_FRESH_S",
        60,
        "`/health` calls a worker stale after this long unheard",
        positive_integer,
        group="web",
    )
    health_queue_stall_s: int = var(
        "HEALTH_QUEUE_STALL_S",
        300,
        "`/health` calls a queue stalled when its oldest message waited this long and "
        "nothing was consumed for as long (above the deep batch limit of 240 s)",
        positive_integer,
        group="web",
    )
    public_base_url: str = var(
        "PUBLIC_BASE_URL",
        "http://localhost:5000",
        "where the API is reached, for the links each alert carries (snapshot, actions)",
        url,
        group="web",
    )
    snapshot_url_secret: str | None = var(
        "SNAPSHOT_URL_SECRET",
        None,
        "signs snapshot links and push action tokens; web and workers need the same one",
        group="web",
        shown_default="`JWT_SECRET_KEY`",
    )

    # Push
    fcm_credentials_json: str | None = var(
        "FCM_CREDENTIALS_JSON",
        None,
        "FCM HTTP v1 service-account JSON (its `token_uri` is where OAuth tokens come from)",
        group="push",
        shown_default="none",
    )
    fcm_credentials_file: str | None = var(
        "FCM_CREDENTIALS_FILE",
        None,
        "a file holding `FCM_CREDENTIALS_JSON`",
        file_contents,
        group="push",
        shown_default="none",
    )
    fcm_project_id: str | None = var(
        "FCM_PROJECT_ID",
        None,
        "FCM project",
        group="push",
        shown_default="the credentials' project",
    )
    fcm_endpoint: str = var(
        "FCM_ENDPOINT",
        "https://fcm.googleapis.com/v1/projects",
        "FCM HTTP v1 endpoint",
        url,
        group="push",
    )
    apns_key: str | None = var(
        "APNS_KEY",
        None,
        "APNs token auth: the `.p8` key (PEM); with `APNS_KEY_ID`, `APNS_TEAM_ID` and "
        "`APNS_TOPIC`, all or none",
        group="push",
        shown_default="none",
    )
    apns_key_file: str | None = var(
        "APNS_KEY_FILE",
        None,
        "a file holding `APNS_KEY`",
        file_contents,
        group="push",
        shown_default="none",
    )
    apns_key_id: str | None = var(
        "APNS_KEY_ID",
        None,
        "the APNs key's id",
        group="push",
        shown_default="none",
    )
    apns_team_id: str | None = var(
        "APNS_TEAM_ID",
        None,
        "the Apple developer team",
        group="push",
        shown_default="none",
    )
    apns_topic: str | None = var(
        "APNS_TOPIC",
        None,
        "the app's bundle id",
        group="push",
        shown_default="none",
    )
    apns_endpoint: str = var(
        "APNS_ENDPOINT",
        "https://api.push.apple.com",
        "APNs endpoint (`https://api.sandbox.push.apple.com` for development builds)",
        url,
        group="push",
    )
    apns_critical_alerts: bool = var(
        "APNS_CRITICAL_ALERTS",
        False,
        "escalated life-safety alerts go out as iOS critical alerts (the app must hold "
        "Apple's critical-alerts entitlement); off: time-sensitive",
        boolean,
        group="push",
        shown_default="off",
    )
    push_timeout_s: float = var(
        "PUSH_TIMEOUT_S",
        10.0,
        "each push request's timeout, seconds (at most 300)",
        positive_number,
        group="push",
    )
    push_lease_s: float = var(
        "PUSH_LEASE_S",
        30.0,
        "a sender's lease on a delivery, seconds (above the timeout)",
        positive_number,
        group="push",
    )
    push_max_attempts: int = var(
        "PUSH_MAX_ATTEMPTS",
        8,
        "tries per delivery",
        positive_integer,
        group="push",
    )
    push_backoff_base_s: float = var(
        "PUSH_BACKOFF_BASE_S",
        2.0,
        "first retry's delay, doubling each time",
        positive_number,
        group="push",
    )
    push_backoff_max_s: float = var(
        "PUSH_BACKOFF_MAX_S",
        300.0,
        "longest retry delay",
        positive_number,
        group="push",
    )
    push_threads: int = var(
        "PUSH_THREADS",
        8,
        "concurrent provider requests per sender",
        positive_integer,
        group="push",
    )

    # Workers
    vigil_device: str | None = var(
        "VIGIL_DEVICE",
        None,
        "deep worker device (`cuda`, `cuda:1`, `cpu`)",
        group="workers",
        shown_default="CUDA when present",
    )
    deep_max_batch: int = var(
        "DEEP_MAX_BATCH",
        64,
        "most frames in one device batch (on CUDA, also bounded by free memory at start)",
        positive_integer,
        group="workers",
    )
    deep_batch_wait_ms: float = var(
        "DEEP_BATCH_WAIT_MS",
        5.0,
        "longest a ready frame waits for others to fill a device batch",
        positive_number,
        group="workers",
    )
    deep_task_threads: int = var(
        "DEEP_TASK_THREADS",
        4,
        "deep tasks one deep worker runs at once (their frames share device batches)",
        positive_integer,
        group="workers",
    )
    deep_host_threads: int = var(
        "DEEP_HOST_THREADS",
        0,
        "threads for fetch, decode, letterbox, drawing and encoding; 0 = one per core",
        non_negative_integer,
        group="workers",
    )
    deep_model: str = var(
        "DEEP_MODEL",
        "nanodet",
        "`nanodet`, or `devicesim` (a fixed cost per batch, to size the host path)",
        deep_model_name,
        group="workers",
    )
    vigil_worker_role: str | None = var(
        "VIGIL_WORKER_ROLE",
        None,
        "`deep` loads the detector at start (set by `python -m tasks.gpu_workers`)",
        group="workers",
        shown_default="none",
    )
    cuda_visible_devices: tuple[str, ...] | None = var(
        "CUDA_VISIBLE_DEVICES",
        None,
        "GPUs `worker_gpu` starts one worker for, each",
        comma_list,
        group="workers",
        shown_default="all",
    )
    vigil_fetch_allowed_networks: tuple[str, ...] = var(
        "VIGIL_FETCH_ALLOWED_NETWORKS",
        (),
        "private networks (CIDR, comma-separated) image URLs may point to",
        comma_list,
        group="workers",
        shown_default="none",
    )
    fetch_attempts: int = var(
        "FETCH_ATTEMPTS",
        3,
        "tries of an image URL on transient failures (DNS, timeouts, 5xx, 429)",
        positive_integer,
        group="workers",
    )
    fetch_backoff_base_s: float = var(
        "FETCH_BACKOFF_BASE_S",
        0.5,
        "first fetch retry's delay, doubling, with jitter",
        positive_number,
        group="workers",
    )
    fetch_backoff_max_s: float = var(
        "FETCH_BACKOFF_MAX_S",
        4.0,
        "longest fetch retry delay",
        positive_number,
        group="workers",
    )
    fetch_retry_budget_s: float = var(
        "FETCH_RETRY_BUDGET_S",
        30.0,
        "fetch retries stop after this long, and within half the event's lease",
        positive_number,
        group="workers",
    )
    stationary_iou: float = var(
        "STATIONARY_IOU",
        0.6,
        "a detection overlapping an object its camera saw lately (same group) by this much "
        "(intersection over union, 0.1 to 0.99) is an object that stayed put: no new alert",
        positive_number,
        group="workers",
    )
    stationary_window_s: int = var(
        "STATIONARY_WINDOW_S",
        6 * 3600,
        "how long a camera remembers an object it no longer sees, seconds (60 to 7 days)",
        positive_integer,
        group="workers",
    )

    # History and disk
    retention_days_standard: int = var(
        "RETENTION_DAYS_STANDARD",
        7,
        "days of events, detections, notifications and pictures a standard home keeps "
        "(an owner may choose fewer; `docs/storage.md`)",
        positive_integer,
        group="retention",
    )
    retention_days_premium: int = var(
        "RETENTION_DAYS_PREMIUM",
        30,
        "days of history a premium home keeps",
        positive_integer,
        group="retention",
    )
    retention_days_enterprise: int = var(
        "RETENTION_DAYS_ENTERPRISE",
        90,
        "days of history an enterprise home keeps",
        positive_integer,
        group="retention",
    )
    retention_batch: int = var(
        "RETENTION_BATCH",
        250,
        "events deleted per transaction by retention (each holds its rows' locks that long)",
        positive_integer,
        group="retention",
    )
    retention_max_batches: int = var(
        "RETENTION_MAX_BATCHES",
        200,
        "batches per retention run (every 10 minutes); the rest waits for the next run",
        positive_integer,
        group="retention",
    )
    disk_free_min_ratio: float = var(
        "DISK_FREE_MIN_RATIO",
        0.10,
        "below this free share of the blob store's disk, expendable pictures are evicted, "
        "oldest first, and `/health` says degraded",
        positive_number,
        group="retention",
    )
    disk_free_target_ratio: float = var(
        "DISK_FREE_TARGET_RATIO",
        0.15,
        "eviction stops once this share is free (at least `DISK_FREE_MIN_RATIO`)",
        positive_number,
        group="retention",
    )

    # Processes (read by the Procfile's command lines)
    port: None = process_var("PORT", "5000", "web process port")
    bind_address: None = process_var(
        "BIND_ADDRESS",
        "0.0.0.0",
        "address the web process and Flower listen on; `make run` sets `127.0.0.1` unless given",
    )
    web_concurrency: None = process_var("WEB_CONCURRENCY", "2", "gunicorn worker processes")
    web_threads: None = process_var(
        "WEB_THREADS", "32", "threads per gunicorn worker (each open live stream holds one)"
    )
    cpu_concurrency: None = process_var("CPU_CONCURRENCY", "2", "`worker_cpu` processes")
    flower_port: None = process_var("FLOWER_PORT", "5555", "Flower's port")
    flower_basic_auth: None = process_var(
        "FLOWER_BASIC_AUTH", "none", "Flower login, `user:password`"
    )

    scheduler: SchedulerConfig = field(
        default_factory=SchedulerConfig,
        metadata={"env": "SCHEDULER_*", "group": "scheduler", "parse": None},
    )

    def __post_init__(self) -> None:
        if self.fcm_credentials_json and self.fcm_credentials_file:
            raise SettingsError("set FCM_CREDENTIALS_JSON or FCM_CREDENTIALS_FILE, not both")
        if self.apns_key and self.apns_key_file:
            raise SettingsError("set APNS_KEY or APNS_KEY_FILE, not both")
        if self.blob_backend == "s3" and not self.s3_bucket:
            raise SettingsError("BLOB_BACKEND=s3 needs S3_BUCKET")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise SettingsError("set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither")
        if self.push_timeout_s > 300:
            raise SettingsError(f"PUSH_TIMEOUT_S must be at most 300, got {self.push_timeout_s}")
        if not 0.1 <= self.stationary_iou <= 0.99:
            raise SettingsError(
                f"STATIONARY_IOU must be between 0.1 and 0.99, got {self.stationary_iou}"
            )
        for name, days in (
            ("RETENTION_DAYS_STANDARD", self.retention_days_standard),
            ("RETENTION_DAYS_PREMIUM", self.retention_days_premium),
            ("RETENTION_DAYS_ENTERPRISE", self.retention_days_enterprise),
        ):
            if days > MAX_RETENTION_DAYS:
                raise SettingsError(f"{name} must be at most {MAX_RETENTION_DAYS}, got {days}")
        if not 0 < self.disk_free_min_ratio <= self.disk_free_target_ratio < 1:
            raise SettingsError(
                "DISK_FREE_MIN_RATIO and DISK_FREE_TARGET_RATIO must be below 1, the target "
                f"at least the minimum, got {self.disk_free_min_ratio} and "
                f"{self.disk_free_target_ratio}"
            )
        if not MINUTE <= self.stationary_window_s <= 7 * DAY:
            raise SettingsError(
                f"STATIONARY_WINDOW_S must be between {MINUTE} and {7 * DAY}, "
                f"got {self.stationary_window_s}"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``environ``; SettingsError naming the variable for a bad value."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            parse = f.metadata.get("parse")
            if parse is None:
                continue
            raw = environ.get(f.metadata["env"], "").strip()
            if raw:
                values[f.name] = parse(f.metadata["env"], raw)
        try:
            values["scheduler"] = SchedulerConfig.from_mapping(environ)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # Derived values, so every process derives them alike.

    @property
    def broker_url(self) -> str | None:
        return self.celery_broker_url or self.redis_url

    @property
    def shard_urls(self) -> tuple[str, ...]:
        """The Redis servers of the candidate store's shards (``REDIS_URL`` when unset)."""
        if self.candidate_shard_urls:
            return self.candidate_shard_urls
        return (self.redis_url,) if self.redis_url else ()

    @property
    def snapshot_secret(self) -> str | None:
        """Snapshot links are signed with SNAPSHOT_URL_SECRET, else JWT_SECRET_KEY."""
        return self.snapshot_url_secret or self.jwt_secret_key

    @property
    def fcm_credentials(self) -> str | None:
        return self.fcm_credentials_json or self.fcm_credentials_file

    @property
    def apns_private_key(self) -> str | None:
        return self.apns_key or self.apns_key_file

    @property
    def push_configured(self) -> bool:
        return bool(self.fcm_credentials or self.apns_key_id)


@functools.cache
def current() -> Settings:
    """This process's settings, read from ``os.environ`` on first use."""
    return Settings.from_environ(os.environ)


def environment() -> dict[str, str]:
    """A copy of this process's environment, for the child processes a launcher starts."""
    return dict(os.environ)


GROUPS = {
    "servers": "Servers",
    "blobs": "Blob store (uploaded frames and annotated snapshots)",
    "auth": "Accounts and tokens",
    "web": "Web API",
    "push": "Push (with no FCM or APNs credentials, pushes are recorded in PostgreSQL only)",
    "workers": "Workers",
    "retention": "History and disk",
    "scheduler": "Triage",
    "processes": "Processes (the Procfile's command lines)",
}


def _shown(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("shown"):
        return str(f.metadata["shown"])
    if f.default in (None, (), ""):
        return "none"
    return f"`{f.default}`"


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for group, title in GROUPS.items():
        lines.append(f"| **{title}** | | |")
        for f in dataclasses.fields(Settings):
            if f.metadata.get("group") != group:
                continue
            if f.name == "scheduler":
                lines.append(
                    "| `SCHEDULER_*` | see `schedules/config.py` | triage: e.g. "
                    "`SCHEDULER_MAX_BATCH_SIZE`, `SCHEDULER_DEEP_QUEUED_BATCHES`, "
                    "`SCHEDULER_TIER_PREMIUM_WEIGHT` (`docs/scheduling.md`) |"
                )
                continue
            lines.append(f"| `{f.metadata['env']}` | {_shown(f)} | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
