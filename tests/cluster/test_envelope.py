"""Node-to-node @connections messages: round trips, and refusal of anything malformed."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.cluster.envelope import METHODS, Answer, CallReply, CallRequest, EnvelopeError, Operation, decode, encode
from proxy.limits import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_HEADERS, MAX_MESSAGE_BYTES

ids = st.text(min_size=1, max_size=40)
TOO_MANY = [["a", "b"]] * (MAX_ENVELOPE_HEADERS + 1)


headers = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=MAX_ENVELOPE_HEADERS).map(tuple)


names = st.text(max_size=12)


@given(ids, ids, st.sampled_from(sorted(METHODS)), ids, names, names, st.binary(max_size=512))
def test_a_call_survives_the_trip(
    request_id: str, node: str, method: str, connection: str, api: str, stage: str, body: bytes
) -> None:
    request = CallRequest(request_id, node, Operation(method, connection, api, stage, body))
    assert decode(encode(request)) == request


@given(ids, st.integers(min_value=100, max_value=599), st.binary(max_size=512), headers)
def test_a_reply_survives_the_trip(
    request_id: str, status: int, body: bytes, pairs: tuple[tuple[str, str], ...]
) -> None:
    reply = CallReply(request_id, Answer(status, body, pairs))
    assert decode(encode(reply)) == reply


def test_a_message_at_the_cap_fits_in_an_envelope() -> None:
    request = CallRequest("r", "node", Operation("POST", "c", "api", "prod", b"\xff" * MAX_MESSAGE_BYTES))
    assert len(encode(request)) <= MAX_ENVELOPE_BYTES
    assert decode(encode(request)) == request


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"x" * (MAX_ENVELOPE_BYTES + 1), "over"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type":"call","id":"r","from":"n","method":"PUT","connection":"c"}', "unknown @connections method"),
        (b'{"type":"call","id":"","from":"n","method":"GET","connection":"c"}', "'id'"),
        (b'{"type":"reply","id":"r","status":true}', "not an HTTP status"),
        (b'{"type":"reply","id":"r","status":200,"body":"%%%"}', "base64"),
        (b'{"type":"reply","id":"r","status":200,"body":7}', "base64"),
        (b'{"type":"shout","id":"r"}', "unknown envelope type"),
        (b'{"type":"call","id":"r","from":"n","method":"GET","connection":"c","api":7}', "'api'"),
        (b'{"type":"reply","id":"r","status":200,"headers":{"a":"b"}}', "list of at most"),
        (b'{"type":"reply","id":"r","status":200,"headers":[["a"]]}', "string pairs"),
        (b'{"type":"reply","id":"r","status":200,"headers":[["a",1]]}', "string pairs"),
        (json.dumps({"type": "reply", "id": "r", "status": 200, "headers": TOO_MANY}).encode(), "list of at most"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, complaint: str) -> None:
    with pytest.raises(EnvelopeError, match=complaint):
        decode(data)


def test_the_body_travels_as_base64() -> None:
    fields = json.loads(encode(CallReply("r", Answer(200, b"\x00hi"))))
    assert base64.b64decode(fields["body"]) == b"\x00hi"
