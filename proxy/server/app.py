"""``framegate serve``: the control plane, the data plane and /metrics in one process.

Layer 4. Start-up order: raise the open-file limit and derive the connection
cap from it (``proxy.server.fdlimit``), open the store and bring the catalog
to its start-up state (demo API, ``--config``, ``--backend``), bind the admin
listener, bind the data listener, then print one ready line. SIGTERM/SIGINT
stop accepting, close open connections with 1001 (at most ``--drain-timeout``)
and exit 0. SIGHUP re-applies ``--config`` through the control plane, open
connections untouched; a file that cannot be read, parsed or applied leaves
the running config as it was (``reload_config``). Accept errors are counted
and logged by the loop's exception handler (``proxy.server.refusal``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import logging
import signal
import sys
import time

import redis

from proxy import build, codec, handshake, limits, throttle
from proxy.config import USAGE_ERROR, Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.declarative import DocumentError, apply_document, check_document, load_document
from proxy.errors import ControlError
from proxy.redact import redact_url
from proxy.server.admin import AdminServer, start_control_plane
from proxy.server.cluster import StoreWatcher, attach, connection_routing, shared_throttling
from proxy.server.fdlimit import derived_max_connections, raise_fd_limit
from proxy.server.gateway import Gateway
from proxy.server.loop import bound_url, run_loop
from proxy.server.observer import Observer
from proxy.server.refusal import install_accept_errors
from proxy.server.tls import TLSSetupError, listener_contexts
from proxy.store.open import is_redis_url

logger = logging.getLogger(__name__)

READY_PREFIX = "framegate ready"


async def reload_config(config: Config, admin: AdminServer) -> bool:
    """SIGHUP: re-read ``--config`` and apply it, or leave everything as it is; True if applied.

    The document is read, its keys checked and then applied to a scratch copy
    of the live state first: only a document that applies cleanly there is
    applied for real, so a bad edit never leaves a half-applied config. Both
    run through ``AdminServer.exclusive``: serialised with admin requests and
    committed on the store's writer thread, like any other change.
    """
    path = config.config_file
    if path is None:
        logger.warning("SIGHUP: no --config file to re-apply")
        return False
    service = admin.plane.service
    try:
        document = load_document(path)

        def apply() -> None:
            check_document(service, document, path)
            apply_document(service, document)

        await admin.exclusive(apply)
    except (DocumentError, ControlError, OSError) as exc:
        logger.error("SIGHUP: %s not applied, the running config is unchanged: %s", path, exc)
        return False
    logger.info("SIGHUP: re-applied %s", path)
    return True


def _with_connection_cap(config: Config) -> Config:
    """``config`` with ``max_connections`` set: as given, or derived from the (raised) open-file limit."""
    fd_limit = raise_fd_limit()
    if config.max_connections is not None:
        logger.info("serving at most %d client connections (--max-connections)", config.max_connections)
        return config
    cap = derived_max_connections(fd_limit)
    logger.info("serving at most %d client connections (derived from the open-file limit %d)", cap, fd_limit)
    return dataclasses.replace(config, max_connections=cap)


async def _serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    catalog = MemoryCatalog(config.default_api)
    listening = asyncio.Event()  # /readyz: set once the data listener is bound, cleared at shutdown
    try:
        contexts = listener_contexts(config, catalog.domain)
    except TLSSetupError as exc:
        print(f"framegate serve: {exc}", file=sys.stderr)
        return USAGE_ERROR
    config = _with_connection_cap(config)
    try:
        plane, admin = await start_control_plane(config, catalog, listening.is_set, ssl_context=contexts.admin)
    except (DocumentError, ControlError) as exc:  # what --config or --backend declare: a usage error
        print(f"framegate serve: the start-up config was refused: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except (OSError, ValueError, redis.RedisError) as exc:
        print(f"framegate serve: cannot start the control plane: {exc}", file=sys.stderr)
        return 1
    observer = Observer(config)
    install_accept_errors(loop, observer.metrics.accept_errors)
    credentials = admin.guard.credentials  # --credentials, read once by start_control_plane
    shared = shared_throttling(config)
    # Without --redis, the workers of --workers N split every limit between them.
    backend = shared.backend if shared is not None else throttle.LocalBackend(config.workers)
    throttler = throttle.Throttler.from_config(config, time.monotonic, backend)
    # Other processes' connections (nodes and workers on --redis, sibling workers without it).
    routing = connection_routing(config)
    gateway = Gateway(config, catalog, observer, throttler, credentials=credentials, registry=routing)
    if routing is not None:
        attach(routing, gateway)
        await routing.start()
    try:
        server = await loop.create_server(
            gateway.protocol,
            config.host,
            config.port,
            reuse_address=True,
            ssl=contexts.data,
            # A TLS handshake is part of the upgrade: the same deadline bounds it.
            ssl_handshake_timeout=config.handshake_timeout if contexts.data else None,
            ssl_shutdown_timeout=limits.TLS_SHUTDOWN_TIMEOUT_S if contexts.data else None,
            reuse_port=config.reuse_port,
        )
    except OSError as exc:
        print(f"framegate serve: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        if routing is not None:
            await routing.close()
        await admin.close()
        plane.close()
        return 1
    listening.set()
    # Other processes' control-plane changes (workers on one SQLite file, nodes on one Redis).
    # A lone process on SQLite is the store's only writer: nothing to watch, nothing polled.
    watcher = StoreWatcher(admin, config.db_path) if config.workers > 1 or is_redis_url(config.db_path) else None
    if watcher is not None:
        watcher.start()
    if shared is not None:
        shared.leases.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reload_config(config, admin))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    # What start-up built (modules, store, catalog) lives as long as the process: moving it
    # out of the collector's sight keeps full collections, and their pauses, small.
    gc.freeze()
    assert admin.server is not None
    admin_url = bound_url(admin.server, "https" if contexts.admin else "http")
    data_url = bound_url(server, "wss" if contexts.data else "ws")
    plane.service.data_endpoint = data_url
    # A redis:// store URL may carry its password: the ready line is read by people and log shippers.
    shown_db = redact_url(plane.db_path) if is_redis_url(plane.db_path) else plane.db_path
    print(
        f"{READY_PREFIX} data={data_url} admin={admin_url} codec={codec.IMPLEMENTATION} db={shown_db}",
        flush=True,
    )
    for part, reason in (
        ("codec", codec.FALLBACK_REASON),
        ("throttle", throttle.FALLBACK_REASON),
        ("upgrade parser", handshake.FALLBACK_REASON),
        ("connection classes", build.source_fallback_reason(map(importlib.import_module, build.COMPILED_SOURCES))),
    ):
        if reason is not None:
            logger.warning(
                "the Cython %s is not built (%s): running its pure-Python twin, several times slower; "
                "reinstall with a C compiler available (pip install .) or run `make build`",
                part,
                reason,
            )
    await stop.wait()
    loop.remove_signal_handler(signal.SIGHUP)
    logger.info("shutting down: draining %d connections", len(gateway.connections))
    listening.clear()
    server.close()
    await gateway.drain(config.drain_timeout)
    await gateway.runner.close()
    if watcher is not None:
        await watcher.stop()
    if shared is not None:
        await shared.leases.stop()
        await shared.leases.client.aclose()
    if routing is not None:
        await routing.close()  # a registry leaves: its connections (all closed by now) drop out at once
    await admin.close()
    observer.close()
    plane.close()
    return 0


def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT; the exit status for the CLI."""
    return run_loop(_serve(config))
