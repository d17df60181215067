"""Assembles the control plane of one ``framegate serve``: store, service, router, start-up state.

Layer 3. ``open_control_plane`` opens the store ``--db`` names (a SQLite file,
or ``redis://`` for a cluster: ``proxy.store.open``), seeds the demo API on
an empty store started without ``--config``/``--backend``, applies ``--config``,
fronts ``--backend`` as API ``quickstart`` (stage ``prod``), which becomes the
catalog's default API unless ``--default-api`` names one (the one place that
choice is made), and publishes everything to the catalog so the data plane can
serve before the first admin request. The wall clock is read here, the one
place this layer needs it, and handed to the service.

A served request is three steps so that the SQLite commit (an fsync) can run
off the event loop: ``prepare`` runs the operation against memory while the
service's store and publisher only record what it writes and publishes;
``write`` commits the recorded changes in one transaction (on the admin
server's writer thread); ``publish`` then hands the recorded publications to
the catalog, so the data plane never sees a change the disk has not got. If
the write fails, ``abandon`` reloads memory from the store and drops them.
Outside ``prepare`` (start-up, ``--config``) both pass straight through.

Other processes may write the same store (workers on one SQLite file, nodes
on one Redis). ``changed_rows`` (blocking, on the writer thread) reads the
store's version and, when another process moved it, the rows; ``restore``
(on the loop) replaces memory with them and republishes the catalog. Our own
batches advance ``version`` as they commit, so they never cause a reload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Generic, TypeVar

from proxy.config import Config
from proxy.control.catalog import ApiEntry, MemoryCatalog
from proxy.control.declarative import apply_document, load_document
from proxy.control.handlers import Request, Router
from proxy.control.model import DEFAULT, HTTP_PROXY, DomainName
from proxy.control.service import ControlService, Publisher
from proxy.control.wire import Response
from proxy.limits import LOG_DIR_NAME
from proxy.store.base import Change, Row, Store, VersionedStore
from proxy.store.open import is_redis_url, open_store

T = TypeVar("T")
DEMO_RESOURCE = "demo_api.json"
QUICKSTART_API = "quickstart"
QUICKSTART_STAGE = "prod"
QUICKSTART_ROUTE_SELECTION = "$request.body.action"


def default_log_dir(db_path: str) -> str:
    """Where ARN destinations land unless ``--log-dir`` says otherwise: ``logs/`` next to the SQLite db.

    A ``redis://`` store has no directory: ``logs/`` in the working directory then.
    """
    if is_redis_url(db_path):
        return os.path.abspath(LOG_DIR_NAME)
    return os.path.join(os.path.dirname(os.path.abspath(db_path)), LOG_DIR_NAME)


def log_dir_of(config: Config) -> str:
    """``--log-dir``, else ``default_log_dir``: the one directory access logs may be written to."""
    return os.path.abspath(config.log_dir) if config.log_dir is not None else default_log_dir(config.db_path)


def utc_now() -> str:
    """ISO-8601 UTC with seconds precision, as AWS prints ``createdDate``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def demo_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(resources.files("proxy").joinpath(DEMO_RESOURCE).read_text())
    return document


def quickstart_document(backend: str) -> dict[str, Any]:
    """API ``quickstart``: ``$default`` proxies every message to ``backend``, deployed at ``prod``."""
    route = {
        "routeKey": DEFAULT,
        "integration": {"integrationType": HTTP_PROXY, "integrationUri": backend},
        "routeResponseSelectionExpression": DEFAULT,
        "routeResponses": [{"routeResponseKey": DEFAULT}],
    }
    api = {
        "name": QUICKSTART_API,
        "protocolType": "WEBSOCKET",
        "routeSelectionExpression": QUICKSTART_ROUTE_SELECTION,
        "routes": [route],
        "stages": [{"stageName": QUICKSTART_STAGE}],
    }
    return {"apis": [api]}


class RecordingStore:
    """The service's ``Store``: writes through, or only records them while ``recording``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.recording = False
        self.changes: list[Change] = []

    def load(self) -> list[Row]:
        return self.store.load()

    def apply(self, changes: Sequence[Change]) -> None:
        if self.recording:
            self.changes.extend(changes)
        else:
            self.store.apply(changes)

    def close(self) -> None:
        self.store.close()


class RecordingPublisher:
    """The service's ``Publisher``: publishes through, or only records it while ``recording``."""

    def __init__(self, target: Publisher) -> None:
        self.target = target
        self.recording = False
        self.calls: list[Callable[[], None]] = []

    def _call(self, call: Callable[[], None]) -> None:
        if self.recording:
            self.calls.append(call)
        else:
            call()

    def publish_api(self, entry: ApiEntry) -> None:
        self._call(lambda: self.target.publish_api(entry))

    def remove_api(self, api_id: str) -> None:
        self._call(lambda: self.target.remove_api(api_id))

    def publish_domain(self, domain: DomainName) -> None:
        self._call(lambda: self.target.publish_domain(domain))

    def remove_domain(self, domain_name: str) -> None:
        self._call(lambda: self.target.remove_domain(domain_name))


