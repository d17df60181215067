"""A Locust WebSocket user doing what ``framegate bench`` does in closed loop: send, receive, check the echo.

``locust -f benchmarks/load_tools/locust_echo.py --headless -u 10 -r 10 --run-time 5s --host ws://...``.
Locust has no WebSocket user of its own; this is the usual recipe (locust-plugins' ``SocketIOUser``
does the same): ``websocket-client`` on Locust's gevent, one request event per echo.
"""

from __future__ import annotations

import time

import websocket
from locust import User, constant, events, task

PAYLOAD = '{"p":"' + "a" * 56 + '"}'
"""64 bytes, as framegate bench's default message."""


class EchoUser(User):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.ws = websocket.create_connection(self.host)

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def echo(self) -> None:
        started = time.perf_counter()
        self.ws.send(PAYLOAD)
        reply = self.ws.recv()
        events.request.fire(
            request_type="WS",
            name="echo",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(reply),
            exception=None if reply == PAYLOAD else ValueError("not the echo"),
            context={},
        )
