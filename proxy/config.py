"""Static configuration of one ``framegate serve`` process.

Layer 1. ``proxy.cli`` builds one ``Config`` from flags and ``FRAMEGATE_*``
environment variables, validates it, and passes it down; nothing else reads
the environment. Every default points at ``proxy.limits``. Dynamic config
(APIs, routes, stages) lives in the control plane, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from proxy import limits
from proxy.gateway_frames import TOO_MANY_REQUESTS_TEMPLATE


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
    reuse_port: bool = False
    """Bind the data port with SO_REUSEPORT: set by the supervisor of ``--workers N`` only (a lone
    process keeps "address already in use" for a second process on its port)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        for name in ("port", "admin_port"):
            value = getattr(self, name)
            if not 0 <= value <= limits.MAX_PORT:
                raise ValueError(f"{name} must be 0..{limits.MAX_PORT}, got {value}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")
        if self.max_frame < 1 or self.max_message < 1:
            raise ValueError("max_frame and max_message must be positive")
        if self.write_low_water > self.write_high_water:
            raise ValueError("write_low_water must not exceed write_high_water")
        if self.backend is not None and not self.backend.startswith(("ws://", "wss://")):
            raise ValueError(f"--backend must be a ws:// or wss:// URL, got {self.backend!r}")
