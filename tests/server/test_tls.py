"""TLS end to end: wss:// clients, certificates by SNI, wss:// backends, the admin port over HTTPS.

``framegate serve`` runs as a subprocess; certificates come from ``trustme``
CAs made per test; clients are the ``websockets`` library, ``ssl`` sockets
and aiohttp. ``CertificateDirectory`` is also driven in process for names a
client could send but no TLS library would (path tricks).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus

from proxy.config import Config
from proxy.control.model import DomainName
from proxy.server.tls import CertificateDirectory, server_context
from tests.helpers.backends import Recorder, echo_backend, echo_frames
from tests.helpers.servers import START_CEILING_S, codec_env, framegate, serve_argv

pytestmark = pytest.mark.integration

CEILING_S = 15.0
FRAME_BYTES = 32 * 1024
CREDENTIALS = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}
ACM_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/{}"


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def write_pair(ca: trustme.CA, directory: Path, stem: str, *names: str) -> Pem:
    """``directory/stem.crt`` and ``stem.key``: a leaf of ``ca`` for ``names``."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*names)
    pem = Pem(directory / f"{stem}.crt", directory / f"{stem}.key")
    leaf.cert_chain_pems[0].write_to_path(str(pem.cert))
    leaf.private_key_pem.write_to_path(str(pem.key))
    return pem


def client_context(ca: trustme.CA, *, check_hostname: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = check_hostname
    return context


def subject_alt_names(certificate: Any) -> set[str]:
    return {value for kind, value in certificate["subjectAltName"] if kind == "DNS"}


@asynccontextmanager
async def wss_echo_backend(pem: Pem) -> AsyncIterator[str]:
    """An echo backend speaking wss:// with ``pem``; yields its URL."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem.cert, pem.key)

    async def handler(connection: ServerConnection) -> None:
        await echo_frames(connection, Recorder())

    async with serve(handler, "127.0.0.1", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"wss://127.0.0.1:{port}"


@pytest.fixture
def client_ca() -> trustme.CA:
    """The CA of framegate's own certificates (what clients trust)."""
    return trustme.CA()


@pytest.fixture
def default_pem(client_ca: trustme.CA, tmp_path: Path) -> Pem:
    return write_pair(client_ca, tmp_path / "default", "server", "127.0.0.1", "localhost")


def tls_flags(pem: Pem) -> tuple[str, ...]:
    return ("--tls-cert", str(pem.cert), "--tls-key", str(pem.key))


# --- wss:// clients, wss:// and ws:// backends ----------------------------------------------


@pytest.mark.parametrize("backend_scheme", ["ws", "wss"])
async def test_wss_client_echoes_through_a_backend(
    tmp_path: Path, server_codec: str, client_ca: trustme.CA, default_pem: Pem, backend_scheme: str
) -> None:
    backend_ca = trustme.CA()
    backend_ca.cert_pem.write_to_path(str(tmp_path / "backend-ca.pem"))
    backend_pem = write_pair(backend_ca, tmp_path / "backend", "backend", "127.0.0.1")
    async with (
        echo_backend(Recorder()) if backend_scheme == "ws" else wss_echo_backend(backend_pem) as backend,
        framegate(
            tmp_path,
            *tls_flags(default_pem),
            "--backend",
            backend,
            "--backend-ca",
            str(tmp_path / "backend-ca.pem"),
            codec=server_codec,
        ) as gateway,
    ):
        assert gateway.data.startswith("wss://127.0.0.1:")
        async with connect(f"{gateway.data}/prod", ssl=client_context(client_ca), max_size=None) as client:
            await client.send("hello over TLS")
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "hello over TLS"
            # 64 KiB in two 32 KiB frames, the largest frame AWS (and framegate) accepts.
            await client.send(iter([b"\x02" * FRAME_BYTES, b"\x03" * FRAME_BYTES]))
            assert await asyncio.wait_for(client.recv(), CEILING_S) == b"\x02" * FRAME_BYTES + b"\x03" * FRAME_BYTES


async def test_backend_with_an_untrusted_certificate_is_refused_with_502(
    tmp_path: Path, client_ca: trustme.CA, default_pem: Pem
) -> None:
    untrusted = write_pair(trustme.CA(), tmp_path / "backend", "backend", "127.0.0.1")
    async with (
        wss_echo_backend(untrusted) as backend,
        framegate(tmp_path, *tls_flags(default_pem), "--backend", backend) as gateway,
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{gateway.data}/prod", ssl=client_context(client_ca), open_timeout=CEILING_S)
        assert refused.value.response.status_code == 502


async def test_tls_1_2_is_the_oldest_version_offered(tmp_path: Path, client_ca: trustme.CA, default_pem: Pem) -> None:
    assert server_context(str(default_pem.cert), str(default_pem.key)).minimum_version == ssl.TLSVersion.TLSv1_2
    async with framegate(tmp_path, *tls_flags(default_pem)) as gateway:
        context = client_context(client_ca)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        _, writer = await asyncio.wait_for(asyncio.open_connection(*gateway.host_port, ssl=context), CEILING_S)
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.close()


async def test_a_client_that_never_finishes_the_tls_handshake_is_dropped(tmp_path: Path, default_pem: Pem) -> None:
    async with framegate(tmp_path, *tls_flags(default_pem), "--handshake-timeout", "0.5") as gateway:
        reader, writer = await asyncio.open_connection(*gateway.host_port)
        writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, and then nothing
        # The ceiling is far above the 0.5 s deadline; EOF (or a reset) is what is awaited.
        with suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), CEILING_S) == b""
        writer.close()


