"""The SQLite store: durable, atomic, ordered, versioned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from proxy.store.base import API, ROUTE, TOP, Delete, Put, Row
from proxy.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, SqliteStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def test_changes_survive_reopening_in_creation_order(path: Path) -> None:
    store = SqliteStore(path)
    store.apply([Put(API, TOP, "b", {"name": "second"}), Put(API, TOP, "a", {"name": "first"})])
    store.apply([Put(API, TOP, "b", {"name": "second, renamed"})])
    store.close()
    reopened = SqliteStore(path)
    assert reopened.load() == [Row(API, TOP, "b", {"name": "second, renamed"}), Row(API, TOP, "a", {"name": "first"})]
    reopened.close()


def test_a_batch_is_all_or_nothing(path: Path) -> None:
    store = SqliteStore(path)
    store.apply([Put(API, TOP, "a", {"n": 1})])
    unserialisable = {"n": object()}
    with pytest.raises(TypeError):
        store.apply([Put(API, TOP, "b", {"n": 2}), Put(API, TOP, "c", unserialisable)])
    assert [row.key for row in store.load()] == ["a"]
    store.close()


def test_delete_one_or_everything_under_a_parent(path: Path) -> None:
    store = SqliteStore(path)
    store.apply(
        [Put(API, TOP, "a", {}), Put(ROUTE, "a", "r1", {}), Put(ROUTE, "a", "r2", {}), Put(ROUTE, "b", "r3", {})]
    )
    store.apply([Delete(ROUTE, "a", "r1")])
    assert [row.key for row in store.load()] == ["a", "r2", "r3"]
    store.apply([Delete(None, "a"), Delete(API, TOP, "a")])
    assert [row.key for row in store.load()] == ["r3"]
    store.close()


def test_wal_and_full_sync_are_on(path: Path) -> None:
    store = SqliteStore(path)
    store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    store = SqliteStore(path)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_migrations_upgrade_an_old_file_and_refuse_a_newer_one(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO resources VALUES ('api', '', 'a', '{\"name\": \"old\"}')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert store.schema_version == SCHEMA_VERSION
    assert store.load() == [Row(API, TOP, "a", {"name": "old"})]
    store.close()

    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaTooNew):
        SqliteStore(path)
