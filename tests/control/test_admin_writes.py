"""Control-plane writes commit off the event loop, and the data plane sees them only once on disk."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from proxy.errors import BadRequestException
from proxy.store.base import Change
from proxy.store.sqlite import SqliteStore
from tests.control.conftest import Admin, make_api, make_proxy_route

CEILING_S = 30.0


class GatedStore:
    """The plane's SQLite store, whose commits wait until the test opens the gate."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail = False
        self.threads: list[str] = []

    def apply(self, changes: Sequence[Change]) -> None:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(CEILING_S), "the test never opened the gate"
        if self.fail:
            raise OSError("disk full")
        self.store.apply(changes)

    def apply_versioned(self, changes: Sequence[Change]) -> int:
        self.apply(changes)
        return self.store.version()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def gated(admin: Admin) -> Iterator[GatedStore]:
    store = GatedStore(admin.plane.store)
    admin.plane.store = store  # type: ignore[assignment]
    yield store
    store.gate.set()  # a failed test must not leave the writer thread waiting


def _healthz(admin: Admin) -> int:
    url = urlsplit(admin.url)
    assert url.hostname is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=CEILING_S)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def _staged_api(client: Any, name: str) -> str:
    """An API deployed at stage ``prod``, so the catalog resolves it."""
    api_id = make_api(client, name)
    make_proxy_route(client, api_id, "ws://127.0.0.1:9101")
    client.create_stage(ApiId=api_id, StageName="prod", AutoDeploy=True)
    return api_id


def _catalog_name(admin: Admin, api_id: str) -> str | None:
    """The API's name as the data plane's catalog holds it, read on the admin loop's thread."""

    async def read() -> str | None:
        return admin.catalog.resolve(f"{api_id}.execute-api.local", "/prod").api.name

    return asyncio.run_coroutine_threadsafe(read(), admin.loop).result(CEILING_S)


def test_the_loop_keeps_serving_while_a_commit_waits_on_the_disk(admin: Admin, client: Any, gated: GatedStore) -> None:
    gated.gate.set()
    api_id = _staged_api(client, "before")
    gated.gate.clear()
    gated.entered.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        update: Future[Any] = pool.submit(client.update_api, ApiId=api_id, Name="after")
        assert gated.entered.wait(CEILING_S)
        # The commit is stuck in its fsync: the loop still answers, and nobody sees the change yet.
        assert _healthz(admin) == 200
        assert _catalog_name(admin, api_id) == "before"
        assert not update.done()
        gated.gate.set()
        assert update.result(CEILING_S)["Name"] == "after"
    assert _catalog_name(admin, api_id) == "after"  # published before the reply
    assert gated.threads and all(name.startswith("framegate-store") for name in gated.threads)


def test_a_failed_commit_is_a_500_and_leaves_memory_and_catalog_as_the_disk(
    admin: Admin, client: Any, gated: GatedStore
) -> None:
    gated.gate.set()
    api_id = _staged_api(client, "kept")
    gated.fail = True
    with pytest.raises(ClientError) as caught:
        client.update_api(ApiId=api_id, Name="lost")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    gated.fail = False
    assert client.get_api(ApiId=api_id)["Name"] == "kept"
    assert _catalog_name(admin, api_id) == "kept"


def test_writes_are_serialised_in_arrival_order(admin: Admin, client: Any, gated: GatedStore) -> None:
    gated.gate.set()
    api_id = _staged_api(client, "v0")
    names = [f"v{i}" for i in range(1, 21)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda name: client.update_api(ApiId=api_id, Name=name), names))
    stored = {row.key: row.record for row in admin.plane.store.load()}
    assert stored[api_id]["name"] == client.get_api(ApiId=api_id)["Name"] == _catalog_name(admin, api_id)


def test_exclusive_operations_commit_off_the_loop_whole_or_not_at_all(
    admin: Admin, client: Any, gated: GatedStore
) -> None:
    """What SIGHUP's re-applied --config goes through: serialised with requests, atomic."""
    gated.gate.set()
    api_id = _staged_api(client, "before")
    service = admin.plane.service

    def rename() -> str:
        return service.update_api(api_id, {"name": "renamed"}).name

    def half_then_fail() -> None:
        service.update_api(api_id, {"name": "half"})
        raise BadRequestException("the document is invalid further down")

    def run(operation: Callable[[], object]) -> object:
        return asyncio.run_coroutine_threadsafe(admin.server.exclusive(operation), admin.loop).result(CEILING_S)

    gated.threads.clear()
    assert run(rename) == "renamed"
    assert gated.threads and all(name.startswith("framegate-store") for name in gated.threads)
    assert _catalog_name(admin, api_id) == "renamed"
    with pytest.raises(BadRequestException, match="invalid further down"):
        run(half_then_fail)
    assert client.get_api(ApiId=api_id)["Name"] == "renamed" == _catalog_name(admin, api_id)
