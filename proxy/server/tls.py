"""Every ``ssl.SSLContext`` framegate builds: data port, admin port, wss:// backends.

Layer 4 (server). ``framegate serve`` builds the listeners' contexts once at
start-up (``listener_contexts``); a file that cannot be used raises
``TLSSetupError`` naming it, which the CLI prints as one line. Nothing here
reads the environment or the command line.

Data port. ``--tls-cert``/``--tls-key`` is the default certificate. With
``--tls-cert-dir DIR``, the certificate a client's SNI name gets is, first
match wins (docs/aws-behaviour.md#custom-domains):

1. The name is a registered custom domain (or matches a registered
   ``*.parent`` one) whose ``DomainNameConfigurations`` carry a
   ``certificateArn`` ``arn:aws:acm:REGION:ACCOUNT:certificate/ID``:
   ``DIR/ID.crt`` with ``DIR/ID.key``.
2. ``DIR/{name}.crt`` with ``DIR/{name}.key`` (the name in lower case).
3. ``DIR/_wildcard.{parent}.crt`` with its ``.key``: ``*.{parent}``, one label deep.
4. The default certificate (also for no SNI name, or one that is not a DNS name).

Files are re-read when their modification time changes, so a renewed
certificate takes effect for new connections without a restart. Only
TLS 1.2 and later is offered, as on AWS's WebSocket custom domains.

Backends. ``wss://`` integrations are verified against the system trust
store, or only against ``--backend-ca FILE`` when given; there is no switch
that turns verification off. ``use_backend_ca`` sets the one process-wide
client context that ``proxy.server.upstream`` asks ``backend_context`` for.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy import limits
from proxy.config import Config
from proxy.control.model import DomainName

logger = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
"""AWS's WebSocket custom domains offer TLS 1.2 (security policy ``TLS_1_2``) and later only."""
CERT_SUFFIX = ".crt"
KEY_SUFFIX = ".key"
WILDCARD_PREFIX = "_wildcard."
"""``_wildcard.example.com.crt`` serves ``*.example.com`` (``*`` is awkward in file names)."""
ALPN = ["http/1.1"]
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
"""What an SNI name must look like before it becomes part of a file name (no ``/``, no ``..``)."""
_ACM_ARN = re.compile(r"^arn:aws:acm:[a-z0-9-]*:[0-9]*:certificate/(?P<id>[A-Za-z0-9][A-Za-z0-9._-]{0,254})$")

DomainLookup = Callable[[str], "DomainName | None"]
"""The live custom domain registered under a (lower-case) name, or None."""


class TLSSetupError(ValueError):
    """A TLS file or setting that cannot be used; the message names it."""


