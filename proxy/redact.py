"""Redacting secrets from URLs before they reach a log line or an error, sans-IO.

Layer 1. An integration URI may carry credentials (``ws://user:password@host``)
or tokens in its query (``?token=...``). Logs keep the scheme, host, port and
path, and the query's parameter names; user info and every query value
become ``***``. Clients are told no URL at all (``proxy.server.gateway``).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

MASK: Final = "***"


def redact_url(url: str) -> str:
    """``url`` with its user info and query values replaced by ``***``.

    ``ws://user:pass@host:9000/path?token=abc&x`` becomes
    ``ws://***@host:9000/path?token=***&x=***``. A fragment is dropped.
    Text that does not parse as a URL is replaced whole.

    Args:
        url: any URL, typically an integration URI after stage variables.

    Returns:
        The URL safe to log.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return MASK
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    query = "&".join(f"{field.split('=', 1)[0]}={MASK}" for field in parts.query.split("&") if field)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
