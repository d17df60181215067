"""The durable-state seam of the control plane: a ``Store`` Protocol.

Layer 3. The control service keeps its working state in memory and writes
every change through a ``Store`` as one atomic batch before it answers the
client, so an acknowledged change is on disk. Records are plain JSON-able
dicts (``control.records`` builds them); the store never sees model types.

Resources are addressed by ``(kind, parent, key)``: an API's routes are
``("route", api_id, route_id)``; top-level resources use ``parent=""``.
Children nested inside their parent's record (route responses, integration
responses, API mappings) are not separate rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

API = "api"
ROUTE = "route"
INTEGRATION = "integration"
STAGE = "stage"
DEPLOYMENT = "deployment"
DOMAIN = "domain"
AUTHORIZER = "authorizer"
TOP = ""
"""The parent of top-level resources (APIs, domain names)."""


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    parent: str
    key: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Put:
    """Insert or replace one resource (its position in listings is kept on replace)."""

    kind: str
    parent: str
    key: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one resource, or with ``key=None`` every resource under ``parent``."""

    kind: str | None
    parent: str
    key: str | None = None


Change = Put | Delete


class Store(Protocol):
    def load(self) -> list[Row]:
        """Every stored resource, in creation order."""
        ...

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply ``changes`` atomically and durably: all or nothing, on disk before returning."""
        ...

    def close(self) -> None: ...


class VersionedStore(Store, Protocol):
    """A ``Store`` other processes may write too: each process reloads when the version moves.

    ``version`` changes whenever another process commits a batch; whether this
    process's own batches move it is ``own_batch_step`` (Redis: every batch
    bumps a shared counter by 1; SQLite's ``PRAGMA data_version`` moves only
    for other connections' commits, 0).
    """

    own_batch_step: int

    def version(self) -> int:
        """The store's version now (cheap: one read)."""
        ...

    def snapshot(self) -> tuple[int, list[Row]]:
        """The version and every row; rows at least as new as the version."""
        ...

    def apply_versioned(self, changes: Sequence[Change]) -> int:
        """``apply``, returning the version after the batch."""
        ...

    def claim_seed(self) -> bool:
        """May this process seed a bare store (the demo API)? One of several starting together says yes."""
        ...
