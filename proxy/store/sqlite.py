"""The SQLite ``Store``: one file, WAL, one transaction per change, versioned schema.

Layer 3 (the only module allowed ``sqlite3``). ``synchronous=FULL`` makes a
committed transaction survive power loss or ``kill -9`` once ``apply``
returns, which is what "acknowledged" means to the control plane. The schema
version lives in ``PRAGMA user_version``; ``MIGRATIONS[i]`` upgrades from
version ``i`` to ``i + 1`` inside one transaction, so a crash mid-migration
leaves the old schema intact.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from proxy.store.base import Change, Delete, Put, Row

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: one table of JSON records; rowid gives creation order (an upsert keeps it).
    """
    CREATE TABLE resources (
        kind TEXT NOT NULL,
        parent TEXT NOT NULL,
        key TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (kind, parent, key)
    );
    """,
    # 1 -> 2: cascading deletes of an API's children look up by parent.
    "CREATE INDEX resources_parent ON resources (parent);",
)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The file was written by a newer framegate; refusing beats corrupting it."""


class SqliteStore:
    own_batch_step = 0
    """Our own commits leave ``PRAGMA data_version`` as it is (``VersionedStore``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per apply().
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    @property
    def schema_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(f"{self.path} has schema {current}; this framegate knows up to {SCHEMA_VERSION}")
        for version in range(current, SCHEMA_VERSION):
            with self._transaction():
                self._db.execute(MIGRATIONS[version])
                # PRAGMA takes no parameters; version is our own int.
                self._db.execute(f"PRAGMA user_version = {version + 1}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def load(self) -> list[Row]:
        cursor = self._db.execute("SELECT kind, parent, key, record FROM resources ORDER BY rowid")
        return [Row(kind, parent, key, json.loads(record)) for kind, parent, key, record in cursor]

    def claim_seed(self) -> bool:
        """Always: one process opens the file first (``--workers`` starts worker 0 alone)."""
        return True

    def version(self) -> int:
        """``PRAGMA data_version``: moves when another connection (another worker) commits; one cheap read."""
        version: int = self._db.execute("PRAGMA data_version").fetchone()[0]
        return version

    def snapshot(self) -> tuple[int, list[Row]]:
        """The version, then the rows: a commit in between shows as a version moved at the next look."""
        version = self.version()
        return version, self.load()

    def apply_versioned(self, changes: Sequence[Change]) -> int:
        self.apply(changes)
        return self.version()

    def apply(self, changes: Sequence[Change]) -> None:
        with self._transaction():
            for change in changes:
                self._apply_one(change)

    def _apply_one(self, change: Change) -> None:
        if isinstance(change, Put):
            self._db.execute(
                "INSERT INTO resources (kind, parent, key, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, parent, key) DO UPDATE SET record = excluded.record",
                (change.kind, change.parent, change.key, json.dumps(change.record, sort_keys=True)),
            )
        elif isinstance(change, Delete):
            self._delete(change)

    def _delete(self, change: Delete) -> None:
        clauses = ["parent = ?"]
        params = [change.parent]
        for column, value in (("kind", change.kind), ("key", change.key)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        self._db.execute(f"DELETE FROM resources WHERE {' AND '.join(clauses)}", params)

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raised."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