# --- certificates by SNI -----------------------------------------------------------------------


async def peer_certificate(address: tuple[str, int], ca: trustme.CA, server_name: str) -> Any:
    """The certificate the data port at ``address`` presents to a handshake naming ``server_name``."""
    host, port = address
    context = client_context(ca, check_hostname=False)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=server_name), CEILING_S
    )
    try:
        return writer.get_extra_info("peercert")
    finally:
        writer.close()


async def test_sni_picks_each_domains_certificate(
    tmp_path: Path, server_codec: str, client_ca: trustme.CA, default_pem: Pem
) -> None:
    directory = tmp_path / "certs"
    write_pair(client_ca, directory, "chat.example.com", "chat.example.com")
    write_pair(client_ca, directory, "_wildcard.example.org", "*.example.org")
    write_pair(client_ca, directory, "team-b", "team-b.example.net")
    async with framegate(
        tmp_path, *tls_flags(default_pem), "--tls-cert-dir", str(directory), codec=server_codec
    ) as gateway:
        control = boto3.client("apigatewayv2", endpoint_url=gateway.admin, **CREDENTIALS)
        control.create_domain_name(
            DomainName="team-b.example.net", DomainNameConfigurations=[{"CertificateArn": ACM_ARN.format("team-b")}]
        )
        chosen = {
            name: subject_alt_names(await peer_certificate(gateway.host_port, client_ca, name))
            for name in ("chat.example.com", "CHAT.example.com", "a.example.org", "team-b.example.net", "other.test")
        }
    assert chosen == {
        "chat.example.com": {"chat.example.com"},
        "CHAT.example.com": {"chat.example.com"},
        "a.example.org": {"*.example.org"},
        "team-b.example.net": {"team-b.example.net"},
        "other.test": {"localhost"},
    }


async def test_a_wss_client_reaches_a_custom_domains_api_with_its_certificate(
    tmp_path: Path, client_ca: trustme.CA, default_pem: Pem
) -> None:
    directory = tmp_path / "certs"
    write_pair(client_ca, directory, "chat.example.com", "chat.example.com")
    async with (
        echo_backend(Recorder()) as backend,
        framegate(tmp_path, *tls_flags(default_pem), "--tls-cert-dir", str(directory), "--backend", backend) as gateway,
    ):
        control = boto3.client("apigatewayv2", endpoint_url=gateway.admin, **CREDENTIALS)
        (api,) = control.get_apis()["Items"]
        control.create_domain_name(DomainName="chat.example.com")
        control.create_api_mapping(DomainName="chat.example.com", ApiId=api["ApiId"], Stage="prod")
        port = gateway.data.rsplit(":", 1)[1]
        # The client verifies chat.example.com's own certificate while dialing the loopback address.
        async with connect(
            f"wss://chat.example.com:{port}/",
            host="127.0.0.1",
            port=int(port),
            ssl=client_context(client_ca),
            server_hostname="chat.example.com",
        ) as client:
            await client.send("via the domain")
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "via the domain"


def test_sni_names_that_are_not_dns_names_get_the_default(tmp_path: Path, client_ca: trustme.CA) -> None:
    default_pem = write_pair(client_ca, tmp_path, "default", "localhost")
    secret = write_pair(client_ca, tmp_path / "outside", "secret", "secret.test")
    directory = tmp_path / "certs"
    directory.mkdir()
    default = server_context(str(default_pem.cert), str(default_pem.key))
    certificates = CertificateDirectory(default, directory, lambda name: None)
    assert secret.cert.exists()
    for name in ("../outside/secret", "..", "a/b", "x" * 300, "", None, "secret.test\x00"):
        assert certificates.context_for(name) is default


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    ca = trustme.CA()
    default_pem = write_pair(ca, tmp_path, "default", "localhost")
    directory = tmp_path / "certs"
    write_pair(ca, directory, "chat.example.com", "chat.example.com")
    default = server_context(str(default_pem.cert), str(default_pem.key))
    certificates = CertificateDirectory(default, directory, lambda name: None)
    assert certificates.check() == 1
    first = certificates.context_for("chat.example.com")
    assert first is not default and certificates.context_for("chat.example.com") is first
    renewed = write_pair(ca, directory, "chat.example.com", "chat.example.com")
    os.utime(renewed.cert, ns=(0, os.stat(renewed.cert).st_mtime_ns + 1))  # as a later write would
    assert certificates.context_for("chat.example.com") not in (first, default)


