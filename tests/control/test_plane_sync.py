"""Two control planes on one store: each sees the other's changes, never reloads for its own."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.declarative import run_export
from proxy.control.plane import ControlPlane, default_log_dir, open_control_plane
from tests.helpers.redis import RedisServer


def _write(plane: ControlPlane, operation: Callable[[], object]) -> None:
    """What the admin server does with a request: memory, then the store, then the catalog."""
    pending = plane.record(operation)
    plane.write(pending)
    plane.publish(pending)


def _follow(plane: ControlPlane) -> bool:
    changed = plane.changed_rows()
    if changed is None:
        return False
    plane.restore(*changed)
    return True


@pytest.fixture(params=["sqlite", "redis"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "shared.db")
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


def test_a_plane_follows_another_ones_changes_and_not_its_own(db: str) -> None:
    catalog_a, catalog_b = MemoryCatalog(), MemoryCatalog()
    a = open_control_plane(Config(db_path=db), catalog_a)
    b = open_control_plane(Config(db_path=db), catalog_b)
    try:
        assert not _follow(a) and not _follow(b)  # b found a's seeding and wrote nothing
        (api_id,) = a.service.apis
        _write(a, lambda: a.service.create_stage(api_id, {"stage_name": "blue"}))
        assert not _follow(a), "a reloaded for its own change"
        assert catalog_b.stage(api_id, "blue") is None
        assert _follow(b)
        assert catalog_b.stage(api_id, "blue") is not None
        assert not _follow(b)
        _write(b, lambda: b.service.delete_api(api_id))
        assert _follow(a)
        assert catalog_a.api_ids() == [] and a.service.apis == {}
        assert a.reloads >= 1 and b.reloads >= 1
    finally:
        a.close()
        b.close()


def test_a_redis_store_has_no_directory_for_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_log_dir("redis://127.0.0.1:6379/0") == str(tmp_path / "logs")
    assert default_log_dir(str(tmp_path / "x" / "f.db")) == str(tmp_path / "x" / "logs")


def test_export_reads_a_redis_store(redis_server: RedisServer, tmp_path: Path) -> None:
    open_control_plane(Config(db_path=redis_server.url), MemoryCatalog()).close()  # seeds the demo
    out = tmp_path / "export.json"
    assert run_export(redis_server.url, "json", str(out)) == 0
    assert [api["name"] for api in json.loads(out.read_text())["apis"]] == ["demo"]


def test_nodes_starting_together_on_a_bare_redis_store_seed_one_demo_api(redis_server: RedisServer) -> None:
    together = threading.Barrier(2)

    def start() -> ControlPlane:
        together.wait()
        return open_control_plane(Config(db_path=redis_server.url), MemoryCatalog())

    with ThreadPoolExecutor(2) as pool:
        planes = list(pool.map(lambda _: start(), range(2)))
    try:
        for plane in planes:  # the node that did not seed follows the other's batch, like any change
            _follow(plane)
        names = [[state.api.name for state in plane.service.apis.values()] for plane in planes]
        assert names == [["demo"], ["demo"]]
    finally:
        for plane in planes:
            plane.close()
