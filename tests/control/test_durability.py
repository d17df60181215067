"""An acknowledged change survives ``kill -9`` of the process that acknowledged it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.plane import open_control_plane
from tests.control.conftest import DUMMY_CREDENTIALS

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0


def _start(db_path: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.control.admin_process", db_path],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("framegate admin ready"), line
    url = line.split("admin=", 1)[1].split()[0]
    return process, url


@pytest.mark.integration
def test_acknowledged_changes_survive_kill_9(tmp_path: Path) -> None:
    db_path = str(tmp_path / "framegate.db")
    process, url = _start(db_path)
    try:
        client = boto3.client("apigatewayv2", endpoint_url=url, **DUMMY_CREDENTIALS)
        api_id = client.create_api(Name="durable", ProtocolType="WEBSOCKET", RouteSelectionExpression="$x")["ApiId"]
        client.create_stage(ApiId=api_id, StageName="prod", StageVariables={"v": "1"})
        client.update_stage(ApiId=api_id, StageName="prod", StageVariables={"v": "2"})  # acknowledged...
        os.kill(process.pid, signal.SIGKILL)  # ...then killed before any orderly shutdown
        client.close()
    finally:
        process.kill()
        process.wait(timeout=READY_TIMEOUT_S)
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL

    plane = open_control_plane(Config(db_path=db_path), MemoryCatalog())
    try:
        stage = plane.service.stage(api_id, "prod")
        assert stage.stage_variables == {"v": "2"}
        assert {s.api.name for s in plane.service.apis.values()} == {"demo", "durable"}
    finally:
        plane.close()
