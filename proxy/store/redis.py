"""The Redis ``Store``: the control plane's system of record shared by every node.

Layer 3. Selected by ``--db redis://HOST:PORT/DB`` (``proxy.store.open``); the
SQLite store stays the default for one node. Semantics are SQLite's
(``proxy/store/sqlite.py``): ``apply`` is all or nothing and durable before it
returns, ``load`` lists rows in creation order, and a replace keeps a row's
place. Design and persistence: docs/cluster.md#store.

Layout, under one key prefix (default ``framegate:store:``):

* ``rows``: hash, field ``json([kind, parent, key])`` -> the record's JSON;
* ``order``: sorted set of the same fields scored by creation sequence
  (``seq``, a counter), so ``load`` is one ``ZRANGE``; a replace keeps the score;
* ``parent:<parent>``: set of the fields under one parent, for ``Delete``
  of everything under it;
* ``version``: a counter bumped by every batch and published on the
  ``changes`` channel, so other nodes reload within one round trip
  (``proxy.cluster.changes.ChangeListener``).

Atomicity: a batch is one Lua script (``APPLY_SCRIPT``, run with EVALSHA).
Redis runs a script alone, so no reader sees half a batch; a script that
fails midway would keep its earlier writes, so everything that can fail
(JSON encoding) is done here before the call, and the script only does
writes that cannot fail on valid input. Durability: with ``appendonly yes``
and ``appendfsync always`` Redis fsyncs the AOF before it answers, so an
acknowledged batch survives a crash; ``RedisStore`` checks both at start and
logs a loud warning when they are off (``durability_warnings``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from proxy.limits import (
    MS_PER_S,
    REDIS_RECONNECT_MAX_S,
    REDIS_RECONNECT_MIN_S,
    REDIS_SEED_CLAIM_S,
    REDIS_STORE_RETRIES,
)
from proxy.redact import redact_url
from proxy.store.base import Change, Delete, Put, Row

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "framegate:store:"

APPLY_SCRIPT: Final = """
-- KEYS: rows, order, seq, version. ARGV: channel, parent-set prefix, then 4 per change:
--   put: "put", field, parent, record
--   del: "del", json([kind or null, key or null]), parent, ""
local rows, order, seq, version = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local channel, parent_prefix = ARGV[1], ARGV[2]
for i = 3, #ARGV, 4 do
  local parent_set = parent_prefix .. ARGV[i + 2]
  if ARGV[i] == 'put' then
    local field = ARGV[i + 1]
    redis.call('HSET', rows, field, ARGV[i + 3])
    if not redis.call('ZSCORE', order, field) then
      redis.call('ZADD', order, redis.call('INCR', seq), field)
      redis.call('SADD', parent_set, field)
    end
  else
    local filter = cjson.decode(ARGV[i + 1])
    for _, field in ipairs(redis.call('SMEMBERS', parent_set)) do
      local id = cjson.decode(field)
      if (filter[1] == cjson.null or filter[1] == id[1]) and (filter[2] == cjson.null or filter[2] == id[3]) then
        redis.call('HDEL', rows, field)
        redis.call('ZREM', order, field)
        redis.call('SREM', parent_set, field)
      end
    end
  end
end
local v = redis.call('INCR', version)
redis.call('PUBLISH', channel, v)
return v
"""


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The Redis key names of one store (one prefix per framegate cluster)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def rows(self) -> str:
        return self.prefix + "rows"

    @property
    def order(self) -> str:
        return self.prefix + "order"

    @property
    def seq(self) -> str:
        return self.prefix + "seq"

    @property
    def version(self) -> str:
        return self.prefix + "version"

    @property
    def parents(self) -> str:
        """Prefix of the per-parent sets."""
        return self.prefix + "parent:"

    @property
    def changes(self) -> str:
        """The pub/sub channel each batch's new version is published on."""
        return self.prefix + "changes"


def field_of(kind: str, parent: str, key: str) -> str:
    """The hash field naming one resource: canonical JSON, so one resource has one field."""
    return json.dumps([kind, parent, key])


