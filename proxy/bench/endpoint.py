"""Where ``framegate bench`` connects and what it asks for: URL, TLS, headers, subprotocols.

Layer 5. ``Target`` is parsed once from ``--url``, ``-H``, ``--host``,
``--subprotocol``, ``--ca`` and ``--insecure`` (``ValueError`` with a one-line
reason for anything unusable), is picklable so worker processes get it in
their plan, and renders the upgrade request with only the per-connection
key left to splice in. ``describe_failure`` turns a connect-time exception
into the error key the summary groups by and a one-line reason for a human.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"ws": 80, "wss": 443}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP header name or subprotocol (RFC 9110 token)."""
_RESERVED_HEADERS = frozenset(
    {"upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-accept", "content-length"}
)
"""Headers the client writes itself: a second copy would make the upgrade invalid."""
_GAI_NAMES = {getattr(socket, name): name for name in dir(socket) if name.startswith("EAI_")}


def parse_header(text: str) -> tuple[str, str]:
    """``-H 'Name: value'`` -> ``(name, value)``; ``ValueError`` if it cannot be sent as one header line."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _TOKEN.match(name):
        raise ValueError(f"-H {text!r}: expected 'Name: value'")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"-H {name}: the value may not contain CR, LF or NUL")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"-H {name}: set by the WebSocket handshake itself")
    return name, value


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint: socket address, TLS settings and the upgrade request (picklable).

    Build it with ``Target.from_url``.
    """

    url: str
    host: str
    port: int
    tls: bool
    server_hostname: str
    """Name checked against the server's certificate (and sent as SNI): the URL's host."""
    request_head: bytes
    """The upgrade request up to the ``Sec-WebSocket-Key`` value."""
    request_tail: bytes
    """The rest of the request after the key."""
    subprotocols: tuple[str, ...] = ()
    ca_file: str | None = None
    insecure: bool = False

    @classmethod
    def from_url(
        cls,
        url: str,
        headers: Sequence[tuple[str, str]] = (),
        host: str | None = None,
        subprotocols: Sequence[str] = (),
        ca_file: str | None = None,
        insecure: bool = False,
    ) -> Target:
        """Parse and check everything once.

        Args:
            url: ``ws://`` or ``wss://`` URL; path and query string are sent as they are.
            headers: extra request headers (``-H``); a ``Host`` among them works like ``host``.
            host: ``Host`` header to send instead of the URL's (``--host``).
            subprotocols: offered in ``Sec-WebSocket-Protocol``, in order.
            ca_file: PEM bundle to verify the server with (``--ca``) instead of the system's.
            insecure: do not verify the server's certificate (``--insecure``).

        Raises:
            ValueError: a one-line reason the URL or a header cannot be used.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # a port that is not a number or out of range
            raise ValueError(f"bad URL {url!r}: {exc}") from None
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"bad URL {url!r}: the scheme must be ws:// or wss://")
        if not parts.hostname:
            raise ValueError(f"bad URL {url!r}: no host")
        if parts.fragment:
            raise ValueError(f"bad URL {url!r}: a WebSocket URL has no #fragment")
        for protocol in subprotocols:
            if not _TOKEN.match(protocol):
                raise ValueError(f"--subprotocol {protocol!r}: not a valid token")
        tls = parts.scheme == "wss"
        if not tls and (ca_file or insecure):
            raise ValueError("--ca and --insecure apply to wss:// URLs only")
        port = port or _DEFAULT_PORTS[parts.scheme]
        host_header = parts.netloc.rpartition("@")[2]
        extra: list[tuple[str, str]] = []
        for name, value in headers:
            if name.lower() == "host":
                host_header = value
            else:
                extra.append((name, value))
        if host is not None:
            host_header = host
        lines = [
            f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {host_header}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            *(f"{name}: {value}" for name, value in extra),
        ]
        if subprotocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
        head = "\r\n".join(lines) + "\r\nSec-WebSocket-Key: "
        return cls(
            url=url,
            host=parts.hostname,
            port=port,
            tls=tls,
            server_hostname=parts.hostname,
            request_head=head.encode(),
            request_tail=b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
            subprotocols=tuple(subprotocols),
            ca_file=ca_file,
            insecure=insecure,
        )

    def request(self, key: str) -> bytes:
        """The upgrade request carrying ``key``."""
        return self.request_head + key.encode() + self.request_tail

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (None for ws://); ``ValueError`` if ``--ca`` cannot be loaded."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--ca {self.ca_file}: {exc.strerror or exc}") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def error_key(kind: str, code: int | str) -> str:
    """How errors are grouped: ``close:1009``, ``http:429``, ``connect:ECONNREFUSED``, ``timeout:connect``,
    ``dns:EAI_NONAME``, ``tls:CERTIFICATE_VERIFY_FAILED``, ``reply:throttled``."""
    return f"{kind}:{code}"


def describe_failure(exc: OSError) -> tuple[str, str]:
    """A connect-time failure -> (error key, one-line reason).

    DNS failures group as ``dns:EAI_*``, TLS ones by the OpenSSL reason
    (``tls:CERTIFICATE_VERIFY_FAILED``), the rest by errno name.
    """
    if isinstance(exc, socket.gaierror):
        name = _GAI_NAMES.get(exc.errno, str(exc.errno))
        return error_key("dns", name), f"cannot resolve the host: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return error_key("tls", exc.reason or "CERTIFICATE_VERIFY_FAILED"), f"TLS: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return error_key("tls", reason), f"TLS: {reason} ({exc.strerror or exc})"
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return error_key("connect", name), f"cannot connect: {exc.strerror or exc}"
