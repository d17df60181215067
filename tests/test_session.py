"""One connection's decisions, in memory: route selection, binary policy, MOCK, passthrough, $connect, $disconnect."""

from __future__ import annotations

import json
from collections.abc import Mapping
from itertools import count

from proxy.control.context import RequestContext
from proxy.control.model import CONNECT, DEFAULT, DISCONNECT, Integration
from proxy.frames import CloseCode, Opcode
from proxy.session import Client, Close, Forward, Reply, Session, plan
from tests.helpers.apis import mock, snapshot, target, ws

CONNECTION = "Qyi07eCbtjMCJKw="
NOW_MS = 1_700_000_000_000
CLIENT = Client("10.0.0.1", "pytest", "api.example", "room=7")


def _session(
    routes: Mapping[str, Integration | None], variables: Mapping[str, str] | None = None, two_way: bool = True
) -> Session:
    ids = (f"req{n:012d}==" for n in count())
    return Session(
        target(snapshot(routes, two_way=two_way), variables), CONNECTION, CLIENT, ids.__next__, lambda: NOW_MS
    )


def _decide(session: Session, opcode: int, payload: bytes) -> object:
    route = session.route(opcode, payload)
    if route is None:
        return session.no_route("req-none")
    return session.integrate(route, opcode, payload, lambda: session.context("MESSAGE", route.route_key, "mid"))


def test_demo_mock_echoes_text() -> None:
    assert _decide(_session({DEFAULT: mock("m1")}), Opcode.TEXT, b'{"action":"x"}') == Reply('{"action":"x"}')


def test_binary_on_mock_closes_1003() -> None:
    decision = _decide(_session({DEFAULT: mock("m1")}), Opcode.BINARY, b"\x00")
    assert isinstance(decision, Close) and decision.code == CloseCode.UNSUPPORTED_DATA


def test_passthrough_forwards_binary_with_the_client_query_and_integration_timeout() -> None:
    session = _session({DEFAULT: ws("i1", "ws://b:1/x", timeout_ms=2500)})
    assert _decide(session, Opcode.BINARY, b"\x00") == Forward("ws://b:1/x?room=7", 2.5)


def test_route_selection_picks_the_matching_integration() -> None:
    session = _session({DEFAULT: ws("d", "ws://a:1"), "join": ws("j", "ws://b:1?v=1")})
    assert _decide(session, Opcode.TEXT, b'{"action":"join"}') == Forward("ws://b:1?v=1&room=7", 29.0)
    assert _decide(session, Opcode.TEXT, b"not json") == Forward("ws://a:1?room=7", 29.0)
    assert _decide(session, Opcode.BINARY, b'{"action":"join"}') == Forward("ws://a:1?room=7", 29.0)


def test_no_match_and_no_default_sends_the_forbidden_frame() -> None:
    session = _session({"join": mock("m1")})
    assert session.route(Opcode.TEXT, b'{"action":"leave"}') is None
    reply = session.no_route("rid")
    assert reply.text.startswith('{"message": "Forbidden", "connectionId":')
    assert json.loads(reply.text) == {"message": "Forbidden", "connectionId": CONNECTION, "requestId": "rid"}


def test_one_way_mock_route_replies_nothing() -> None:
    assert _decide(_session({DEFAULT: mock("m1")}, two_way=False), Opcode.TEXT, b"hi") is None


def test_failing_or_unsupported_integrations_send_internal_server_error() -> None:
    for routes in ({DEFAULT: mock("m1", template="no status")}, {DEFAULT: None}):
        decision = _decide(_session(routes), Opcode.TEXT, b"hi")
        assert isinstance(decision, Reply) and json.loads(decision.text)["message"] == "Internal server error"


