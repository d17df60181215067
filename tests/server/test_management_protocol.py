"""``ManagementProtocol`` on a recording transport: who may call, deadlines, over-long bodies, routing.

The gateway is a real in-process ``Gateway`` on a ``FakeClock``; the
transport only records what the protocol writes, so the caller's address can
be any and time moves only when the test says so. Routed calls go to a
``FakeDirectory`` whose answers the test gives when it chooses.
"""

from __future__ import annotations

import asyncio
import re
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.client import connect

from proxy.cluster.envelope import Answer, Operation
from proxy.config import Config
from proxy.errors import RouteTimeout, RouteUnavailable
from proxy.limits import MANAGEMENT_DISCARD_BYTES, MANAGEMENT_IDLE_TIMEOUT_S, MAX_PUSH_BYTES
from proxy.server.management import Directory, ManagementProtocol
from tests.helpers.apis import api_entry, catalog_with, mock, snapshot
from tests.helpers.clock import FakeClock
from tests.helpers.inprocess import in_process_gateway

GET = b"GET /prod/@connections/AAAAAAAAAAAAAAA%3D HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CEILING_S = 5.0
ROUTED_HEADERS = (("x-amzn-RequestId", "from-the-owner"), ("Content-Type", "application/json"))


class RecordingTransport:
    """What ``ManagementProtocol`` needs of a transport, recording writes and the close."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.protocol: object = None
        self.reading = True
        self.wrote = asyncio.Event()

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written += data
        self.wrote.set()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    async def next_write(self) -> None:
        """Returns once the protocol wrote something more."""
        self.wrote.clear()
        await asyncio.wait_for(self.wrote.wait(), CEILING_S)

    def answers(self) -> list[int]:
        """The statuses answered so far."""
        return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.written)]


class FakeDirectory:
    """A ``Directory`` that records what the gateway reports and holds routed calls for the test."""

    def __init__(self) -> None:
        self.opened_ids: list[str] = []
        self.closed_ids: list[str] = []
        self.calls: asyncio.Queue[tuple[Operation, asyncio.Future[Answer]]] = asyncio.Queue()
        self.closing = asyncio.Event()

    def opened(self, connection_id: str) -> None:
        self.opened_ids.append(connection_id)

    def closed(self, connection_id: str) -> None:
        self.closed_ids.append(connection_id)
        self.closing.set()

    async def call(self, operation: Operation) -> Answer:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.calls.put_nowait((operation, answer))
        return await answer

    async def next_call(self) -> tuple[Operation, asyncio.Future[Answer]]:
        return await asyncio.wait_for(self.calls.get(), CEILING_S)


def _catalog() -> object:
    return catalog_with(api_entry("abcdef1234", {"prod": (snapshot({"$default": mock("m1")}), {})}))


async def _caller(
    tmp_path: Path,
    source_ip: str,
    data: bytes,
    config: Config | None = None,
    clock: FakeClock | None = None,
    registry: Directory | None = None,
) -> tuple[RecordingTransport, ManagementProtocol]:
    catalog = _catalog()
    async with in_process_gateway(catalog, tmp_path, config, clock, registry=registry) as server:  # type: ignore[arg-type]
        transport = RecordingTransport()
        protocol = ManagementProtocol(server.gateway, transport, source_ip)  # type: ignore[arg-type]
        protocol.start(data)
        assert transport.protocol is protocol
        return transport, protocol


async def test_a_caller_off_loopback_is_refused_without_credentials(tmp_path: Path) -> None:
    transport, _ = await _caller(tmp_path, "10.0.0.5", GET)
    assert transport.answers() == [403]
    assert b"x-amzn-ErrorType: ForbiddenException" in transport.written
    assert b"loopback callers only" in transport.written


async def test_loopback_callers_are_answered_and_kept_alive(tmp_path: Path) -> None:
    transport, _ = await _caller(tmp_path, "::ffff:127.0.0.1", GET + GET)
    assert transport.answers() == [410, 410]
    assert b"x-amzn-ErrorType: GoneException" in transport.written
    assert not transport.closed


async def test_configured_credentials_that_were_not_loaded_refuse_every_call(tmp_path: Path) -> None:
    """Never fail open: a gateway built without the keys of ``--credentials`` answers 403."""
    config = Config(port=0, admin_port=0, credentials=str(tmp_path / "credentials"))
    transport, _ = await _caller(tmp_path, "127.0.0.1", GET, config)
    assert transport.answers() == [403]
    assert b"not loaded" in transport.written


async def test_an_unsupported_method_is_forbidden(tmp_path: Path) -> None:
    put = GET.replace(b"GET", b"PUT", 1)
    transport, _ = await _caller(tmp_path, "127.0.0.1", put)
    assert transport.answers() == [403]
    assert b"Unsupported method PUT" in transport.written


async def test_an_over_long_body_is_answered_413_at_once_and_read_no_further_than_the_bound(tmp_path: Path) -> None:
    size = MAX_PUSH_BYTES + 1
    head = f"POST /prod/@connections/abc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n".encode()
    transport, protocol = await _caller(tmp_path, "127.0.0.1", head)
    assert transport.answers() == [413]
    # a reason phrase, as AWS sends one (Python names 413 "Request Entity Too Large" before 3.13)
    assert transport.written.startswith(f"HTTP/1.1 413 {HTTPStatus.REQUEST_ENTITY_TOO_LARGE.phrase}\r\n".encode())
    assert b"x-amzn-ErrorType: PayloadTooLargeException" in transport.written
    protocol.data_received(b"z" * size + GET)  # the rest of the body is dropped; the connection lives on
    assert transport.answers() == [413, 410]
    assert b"HTTP/1.1 410 Gone\r\n" in transport.written
    assert not transport.closed

    huge = MANAGEMENT_DISCARD_BYTES + 2
    head = f"POST /prod/@connections/abc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {huge}\r\n\r\n".encode()
    transport, protocol = await _caller(tmp_path, "127.0.0.1", head)
    protocol.data_received(b"z" * (MANAGEMENT_DISCARD_BYTES + 1))
    assert transport.answers() == [413]
    assert transport.closed


async def test_a_request_must_arrive_within_the_handshake_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    config = Config(port=0, admin_port=0, handshake_timeout=2.0)
    head = b"POST /prod/@connections/abc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nhalf"
    transport, _ = await _caller(tmp_path, "127.0.0.1", head, config, clock)
    clock.advance(1.9)
    assert not transport.closed
    clock.advance(0.2)
    assert transport.answers() == [408]
    assert transport.closed


async def test_an_idle_caller_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    transport, protocol = await _caller(tmp_path, "127.0.0.1", GET, clock=clock)
    clock.advance(MANAGEMENT_IDLE_TIMEOUT_S - 1)
    protocol.data_received(GET)  # a request in time: the idle wait starts again after its answer
    clock.advance(MANAGEMENT_IDLE_TIMEOUT_S - 1)
    assert not transport.closed
    clock.advance(1)
    assert transport.closed
    assert transport.answers() == [410, 410]


async def test_a_call_for_another_process_is_answered_with_the_owners_answer_in_order(tmp_path: Path) -> None:
    directory = FakeDirectory()
    post = b"POST /prod/@connections/remote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi"
    transport, _ = await _caller(tmp_path, "127.0.0.1", post + GET, registry=directory)
    operation, answer = await directory.next_call()
    assert operation == Operation("POST", "remote", "", "prod", b"hi")  # a bare /{stage}: the id picks the API
    # The pipelined GET waits behind the routed POST, and the caller is not read meanwhile.
    assert transport.answers() == [] and not transport.reading
    answer.set_result(Answer(200, b"", ROUTED_HEADERS))
    operation, answer = await directory.next_call()
    assert transport.answers() == [200] and b"x-amzn-RequestId: from-the-owner" in transport.written
    assert operation.method == "GET" and operation.connection_id == "AAAAAAAAAAAAAAA="
    gone = b'{"message": "No open connection has this id"}'
    answer.set_result(Answer(410, gone, (*ROUTED_HEADERS, ("x-amzn-ErrorType", "GoneException"))))
    await transport.next_write()
    assert transport.answers() == [200, 410] and transport.written.endswith(gone)
    assert transport.reading and not transport.closed


async def test_a_route_that_fails_is_a_5xx_in_the_aws_error_shape(tmp_path: Path) -> None:
    directory = FakeDirectory()
    transport, _ = await _caller(tmp_path, "127.0.0.1", GET + GET, registry=directory)
    _, answer = await directory.next_call()
    answer.set_exception(RouteTimeout("The node holding this connection did not answer within 5 s"))
    _, answer = await directory.next_call()
    answer.set_exception(RouteUnavailable("The node holding this connection is not listening"))
    await transport.next_write()
    assert transport.answers() == [504, 503]
    assert b"x-amzn-ErrorType: GatewayTimeoutException" in transport.written
    assert b"x-amzn-ErrorType: ServiceUnavailableException" in transport.written
    assert b"did not answer within 5 s" in transport.written


async def test_a_caller_gone_while_its_call_is_routed_cancels_the_wait(tmp_path: Path) -> None:
    directory = FakeDirectory()
    _, protocol = await _caller(tmp_path, "127.0.0.1", GET, registry=directory)
    _, answer = await directory.next_call()
    protocol.connection_lost(None)
    await asyncio.wait_for(asyncio.wait([answer]), CEILING_S)
    assert answer.cancelled()


async def test_the_gateway_reports_connections_as_they_open_and_close(tmp_path: Path) -> None:
    directory = FakeDirectory()
    async with in_process_gateway(_catalog(), tmp_path, registry=directory) as server:  # type: ignore[arg-type]
        async with connect(f"{server.url}/prod"):
            assert directory.opened_ids == list(server.gateway.open_connections)
            assert directory.closed_ids == []
        await asyncio.wait_for(directory.closing.wait(), CEILING_S)
    assert len(directory.opened_ids) == 1 and directory.closed_ids == directory.opened_ids
