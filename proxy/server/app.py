"""``framegate serve``: the control plane, the data plane and /metrics in one process.

Layer 4. Start-up order: open the store and bring the catalog to its start-up
state (demo API, ``--config``, ``--backend``), bind the admin listener, bind
the data listener, then print one ready line. SIGTERM/SIGINT stop accepting,
close open connections with 1001 (at most ``--drain-timeout``) and exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
import sys

from proxy import build, codec, handshake, throttle
from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.errors import ControlError
from proxy.server.admin import start_control_plane
from proxy.server.gateway import Gateway
from proxy.server.loop import bound_url, run_loop
from proxy.server.observer import Observer

logger = logging.getLogger(__name__)

READY_PREFIX = "framegate ready"


async def _serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    catalog = MemoryCatalog(config.default_api)
    try:
        plane, admin = await start_control_plane(config, catalog)
    except (OSError, ControlError, ValueError) as exc:
        print(f"framegate serve: cannot start the control plane: {exc}", file=sys.stderr)
        return 1
    observer = Observer(config)
    gateway = Gateway(config, catalog, observer)
    try:
        server = await loop.create_server(
            gateway.protocol, config.host, config.port, reuse_address=True, reuse_port=config.reuse_port
        )
    except OSError as exc:
        print(f"framegate serve: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        await admin.close()
        plane.close()
        return 1
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # What start-up built (modules, store, catalog) lives as long as the process: moving it
    # out of the collector's sight keeps full collections, and their pauses, small.
    gc.freeze()
    admin_url = bound_url(admin.server, "http")
    print(
        f"{READY_PREFIX} data={bound_url(server)} admin={admin_url} codec={codec.IMPLEMENTATION} db={plane.db_path}",
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
    logger.info("shutting down: draining %d connections", len(gateway.connections))
    server.close()
    await gateway.drain(config.drain_timeout)
    await admin.close()
    observer.close()
    plane.close()
    return 0


def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT; the exit status for the CLI."""
    return run_loop(_serve(config))