def test_stage_variables_pick_the_backend_and_a_missing_one_fails_the_message() -> None:
    routes = {DEFAULT: ws("i1", "ws://${stageVariables.host}/p")}
    assert _session(routes, {"host": "blue:9001"}).handshake_upstream() == Forward("ws://blue:9001/p?room=7", 29.0)
    decision = _decide(_session(routes, {}), Opcode.TEXT, b"x")
    assert isinstance(decision, Reply) and "Internal server error" in decision.text


def test_handshake_upstream_prefers_connect_then_default() -> None:
    both = _session({CONNECT: ws("c", "ws://c:1"), DEFAULT: ws("d", "ws://d:1")})
    assert both.handshake_upstream() == Forward("ws://c:1?room=7", 29.0)
    assert _session({DEFAULT: mock("m")}).handshake_upstream() is None


def test_connect_mock_status_decides_the_upgrade() -> None:
    refusing = _session({CONNECT: mock("c", template='{"statusCode": 403}'), DEFAULT: mock("d")})
    assert refusing.connect_status(refusing.connect_context()) == 403
    plain = _session({DEFAULT: mock("d")})
    assert plain.connect_status(plain.connect_context()) == 200


def test_disconnect_runs_best_effort_and_records_failure() -> None:
    broken = _session({DISCONNECT: mock("x", template="broken"), DEFAULT: mock("d")}).disconnect().get()
    assert broken.event_type == "DISCONNECT" and broken.error_message
    assert _session({DEFAULT: mock("d")}).disconnect().get().error_message is None


def test_context_carries_the_connection_facts() -> None:
    context: RequestContext = _session({DEFAULT: mock("m1")}).context("MESSAGE", DEFAULT, "mid")
    assert (context.connection_id, context.stage, context.domain_name) == (CONNECTION, "dev", "api.example")
    assert (context.source_ip, context.user_agent, context.message_id) == ("10.0.0.1", "pytest", "mid")
    assert context.connected_at_ms == NOW_MS == context.request_time_epoch_ms


def test_contexts_are_built_on_first_read_with_the_event_time() -> None:
    """An unread context draws no request id; ``$connect``'s keeps the connection's time however late it is read."""
    drawn: list[str] = []
    clock = [1_000]

    def new_id() -> str:
        drawn.append(f"req{len(drawn)}")
        return drawn[-1]

    session = Session(target(snapshot({DEFAULT: mock("d")})), CONNECTION, CLIENT, new_id, lambda: clock[0])
    connect = session.connect_context()
    session.lazy_context("MESSAGE", DEFAULT)  # never read
    assert drawn == []
    clock[0] = 5_000  # the upstream took four seconds to open
    built = connect.get()
    assert (built.request_time_epoch_ms, built.connected_at_ms, built.event_type) == (1_000, 1_000, "CONNECT")
    assert connect.request_id == built.request_id == "req0" and connect.fields()["requestId"] == "req0"
    message = session.lazy_context("MESSAGE", DEFAULT).get()
    assert message.request_time_epoch_ms == 5_000 and drawn == ["req0", "req1", "req2"]
    assert {message.message_id, message.request_id} == {"req1", "req2"}


def test_sessions_share_their_snapshot_s_plan_but_not_its_urls() -> None:
    """The plan is per deployment; the client's query and the stage's variables stay per connection."""
    deployed = snapshot({DEFAULT: ws("i1", "ws://${stageVariables.host}/p")})
    ids = (f"req{n:012d}==" for n in count())

    def session(query: str, host: str) -> Session:
        client = Client("10.0.0.1", "pytest", "api.example", query)
        return Session(target(deployed, {"host": host}), CONNECTION, client, ids.__next__, lambda: NOW_MS)

    first, second = session("room=1", "blue:1"), session("room=2", "green:2")
    assert first._plan is second._plan is plan(deployed)
    assert first.handshake_upstream() == Forward("ws://blue:1/p?room=1", 29.0)
    assert second.handshake_upstream() == Forward("ws://green:2/p?room=2", 29.0)
    assert second.passthrough() == Forward("ws://green:2/p?room=2", 29.0)
