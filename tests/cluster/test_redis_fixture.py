"""The ``redis_server`` fixture: a real server that keeps acknowledged writes across a crash."""

from __future__ import annotations

import redis

from tests.helpers.redis import RedisServer


def test_an_acknowledged_write_survives_sigkill(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    client.set("k", "v")
    client.close()
    redis_server.kill()
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    assert client.get("k") == b"v"
    client.close()
