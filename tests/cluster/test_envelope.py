"""Node-to-node @connections messages: round trips, and refusal of anything malformed."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.cluster.envelope import METHODS, CallReply, CallRequest, EnvelopeError, decode, encode
from proxy.limits import MAX_ENVELOPE_BYTES, MAX_MESSAGE_BYTES

ids = st.text(min_size=1, max_size=40)


@given(ids, ids, st.sampled_from(sorted(METHODS)), ids, st.binary(max_size=512))
def test_a_call_survives_the_trip(request_id: str, node: str, method: str, connection: str, body: bytes) -> None:
    request = CallRequest(request_id, node, method, connection, body)
    assert decode(encode(request)) == request


@given(ids, st.integers(min_value=100, max_value=599), st.binary(max_size=512))
def test_a_reply_survives_the_trip(request_id: str, status: int, body: bytes) -> None:
    reply = CallReply(request_id, status, body)
    assert decode(encode(reply)) == reply


def test_a_message_at_the_cap_fits_in_an_envelope() -> None:
    request = CallRequest("r", "node", "POST", "c", b"\xff" * MAX_MESSAGE_BYTES)
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
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, complaint: str) -> None:
    with pytest.raises(EnvelopeError, match=complaint):
        decode(data)


def test_the_body_travels_as_base64() -> None:
    fields = json.loads(encode(CallReply("r", 200, b"\x00hi")))
    assert base64.b64decode(fields["body"]) == b"\x00hi"
