"""An admin server on an ephemeral loopback port, driven by boto3 and the aws CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from proxy.config import Config
from proxy.control.access import Guard
from proxy.control.catalog import MemoryCatalog
from proxy.control.plane import ControlPlane, open_control_plane
from proxy.metrics import exposition
from proxy.server.admin import AdminServer, Exposition, Ready, start_admin_server
from tests.helpers.servers import serve_argv

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 15.0
NO_RETRIES = BotoConfig(retries={"total_max_attempts": 1})
"""botocore retries 429 (TooManyRequestsException) with back-off, as against AWS; tests want the first answer."""
DUMMY_CREDENTIALS = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}


@dataclass
class Admin:
    url: str
    plane: ControlPlane
    catalog: MemoryCatalog
    loop: asyncio.AbstractEventLoop
    server: AdminServer


@contextmanager
def running_admin(
    config: Config,
    metrics: Exposition = exposition,
    guard: Guard | None = None,
    ready: Ready = lambda: True,
    **limits: float,
) -> Iterator[Admin]:
    """The control plane of ``config`` behind a real admin listener, its loop in a thread.

    ``limits`` override ``start_admin_server``'s (``keepalive_timeout``, ``max_connections``).
    """
    catalog = MemoryCatalog()
    plane = open_control_plane(config, catalog)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        start_admin_server(plane, "127.0.0.1", 0, guard, metrics, ready, **limits)  # type: ignore[arg-type]
    )
    port = server.port
    thread = threading.Thread(target=loop.run_forever, name="admin-loop", daemon=True)
    thread.start()
    try:
        yield Admin(f"http://127.0.0.1:{port}", plane, catalog, loop, server)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(server.close())
        loop.close()
        plane.close()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "framegate.db")


@pytest.fixture
def admin(db_path: str) -> Iterator[Admin]:
    with running_admin(Config(db_path=db_path)) as server:
        yield server


@pytest.fixture
def client(admin: Admin) -> Iterator[Any]:
    client = boto3.client("apigatewayv2", endpoint_url=admin.url, config=NO_RETRIES, **DUMMY_CREDENTIALS)
    yield client
    client.close()


def make_api(client: Any, name: str = "chat") -> str:
    api_id: str = client.create_api(
        Name=name, ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )["ApiId"]
    return api_id


def make_proxy_route(client: Any, api_id: str, uri: str, route_key: str = "$default") -> tuple[str, str]:
    """A route proxying to ``uri``; returns (route id, integration id)."""
    integration = client.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationUri=uri)
    target = f"integrations/{integration['IntegrationId']}"
    route = client.create_route(ApiId=api_id, RouteKey=route_key, Target=target)
    return route["RouteId"], integration["IntegrationId"]


@dataclass
class Gateway:
    """A running ``framegate serve``: its addresses (from the ready line) and a boto3 client."""

    process: subprocess.Popen[str]
    data: str
    admin: str
    db: str
    client: Any


@contextmanager
def framegate(tmp_path: Path, *args: str, db: str | None = None) -> Iterator[Gateway]:
    """``framegate serve`` on ephemeral ports; stopped by PID (SIGTERM, then SIGKILL) unless already dead."""
    db = db or str(tmp_path / "framegate.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(serve_argv(db, *args), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("framegate ready"), line
        fields = dict(part.split("=", 1) for part in line.split()[2:])
        assert fields["db"] == db
        client = boto3.client("apigatewayv2", endpoint_url=fields["admin"], **DUMMY_CREDENTIALS)
        yield Gateway(process, fields["data"], fields["admin"], db, client)
    finally:
        if client is not None:
            client.close()
        _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