def _readable(path: str, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TLSSetupError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _no_password() -> bytes:
    # Never prompt on the terminal for an encrypted key: it fails to load, and says so.
    return b""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving ``cert`` (PEM chain) with ``key`` (unencrypted PEM).

    Raises:
        TLSSetupError: naming the file that cannot be read or used.
    """
    _readable(cert, "TLS certificate")
    _readable(key, "TLS key")
    try:
        # Parses the certificate on its own, so a failure below is the key's.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise TLSSetupError(f"TLS certificate {cert} is not a PEM certificate") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSSetupError(f"TLS key {key} does not match the certificate {cert}") from None
        raise TLSSetupError(f"TLS key {key} is not an unencrypted PEM private key") from None
    return context


def backend_client_context(cafile: str | None = None) -> ssl.SSLContext:
    """The context for dialing ``wss://`` backends: verified, hostname checked, TLS 1.2+.

    Args:
        cafile: PEM bundle of the only CAs trusted; None trusts the system store.

    Raises:
        TLSSetupError: ``cafile`` cannot be read or holds no certificate.
    """
    if cafile is not None:
        _readable(cafile, "backend CA bundle")
    try:
        context = ssl.create_default_context(cafile=cafile)
    except ssl.SSLError:
        raise TLSSetupError(f"backend CA bundle {cafile} holds no PEM certificate") from None
    context.minimum_version = MINIMUM_VERSION
    return context


_backend: ssl.SSLContext | None = None


def backend_context() -> ssl.SSLContext:
    """The process's context for ``wss://`` backends, built once (loading a trust store per connection is slow)."""
    global _backend
    if _backend is None:
        _backend = backend_client_context()
    return _backend


def use_backend_ca(cafile: str | None) -> None:
    """Make ``backend_context`` trust only ``cafile`` (None: the system store). Called at start-up."""
    global _backend
    _backend = backend_client_context(cafile)


def _pair(directory: Path, stem: str) -> tuple[Path, Path]:
    return directory / f"{stem}{CERT_SUFFIX}", directory / f"{stem}{KEY_SUFFIX}"


def _acm_id(domain: DomainName) -> str | None:
    for configuration in domain.domain_name_configurations:
        arn = configuration.get("certificateArn")
        if isinstance(arn, str):
            match = _ACM_ARN.match(arn)
            return match["id"] if match else None
    return None


@dataclass(frozen=True, slots=True)
class _Loaded:
    stamp: tuple[int, int]
    """Modification times of the certificate and key when loaded."""
    context: ssl.SSLContext


class CertificateDirectory:
    """SNI: switches a handshake to the certificate its server name gets (see the module docstring).

    Args:
        default: the context of ``--tls-cert``/``--tls-key``; its ``sni_callback`` is set to ours.
        directory: ``--tls-cert-dir``.
        domains: the live custom domains (``MemoryCatalog.domain``).
    """

    def __init__(self, default: ssl.SSLContext, directory: Path, domains: DomainLookup) -> None:
        self._default = default
        self._directory = directory
        self._domains = domains
        self._loaded: dict[Path, _Loaded] = {}
        self._warned: set[str] = set()
        default.sni_callback = self._sni

    def check(self) -> int:
        """Load every pair in the directory once; the number of certificates.

        Raises:
            TLSSetupError: the directory cannot be read, a ``.crt`` has no ``.key``, or a pair is unusable.
        """
        try:
            certs = sorted(entry for entry in os.listdir(self._directory) if entry.endswith(CERT_SUFFIX))
        except OSError as exc:
            raise TLSSetupError(f"cannot read --tls-cert-dir {self._directory}: {exc.strerror or exc}") from None
        for cert in certs:
            self._load(*_pair(self._directory, cert.removesuffix(CERT_SUFFIX)))
        return len(certs)

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context a handshake naming ``server_name`` gets."""
        name = (server_name or "").lower().rstrip(".")
        if not _DNS_NAME.match(name):
            return self._default
        parent = name.partition(".")[2]
        arn_stem = self._certificate_id(name, parent)
        stems = [stem for stem in (arn_stem, name, WILDCARD_PREFIX + parent if parent else None) if stem]
        for stem in stems:
            cert, key = _pair(self._directory, stem)
            if cert.exists():
                try:
                    return self._load(cert, key)
                except TLSSetupError as exc:
                    self._warn(f"{exc}: not served to {name}")
            elif stem == arn_stem:
                self._warn(f"the certificateArn of {name} names {cert}, which does not exist")
        return self._default

    def _certificate_id(self, name: str, parent: str) -> str | None:
        """The certificate ID in the ``certificateArn`` of the domain ``name`` (or ``*.parent``), if any."""
        for registered in (name, f"*.{parent}"):
            domain = self._domains(registered)
            if domain is not None:
                return _acm_id(domain)
        return None

    def _load(self, cert: Path, key: Path) -> ssl.SSLContext:
        try:
            stamp = (os.stat(cert).st_mtime_ns, os.stat(key).st_mtime_ns)
        except OSError as exc:
            raise TLSSetupError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
        loaded = self._loaded.get(cert)
        if loaded is not None and loaded.stamp == stamp:
            return loaded.context
        context = server_context(str(cert), str(key))
        if len(self._loaded) >= limits.TLS_CONTEXT_CACHE:
            self._loaded.clear()
        self._loaded[cert] = _Loaded(stamp, context)
        return context

    def _warn(self, message: str) -> None:
        # Once per distinct problem: a client can repeat a handshake as often as it likes.
        if message not in self._warned and len(self._warned) < limits.TLS_CONTEXT_CACHE:
            self._warned.add(message)
            logger.warning("TLS: %s; trying the next certificate (see --tls-cert-dir in the README)", message)

    def _sni(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        chosen = self.context_for(server_name)
        if chosen is not context:
            connection.context = chosen


@dataclass(frozen=True, slots=True)
class ListenerContexts:
    """The server contexts of one ``framegate serve``: None where that port speaks plain TCP."""

    data: ssl.SSLContext | None
    admin: ssl.SSLContext | None


def listener_contexts(config: Config, domains: DomainLookup) -> ListenerContexts:
    """Build the data and admin ports' contexts and the backends' one from ``config``.

    Raises:
        TLSSetupError: naming the first file that cannot be used.
    """
    use_backend_ca(config.backend_ca)
    data = None
    if config.tls_cert is not None and config.tls_key is not None:
        data = server_context(config.tls_cert, config.tls_key)
        if config.tls_cert_dir is not None:
            count = CertificateDirectory(data, Path(config.tls_cert_dir), domains).check()
            logger.info("TLS: %d certificates in %s selectable by SNI", count, config.tls_cert_dir)
    admin = None
    if config.admin_tls_cert is not None and config.admin_tls_key is not None:
        admin = server_context(config.admin_tls_cert, config.admin_tls_key)
    return ListenerContexts(data, admin)
