"""The service's write-through contract with its store, without HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from proxy.control.catalog import ApiEntry, MemoryCatalog
from proxy.control.service import ControlService
from proxy.store.base import Change
from proxy.store.sqlite import SqliteStore

NOW = "2018-11-15T06:49:09Z"
WEBSOCKET_API = {"name": "chat", "protocol_type": "WEBSOCKET", "route_selection_expression": "$request.body.action"}


class FailingStore(SqliteStore):
    """A store whose disk "fails" on demand, to check memory follows the disk, not the request."""

    fail = False

    def apply(self, changes: Sequence[Change]) -> None:
        if self.fail:
            raise OSError("disk full")
        super().apply(changes)


class RecordingCatalog(MemoryCatalog):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[ApiEntry] = []

    def publish_api(self, entry: ApiEntry) -> None:
        self.published.append(entry)
        super().publish_api(entry)


def test_a_failed_write_changes_neither_memory_nor_the_live_plane(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "s.db")
    catalog = RecordingCatalog()
    service = ControlService(store, catalog, clock=lambda: NOW)
    api_id = service.create_api(WEBSOCKET_API).api_id
    service.create_stage(api_id, {"stage_name": "prod", "stage_variables": {"v": "1"}})
    published = len(catalog.published)

    store.fail = True
    with pytest.raises(OSError):
        service.update_stage(api_id, "prod", {"stage_variables": {"v": "2"}})
    with pytest.raises(OSError):
        service.create_stage(api_id, {"stage_name": "test"})
    assert service.stage(api_id, "prod").stage_variables == {"v": "1"}
    assert list(service.state(api_id).stages) == ["prod"]
    assert len(catalog.published) == published
    store.close()


def test_ids_are_fresh_even_when_the_generator_repeats(tmp_path: Path) -> None:
    ids = iter(["aaaaaaa", "aaaaaaa", "bbbbbbb"])
    store = SqliteStore(tmp_path / "s.db")
    service = ControlService(store, MemoryCatalog(), clock=lambda: NOW, new_resource_id=lambda: next(ids))
    api_id = service.create_api(WEBSOCKET_API).api_id
    first = service.create_integration(api_id, {"integration_type": "MOCK"})
    second = service.create_integration(api_id, {"integration_type": "MOCK"})
    assert (first.integration_id, second.integration_id) == ("aaaaaaa", "bbbbbbb")
    store.close()
