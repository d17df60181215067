"""Static configuration of one ``framegate serve`` process.

Layer 1. ``proxy.cli`` builds one ``Config`` from flags and ``FRAMEGATE_*``
environment variables, validates it, and passes it down; nothing else reads
the environment. Every default points at ``proxy.limits``. Dynamic config
(APIs, routes, stages) lives in the control plane, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from proxy import limits
from proxy.gateway_frames import TOO_MANY_REQUESTS_TEMPLATE

USAGE_ERROR = 2
"""Exit status of ``framegate serve`` when the command line, environment or config file is refused."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
"""The URL schemes that name a Redis server (for ``--redis``, and for ``--db`` instead of a SQLite path)."""
_DATABASE_NUMBER = re.compile(r"/?[0-9]*")


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None; the URL itself is never quoted (it may hold a password).

    redis-py reads ``redis://host/abc`` as database 0 and ``redis://host/1/2`` as database 12, and a
    port out of range raises from deep inside the first connection: each would be a setting
    accepted and ignored, or a traceback, so they are refused here.
    """
    if not url.startswith(REDIS_SCHEMES):
        return f"must be a redis://HOST:PORT/DB URL, not {urlsplit(url).scheme or 'a path'}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError as exc:
        return f"has a bad port: {exc}"
    database = [value for name, value in parse_qsl(parts.query) if name == "db"]
    if parts.scheme != "unix" and not _DATABASE_NUMBER.fullmatch(parts.path):
        return "must end in a database number, as in redis://HOST:PORT/0"
    if not all(value.isdigit() for value in database):
        return "has a db= that is not a database number"
    return None


class InvalidSetting(ValueError):
    """A setting that cannot work: ``name`` is the ``Config`` field, ``problem`` what is wrong with it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Config:
    host: str = limits.DEFAULT_HOST
    port: int = limits.DATA_PORT
    admin_host: str = limits.DEFAULT_HOST
    admin_port: int = limits.ADMIN_PORT
    db_path: str = "framegate.db"
    backend: str | None = None
    """``--backend ws://...``: front one backend as API ``quickstart``, stage ``prod``."""
    config_file: str | None = None
    default_api: str | None = None
    region: str = limits.DEFAULT_REGION
    max_frame: int = limits.MAX_FRAME_BYTES
    max_message: int = limits.MAX_MESSAGE_BYTES
    max_request_head: int = limits.MAX_REQUEST_HEAD_BYTES
    handshake_timeout: float = limits.HANDSHAKE_TIMEOUT_S
    idle_timeout: float = limits.IDLE_TIMEOUT_S
    max_connection_duration: float = limits.MAX_CONNECTION_S
    drain_timeout: float = limits.DRAIN_TIMEOUT_S
    write_high_water: int = limits.WRITE_HIGH_WATER_BYTES
    write_low_water: int = limits.WRITE_LOW_WATER_BYTES
    max_stages_per_api: int = limits.MAX_STAGES_PER_API
    account_burst_limit: int = limits.ACCOUNT_BURST_LIMIT
    account_rate_limit: float = limits.ACCOUNT_RATE_LIMIT
    new_connections_per_s: float = limits.NEW_CONNECTIONS_PER_S
    data_trace_max_bytes: int = limits.DATA_TRACE_MAX_BYTES
    throttled_frame: str = TOO_MANY_REQUESTS_TEMPLATE
    """Text sent for a throttled message; ``{connectionId}`` and ``{requestId}`` are filled in."""
    log_dir: str | None = None
    """Where ``arn:aws:logs:...:log-group:NAME`` access logs go; None: ``logs/`` next to the db."""
    log_level: str = "INFO"
    """One of ``LOG_LEVELS`` (the CLI accepts any case)."""
    log_format: str = "text"
    """The process log's format, one of ``LOG_FORMATS``: text lines, or JSON lines."""
    max_connections: int | None = None
    """Client connections served at once; more are answered 503. None: derived from the fd limit at
    start (see ``proxy.limits.FDS_PER_CONNECTION``)."""
    lambda_endpoint: str | None = None
    """``--lambda-endpoint URL``: where Lambda (AWS, AWS_PROXY) integrations are invoked
    (``URL/2015-03-31/functions/{functionArn}/invocations``); None: they cannot deploy."""
    tls_cert: str | None = None
    """``--tls-cert``: PEM certificate chain; with ``tls_key``, the data port speaks wss://."""
    tls_key: str | None = None
    tls_cert_dir: str | None = None
    """Per-domain certificates picked by SNI (``proxy/server/tls.py``); needs ``tls_cert``."""
    admin_tls_cert: str | None = None
    """``--admin-tls-cert``: with ``admin_tls_key``, the admin port speaks https://."""
    admin_tls_key: str | None = None
    backend_ca: str | None = None
    """PEM bundle of the only CAs trusted for wss:// backends (None: the system store)."""
    credentials: str | None = None
    """``--credentials FILE``: AWS shared-credentials file; admin requests must be SigV4-signed by one of its keys."""
    admin_allow_remote_unauthenticated: bool = False
    """Serve the admin API on a non-loopback ``admin_host`` without ``credentials`` (logged loudly)."""
    redis: str | None = None
    """``--redis redis://HOST:PORT/DB``: throttle buckets shared by every process on this Redis (leases)."""
    workers: int = 1
    """Worker processes of this node (``--workers``): the share of each limit a worker uses before it
    has heard from Redis how many processes are alive."""
    worker_metrics: tuple[str, ...] = ()
    """Worker 0 of ``--workers N``: the other workers' ``/metrics`` URLs, summed into its own."""
    route_socket: str | None = None
    """A worker of ``--workers N`` without ``--redis``: its Unix socket for @connections calls its
    siblings route to it (``proxy.server.siblings``); set by the supervisor only."""
    sibling_sockets: tuple[str, ...] = ()
    """The other workers' ``route_socket``s."""
    reuse_port: bool = False
    """Bind the data port with SO_REUSEPORT: set by the supervisor of ``--workers N`` only (a lone
    process keeps "address already in use" for a second process on its port)."""

    def validate(self) -> None:
        """Raise ``InvalidSetting`` naming the first setting that cannot work."""
        for name in ("port", "admin_port"):
            value = getattr(self, name)
            if not 0 <= value <= limits.MAX_PORT:
                raise InvalidSetting(name, f"must be 0..{limits.MAX_PORT}, got {value}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise InvalidSetting(f.name, f"must not be negative, got {value}")
        for name in ("max_frame", "max_message"):
            if getattr(self, name) < 1:
                raise InvalidSetting(name, "must be positive")
        if self.max_connections is not None and self.max_connections < limits.MIN_CONNECTIONS:
            raise InvalidSetting("max_connections", f"must be at least {limits.MIN_CONNECTIONS}")
        if self.write_low_water > self.write_high_water:
            raise InvalidSetting("write_low_water", "must not exceed write_high_water")
        if self.backend is not None and not self.backend.startswith(("ws://", "wss://")):
            raise InvalidSetting("backend", f"must be a ws:// or wss:// URL, got {self.backend!r}")
        if self.redis is not None:
            problem = redis_url_problem(self.redis)
            if problem is not None:
                raise InvalidSetting("redis", problem)
        if self.db_path.startswith(REDIS_SCHEMES):
            problem = redis_url_problem(self.db_path)
            if problem is not None:
                raise InvalidSetting("db_path", problem)
        if self.workers < 1:
            raise InvalidSetting("workers", "must be at least 1")
        if self.log_level not in LOG_LEVELS:
            raise InvalidSetting("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise InvalidSetting("log_format", f"must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")
        if self.lambda_endpoint is not None and not self.lambda_endpoint.startswith(("http://", "https://")):
            raise InvalidSetting("lambda_endpoint", f"must be an http:// or https:// URL, got {self.lambda_endpoint!r}")
        for flags, cert, key in (
            ("--tls-cert and --tls-key", self.tls_cert, self.tls_key),
            ("--admin-tls-cert and --admin-tls-key", self.admin_tls_cert, self.admin_tls_key),
        ):
            if (cert is None) != (key is None):
                raise InvalidSetting(flags, "go together: give both or neither")
        if self.tls_cert is not None and self.handshake_timeout <= 0:
            raise InvalidSetting("handshake_timeout", "must be positive with --tls-cert: it bounds the TLS handshake")
        if self.tls_cert_dir is not None and self.tls_cert is None:
            raise InvalidSetting("tls_cert_dir", "needs --tls-cert and --tls-key: the certificate for unknown names")
