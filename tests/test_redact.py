"""``redact_url``: no credentials or query values survive; what locates the backend does."""

from __future__ import annotations

import pytest

from proxy.redact import MASK, redact_url


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("ws://user:secret@backend:9000/path?token=abc", "ws://***@backend:9000/path?token=***"),
        ("wss://token@backend/chat", "wss://***@backend/chat"),
        ("ws://backend:9000/a?token=abc&key=xyz&flag", "ws://backend:9000/a?token=***&key=***&flag=***"),
        ("ws://127.0.0.1:8001", "ws://127.0.0.1:8001"),
        ("ws://[::1]:8001/p", "ws://[::1]:8001/p"),
        ("ws://u:p@[::1]:8001/p?a=1#frag", "ws://***@[::1]:8001/p?a=***"),
        ("ws://Backend.Example/p", "ws://backend.example/p"),
    ],
)
def test_user_info_and_query_values_are_masked(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_a_url_that_does_not_parse_is_masked_whole() -> None:
    assert redact_url("ws://user:pw@host:notaport/x") == MASK


@pytest.mark.parametrize("secret", ["s3cr3t", "p%40ss", "tok=en"])
def test_no_secret_survives_in_any_position(secret: str) -> None:
    url = f"ws://name:{secret}@host:1/p?token={secret}&other={secret}"
    assert secret not in redact_url(url)