def encode_changes(changes: Sequence[Change]) -> list[str]:
    """The script's ARGV tail for ``changes``; raises (TypeError, ValueError) before anything is sent."""
    argv: list[str] = []
    for change in changes:
        if isinstance(change, Put):
            record = json.dumps(change.record, sort_keys=True)
            argv += ["put", field_of(change.kind, change.parent, change.key), change.parent, record]
        elif isinstance(change, Delete):
            argv += ["del", json.dumps([change.kind, change.key]), change.parent, ""]
        else:
            raise TypeError(f"not a store change: {change!r}")
    return argv


def durability_warnings(config: dict[str, str]) -> list[str]:
    """What ``CONFIG GET appendonly appendfsync`` says is unsafe for acknowledged writes (empty if safe)."""
    warnings = []
    if config.get("appendonly") != "yes":
        warnings.append("appendonly is off: acknowledged control-plane changes are lost if Redis restarts")
    elif config.get("appendfsync") != "always":
        warnings.append(
            f"appendfsync is {config.get('appendfsync')!r}, not 'always': a crash loses the last acknowledged changes"
        )
    return warnings


class RedisStore:
    """A ``Store`` on Redis (see the module docstring); ``url`` is ``redis://HOST:PORT/DB``."""

    own_batch_step = 1
    """Every batch, ours included, bumps ``version`` by one (``VersionedStore``)."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.keys = StoreKeys(prefix)
        retry = Retry(ExponentialBackoff(cap=REDIS_RECONNECT_MAX_S, base=REDIS_RECONNECT_MIN_S), REDIS_STORE_RETRIES)
        self._client: redis.Redis = redis.Redis.from_url(url, retry=retry)
        self._apply = self._client.register_script(APPLY_SCRIPT)
        self.check_durability()

    def check_durability(self) -> list[str]:
        """Log (at WARNING, loudly) and return what makes acknowledged writes unsafe on this server."""
        try:
            config = cast(dict[str, str], self._client.config_get("append*"))
        except redis.ResponseError as exc:  # CONFIG is often disabled on managed Redis
            warnings = [f"cannot read the persistence settings ({exc}); make sure AOF is on with appendfsync always"]
        else:
            warnings = durability_warnings(config)
        for warning in warnings:
            log.warning("REDIS STORE NOT DURABLE at %s: %s", redact_url(self.url), warning)
        return warnings

    def load(self) -> list[Row]:
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, list[Row]]:
        """The version and every row, read in one transaction (no batch half-seen)."""
        keys = self.keys
        with self._client.pipeline(transaction=True) as pipe:
            pipe.zrange(keys.order, 0, -1)
            pipe.hgetall(keys.rows)
            pipe.get(keys.version)
            fields, records, version = pipe.execute()
        rows: list[Row] = []
        for field in fields:
            kind, parent, key = json.loads(field)
            record: dict[str, Any] = json.loads(records[field])
            rows.append(Row(kind, parent, key, record))
        return int(version or 0), rows

    def claim_seed(self) -> bool:
        """One node of several starting together on a bare store seeds it: SET NX with an expiry.

        The others start empty and load the seed when its batch is announced, like any change.
        """
        claimed = self._client.set(self.keys.prefix + "seeding", b"1", nx=True, px=int(REDIS_SEED_CLAIM_S * MS_PER_S))
        return bool(claimed)

    def version(self) -> int:
        """The version of the last batch applied by any node (0 before the first)."""
        return int(cast(bytes | None, self._client.get(self.keys.version)) or 0)

    def apply(self, changes: Sequence[Change]) -> None:
        self.apply_versioned(changes)

    def apply_versioned(self, changes: Sequence[Change]) -> int:
        """``apply``, returning the version the batch made (what other nodes are told)."""
        argv = [self.keys.changes, self.keys.parents, *encode_changes(changes)]
        keys = self.keys
        return int(cast(int, self._apply(keys=[keys.rows, keys.order, keys.seq, keys.version], args=argv)))

    def close(self) -> None:
        self._client.close()
