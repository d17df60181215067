"""Fixtures for the server tests."""

from __future__ import annotations

import pytest

from tests.helpers.servers import CODECS


@pytest.fixture(params=CODECS)
def server_codec(request: pytest.FixtureRequest) -> str:
    """The codec a ``framegate`` subprocess runs: each test using it runs on both."""
    name: str = request.param
    return name
