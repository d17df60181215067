"""Who may call the admin API: SigV4 signatures with ``--credentials``, loopback rules without.

Layer 3 (sans-IO: the clock is passed in). ``server.admin`` asks the
``Guard`` before any handler runs.

With credentials, every ``/v2/*`` request must carry a valid SigV4 signature
for service ``apigateway`` (any region) by one of the file's keys
(``proxy.sigv4``); the signature binds the ``Host``, so the address checks
below are not needed and the port may face a network.

Without credentials, the API trusts whoever reaches it, so it makes sure
only local programs do: the peer must be a loopback address (unless
``--admin-allow-remote-unauthenticated``), and ``Host`` must name a loopback
address, ``localhost`` or the configured ``--admin-host`` (a web page on a
name that resolves to 127.0.0.1, DNS rebinding, carries its own name).

Either way a browser is refused: a request with an ``Origin`` that is not
loopback, and a body that is not JSON (``text/plain`` and form posts are
what a page can send cross-site without a preflight). botocore sends
``application/json`` on every operation that has a body and no
``Content-Type`` on those without.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from proxy import sigv4
from proxy.control.handlers import Request
from proxy.errors import AccessDeniedException, BadRequestException

JSON_CONTENT_TYPES: Final = frozenset({"application/json", "application/x-amz-json-1.1"})
LOCALHOST: Final = "localhost"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``, ``[::1]``, ``::ffff:127.0.0.1``)."""
    if host.lower().rstrip(".") == LOCALHOST:
        return True
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers this way
    return address.is_loopback


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` value: ``127.0.0.1:9090`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    value = host_header.strip()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, _, _port = value.partition(":")
    return name.lower()


@dataclass(frozen=True, slots=True)
class Guard:
    """The admin API's access policy.

    Args:
        credentials: access key id -> secret key; None serves without signatures.
        allowed_hosts: ``Host`` names accepted besides loopback ones (the ``--admin-host``).
        allow_remote: without credentials, accept any peer and ``Host``
            (``--admin-allow-remote-unauthenticated``).
    """

    credentials: Mapping[str, str] | None = None
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allow_remote: bool = False

    def check_open(self, request: Request) -> None:
        """The checks for ``/metrics``, ``/healthz`` and ``/readyz``: no signature, no body rules.

        Raises:
            AccessDeniedException: a foreign peer, ``Host`` or ``Origin``.
        """
        self._check_origin(request)
        if self.credentials is None and not self.allow_remote:
            self._check_peer(request)
            self._check_host(request)

    def check(self, request: Request, now: datetime) -> None:
        """Admit one control-plane request, or raise what AWS (or the loopback policy) answers.

        Raises:
            sigv4.AuthError: with credentials, a missing or bad signature.
            AccessDeniedException: a foreign peer, ``Host`` or ``Origin``.
            BadRequestException: a body that is not JSON.
        """
        self.check_open(request)
        check_content_type(request)
        if self.credentials is not None:
            path, _, query = request.target.partition("?")
            signed = sigv4.SignedRequest(request.method, path, query, request.headers, request.body)
            sigv4.verify(signed, self.credentials.get, now)

    @staticmethod
    def _check_peer(request: Request) -> None:
        if request.peer is None or not is_loopback_host(request.peer):
            raise AccessDeniedException(
                "The admin API accepts loopback clients only; start framegate with --credentials to open it"
            )

    def _check_host(self, request: Request) -> None:
        host = request.header("host")
        if host is None:
            raise AccessDeniedException("The admin API needs a Host header")
        name = host_name(host)
        if not (is_loopback_host(name) or name in self.allowed_hosts):
            raise AccessDeniedException(f"Host {name[:64]!r} is not this admin API's address")

    def _check_origin(self, request: Request) -> None:
        origin = request.header("origin")
        if origin is None:
            return
        try:
            hostname = urlsplit(origin.strip()).hostname
        except ValueError:
            hostname = None
        if hostname is None or not (is_loopback_host(hostname) or hostname in self.allowed_hosts):
            raise AccessDeniedException("Requests from web pages (a foreign Origin) are not accepted")


def check_content_type(request: Request) -> None:
    """A request with a body must declare it JSON (what botocore sends; a browser form cannot).

    Raises:
        BadRequestException: the body is not declared ``application/json`` or
            ``application/x-amz-json-1.1``.
    """
    if not request.body:
        return
    declared = request.header("content-type")
    media_type = (declared or "").partition(";")[0].strip().lower()
    if media_type not in JSON_CONTENT_TYPES:
        raise BadRequestException(
            f"Content-Type must be application/json for a request with a body, not {media_type[:64] or 'none'!r}"
        )