def test_a_certificate_arn_naming_no_file_falls_back_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    default_pem = write_pair(ca, tmp_path, "default", "localhost")
    directory = tmp_path / "certs"
    directory.mkdir()
    domain = DomainName("chat.example.com", ({"certificateArn": ACM_ARN.format("missing")},))
    default = server_context(str(default_pem.cert), str(default_pem.key))
    certificates = CertificateDirectory(default, directory, {"chat.example.com": domain}.get)
    with caplog.at_level("WARNING"):
        assert certificates.context_for("chat.example.com") is default
    assert "missing.crt, which does not exist" in caplog.text


# --- admin port over HTTPS ------------------------------------------------------------------


async def test_admin_port_serves_https(tmp_path: Path, client_ca: trustme.CA) -> None:
    admin_pem = write_pair(client_ca, tmp_path / "admin", "admin", "127.0.0.1")
    async with framegate(
        tmp_path, "--admin-tls-cert", str(admin_pem.cert), "--admin-tls-key", str(admin_pem.key)
    ) as gateway:
        assert gateway.data.startswith("ws://") and gateway.admin.startswith("https://")
        connector = aiohttp.TCPConnector(ssl=client_context(client_ca))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{gateway.admin}/metrics") as response,
        ):
            assert response.status == 200
            assert "framegate_" in await response.text()


# --- start-up errors --------------------------------------------------------------------------


async def serve_fails(tmp_path: Path, *flags: str) -> tuple[int, str]:
    """Run ``framegate serve *flags``, which must exit at once: (status, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *serve_argv(tmp_path / "framegate.db", *flags),
        env=codec_env("python"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), START_CEILING_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("fault", ["mismatched", "missing", "not a key", "no key", "encrypted"])
async def test_an_unusable_tls_key_is_one_line_naming_it(
    tmp_path: Path, client_ca: trustme.CA, default_pem: Pem, fault: str
) -> None:
    other = write_pair(client_ca, tmp_path / "other", "other", "localhost")
    key = {
        "mismatched": other.key,
        "missing": tmp_path / "nowhere.key",
        "not a key": default_pem.cert,
        "no key": None,
        "encrypted": tmp_path / "encrypted.key",
    }[fault]
    if fault == "encrypted":
        from cryptography.hazmat.primitives import serialization

        loaded = serialization.load_pem_private_key(default_pem.key.read_bytes(), password=None)
        assert isinstance(key, Path)
        key.write_bytes(
            loaded.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    flags = ["--tls-cert", str(default_pem.cert)] + (["--tls-key", str(key)] if key is not None else [])
    status, stderr = await serve_fails(tmp_path, *flags)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("framegate serve: ")
    assert str(key) in lines[0] if key is not None else "--tls-key" in lines[0]


async def test_an_unusable_cert_dir_entry_is_named_at_start(
    tmp_path: Path, client_ca: trustme.CA, default_pem: Pem
) -> None:
    directory = tmp_path / "certs"
    write_pair(client_ca, directory, "chat.example.com", "chat.example.com")
    (directory / "chat.example.com.key").unlink()
    status, stderr = await serve_fails(tmp_path, *tls_flags(default_pem), "--tls-cert-dir", str(directory))
    assert status == 2 and "Traceback" not in stderr
    assert str(directory / "chat.example.com.key") in stderr


@pytest.mark.parametrize("fault", ["missing", "not a certificate"])
async def test_an_unusable_backend_ca_is_one_line_naming_it(tmp_path: Path, fault: str) -> None:
    bundle = tmp_path / "ca.pem"
    if fault == "not a certificate":
        bundle.write_text("not PEM\n")
    status, stderr = await serve_fails(tmp_path, "--backend-ca", str(bundle))
    assert status == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and str(bundle) in stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "c.pem"}, "--tls-cert and --tls-key go together"),
        ({"tls_key": "k.pem"}, "--tls-cert and --tls-key go together"),
        ({"admin_tls_cert": "c.pem"}, "--admin-tls-cert and --admin-tls-key go together"),
        ({"tls_cert_dir": "certs"}, "tls_cert_dir needs --tls-cert"),
        ({"tls_cert": "c.pem", "tls_key": "k.pem", "handshake_timeout": 0.0}, "handshake_timeout must be positive"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**settings).validate()
