"""Which ``Store`` a ``--db`` value names: a SQLite file path, or ``redis://HOST:PORT/DB``.

Layer 3. The one place the choice is made, so ``serve`` and ``export`` agree.
"""

from __future__ import annotations

from proxy.config import REDIS_SCHEMES
from proxy.store.base import VersionedStore


def is_redis_url(db: str) -> bool:
    """True when ``--db`` names a Redis server rather than a SQLite file."""
    return db.startswith(REDIS_SCHEMES)


def open_store(db: str) -> VersionedStore:
    """The store ``--db`` names (SQLite stays the default: any value that is not a Redis URL is a path)."""
    if is_redis_url(db):
        from proxy.store.redis import RedisStore

        return RedisStore(db)
    from proxy.store.sqlite import SqliteStore

    return SqliteStore(db)