@dataclass
class Pending(Generic[T]):
    """A prepared operation: its result (a request's reply), and what must reach the disk, then the catalog."""

    result: T
    changes: list[Change] = field(default_factory=list)
    publications: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class ControlPlane:
    service: ControlService
    router: Router
    store: VersionedStore
    db_path: str
    recorder: RecordingStore
    publisher: RecordingPublisher
    catalog: MemoryCatalog
    version: int = 0
    """The store's version memory reflects (``VersionedStore.version``)."""
    reloads: int = 0
    """Times memory was replaced from the store after another process's change."""
    is_open: bool = True
    """False once ``close`` ran (``/readyz`` reports it)."""

    def handle(self, request: Request) -> Response:
        """Serve one apigatewayv2 request at once, commit included (tests, tools)."""
        pending = self.prepare(request)
        if pending.changes:
            try:
                self.write(pending)
            except Exception:
                self.abandon()
                raise
        self.publish(pending)
        return pending.result

    def prepare(self, request: Request) -> Pending[Response]:
        """Run one request's operation against memory, recording its writes and publications."""
        return self.record(lambda: self.router.handle(request))

    def record(self, operation: Callable[[], T]) -> Pending[T]:
        """Run ``operation`` (any use of ``service``) against memory, recording what it writes and publishes.

        If it raises, memory is reloaded from the store and nothing is kept:
        an operation applies whole or not at all (``--config`` re-applied on
        SIGHUP, say).
        """
        self.recorder.recording = self.publisher.recording = True
        try:
            result = operation()
        except BaseException:
            # Memory may hold half of the operation, and nothing of it is on disk.
            self.recorder.changes, self.publisher.calls = [], []
            self.service.reload()
            raise
        finally:
            self.recorder.recording = self.publisher.recording = False
        pending = Pending(result, self.recorder.changes, self.publisher.calls)
        self.recorder.changes, self.publisher.calls = [], []
        return pending

    def write(self, pending: Pending[Any]) -> None:
        """Commit ``pending``'s changes in one transaction (any thread; one at a time)."""
        after = self.store.apply_versioned(pending.changes)
        if after == self.version + self.store.own_batch_step:
            # Nobody else wrote since memory was loaded: memory is the store again.
            # Otherwise ``version`` stays behind and the next look reloads.
            self.version = after

    def changed_rows(self) -> tuple[int, list[Row]] | None:
        """The store's version and rows if another process changed it since memory was loaded, else None.

        Blocking: run it where ``write`` runs (the writer thread), one at a time with writes.
        """
        if self.store.version() == self.version:
            return None
        return self.store.snapshot()

    def restore(self, version: int, rows: list[Row]) -> None:
        """Memory becomes ``rows`` and the catalog follows (on the loop, serialised with requests)."""
        service, catalog = self.service, self.catalog
        service.restore(rows)
        for api_id in catalog.api_ids():
            if api_id not in service.apis:
                catalog.remove_api(api_id)
        names = {domain.domain_name.lower() for domain in service.domains.values()}
        for name in catalog.domain_names():
            if name not in names:
                catalog.remove_domain(name)
        service.publish_all()
        self.version = version
        self.reloads += 1

    def publish(self, pending: Pending[Any]) -> None:
        """Hand ``pending``'s publications to the catalog (the loop's thread, after ``write``)."""
        for publication in pending.publications:
            publication()

    def abandon(self) -> None:
        """After a failed ``write``: memory goes back to what the disk holds."""
        self.service.reload()

    def close(self) -> None:
        self.is_open = False
        self.store.close()


def _api_named(service: ControlService, name: str) -> str:
    return next(state.api.api_id for state in service.apis.values() if state.api.name == name)


def open_control_plane(config: Config, catalog: MemoryCatalog) -> ControlPlane:
    """Open ``config.db_path`` and bring the store and ``catalog`` to the start-up state.

    Raises:
        ControlError: ``--config`` declares something invalid (the message says what).
        OSError, yaml.YAMLError, json.JSONDecodeError: ``--config`` cannot be read.
    """
    store = open_store(config.db_path)
    recorder, publisher = RecordingStore(store), RecordingPublisher(catalog)
    try:
        service = ControlService(
            recorder,
            publisher,
            utc_now,
            config.max_stages_per_api,
            config.region,
            account_burst_limit=config.account_burst_limit,
            account_rate_limit=config.account_rate_limit,
            log_dir=log_dir_of(config),
            lambda_endpoint=config.lambda_endpoint,
        )
        bare = not (service.apis or service.domains or config.config_file or config.backend)
        # Only on a bare start: beside a declared or --backend API the demo would make
        # the default API ambiguous for clients that connect to ws://host/{stage}. Of several
        # nodes starting together on one bare Redis store, one seeds it (claim_seed).
        if bare and store.claim_seed():
            apply_document(service, demo_document())
        if config.config_file:
            apply_document(service, load_document(config.config_file))
        if config.backend:
            apply_document(service, quickstart_document(config.backend))
            if catalog.default_api is None:
                # --backend promises ws://host:port/prod even if the store holds other APIs.
                catalog.default_api = _api_named(service, QUICKSTART_API)
        service.publish_all()
        version = store.version()
    except BaseException:
        store.close()
        raise
    return ControlPlane(service, Router(service), store, config.db_path, recorder, publisher, catalog, version)
