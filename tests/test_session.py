"""The per-connection pipeline in memory: binary policy, route selection, throttle hook, integrations."""

from __future__ import annotations

import json
from itertools import count

import pytest

from proxy.control.context import RequestContext
from proxy.control.model import CONNECT, DEFAULT, DISCONNECT, Route
from proxy.errors import IntegrationError
from proxy.frames import CloseCode, Opcode
from proxy.session import Close, Forward, Peer, Reply, Session
from tests.helpers.apis import mock, snapshot, target, ws

CONNECTION = "Qyi07eCbtjMCJKw="
NOW_MS = 1_700_000_000_000


def _session(snap_routes: dict[str, object], variables: dict[str, str] | None = None, **kwargs: object) -> Session:
    ids = (f"req{n:013d}=" for n in count())
    snap = snapshot(snap_routes, **kwargs)  # type: ignore[arg-type]
    return Session(target(snap, variables), CONNECTION, Peer("10.0.0.1", "pytest"), lambda: NOW_MS, new_id=ids.__next__)


def test_demo_mock_echoes_text() -> None:
    session = _session({DEFAULT: mock("m1")})
    assert session.receive_message(Opcode.TEXT, b'{"action":"x"}') == Reply('{"action":"x"}')
    assert session.fast_forward is None


def test_binary_on_mock_closes_1003() -> None:
    decision = _session({DEFAULT: mock("m1")}).receive_message(Opcode.BINARY, b"\x00")
    assert isinstance(decision, Close) and decision.code == CloseCode.UNSUPPORTED_DATA


def test_binary_passes_through_ws_integration() -> None:
    session = _session({DEFAULT: ws("i1", "ws://b:1/x")})
    assert session.receive_message(Opcode.BINARY, b"\x00") == Forward("i1", "ws://b:1/x", Opcode.BINARY, b"\x00")


def test_fast_path_only_when_default_is_the_only_message_route() -> None:
    assert _session({DEFAULT: ws("i1", "ws://b:1")}).fast_forward == ("i1", "ws://b:1")
    two = _session({DEFAULT: ws("i1", "ws://b:1"), "join": ws("i2", "ws://c:1")})
    assert two.fast_forward is None


def test_route_selection_picks_the_matching_backend() -> None:
    session = _session({DEFAULT: ws("i1", "ws://a:1"), "join": ws("i2", "ws://b:1")})
    joined = session.receive_message(Opcode.TEXT, b'{"action":"join"}')
    other = session.receive_message(Opcode.TEXT, b"not json")
    assert isinstance(joined, Forward) and joined.integration_id == "i2"
    assert isinstance(other, Forward) and other.integration_id == "i1"


def test_no_match_and_no_default_sends_forbidden_frame() -> None:
    decision = _session({"join": mock("m1")}).receive_message(Opcode.TEXT, b'{"action":"leave"}')
    assert isinstance(decision, Reply)
    frame = json.loads(decision.text)
    assert frame["message"] == "Forbidden" and frame["connectionId"] == CONNECTION
    assert decision.text.startswith('{"message": "Forbidden", "connectionId":')


def test_one_way_mock_route_replies_nothing() -> None:
    assert _session({DEFAULT: mock("m1")}, two_way=False).receive_message(Opcode.TEXT, b"hi") is None


def test_broken_mock_template_sends_internal_server_error_frame() -> None:
    decision = _session({DEFAULT: mock("m1", template="no status")}).receive_message(Opcode.TEXT, b"hi")
    assert isinstance(decision, Reply) and json.loads(decision.text)["message"] == "Internal server error"


def test_route_without_integration_sends_internal_server_error_frame() -> None:
    decision = _session({DEFAULT: None}).receive_message(Opcode.TEXT, b"hi")
    assert isinstance(decision, Reply) and "Internal server error" in decision.text


def test_stage_variables_substituted_per_stage() -> None:
    routes: dict[str, object] = {DEFAULT: ws("i1", "ws://${stageVariables.host}/p")}
    session = _session(routes, {"host": "blue:9001"})
    assert session.connect_upstream() == ("i1", "ws://blue:9001/p")
    missing = _session(routes, {})
    with pytest.raises(IntegrationError, match="host"):
        missing.connect_upstream()
    assert "Internal server error" in str(missing.receive_message(Opcode.TEXT, b"x"))


def test_connect_prefers_connect_route_upstream() -> None:
    session = _session({CONNECT: ws("c", "ws://c:1"), DEFAULT: ws("d", "ws://d:1")})
    assert session.connect_upstream() == ("c", "ws://c:1")


def test_connect_mock_status_decides_the_upgrade() -> None:
    session = _session({CONNECT: mock("c", template='{"statusCode": 403}'), DEFAULT: mock("d")})
    result = session.connect_mock()
    assert result is not None and result.status == 403
    assert _session({DEFAULT: mock("d")}).connect_mock() is None


def test_throttle_hook_refusal_sends_too_many_requests_and_skips_integration() -> None:
    seen: list[tuple[str, bytes, str]] = []

    def admit(route: Route, payload: bytes, context: RequestContext) -> str | None:
        seen.append((route.route_key, payload, context.event_type))
        return "stage" if payload == b"no" else None

    snap = snapshot({DEFAULT: mock("m1")})
    session = Session(target(snap), CONNECTION, Peer("ip", "ua"), lambda: NOW_MS, admit=admit)
    assert session.receive_message(Opcode.TEXT, b"yes") == Reply("yes")
    refused = session.receive_message(Opcode.TEXT, b"no")
    assert isinstance(refused, Reply) and "Too Many Requests" in refused.text
    assert seen == [(DEFAULT, b"yes", "MESSAGE"), (DEFAULT, b"no", "MESSAGE")]


def test_context_carries_connection_facts() -> None:
    session = _session({DEFAULT: mock("m1")})
    context = session.context("MESSAGE", DEFAULT, "mid")
    assert (context.connection_id, context.stage, context.source_ip, context.user_agent) == (
        CONNECTION,
        "dev",
        "10.0.0.1",
        "pytest",
    )
    assert context.connected_at_ms == NOW_MS and context.message_id == "mid"


def test_disconnect_mock_runs_best_effort() -> None:
    ran = _session({DISCONNECT: mock("x", template='{"statusCode": 200}'), DEFAULT: mock("d")}).disconnect()
    assert ran is not None and ran.status == 200
    assert _session({DISCONNECT: mock("x", template="broken"), DEFAULT: mock("d")}).disconnect() is None
    assert _session({DEFAULT: mock("d")}).disconnect() is None
