"""Acknowledged changes survive a restart of ``framegate serve`` and a ``kill -9`` of it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.control.conftest import framegate

pytestmark = pytest.mark.integration
KILL_WAIT_S = 15.0


def test_acknowledged_changes_survive_kill_9_and_restart(tmp_path: Path) -> None:
    with framegate(tmp_path) as first:
        client = first.client
        api_id = client.create_api(Name="durable", ProtocolType="WEBSOCKET", RouteSelectionExpression="$x")["ApiId"]
        client.create_stage(ApiId=api_id, StageName="prod", StageVariables={"v": "1"})
        client.update_stage(ApiId=api_id, StageName="prod", StageVariables={"v": "2"})  # acknowledged...
        first.process.send_signal(signal.SIGKILL)  # ...then killed: no orderly shutdown, no checkpoint
        assert first.process.wait(timeout=KILL_WAIT_S) == -signal.SIGKILL

    with framegate(tmp_path, db=first.db) as second:
        stage = second.client.get_stage(ApiId=api_id, StageName="prod")
        assert stage["StageVariables"] == {"v": "2"}
        names = {api["Name"] for api in second.client.get_apis()["Items"]}
        assert names == {"demo", "durable"}, "the demo is seeded once, on the first start only"
        second.client.delete_stage(ApiId=api_id, StageName="prod")

    with framegate(tmp_path, db=first.db) as third:  # an orderly restart keeps the deletion too
        assert [s["StageName"] for s in third.client.get_stages(ApiId=api_id)["Items"]] == []
