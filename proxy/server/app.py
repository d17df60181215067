"""``framegate serve``: the process that runs the data plane and the control plane.

Layer 4. Opens the control plane (store, catalog, admin listener), binds the
data listener, prints exactly one ready line, then runs until SIGTERM/SIGINT
and drains: stop accepting, close clients with 1001, wait ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from proxy import codec
from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.server.admin import start_control_plane
from proxy.server.gateway import Gateway
from proxy.server.loop import run

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1


def ready_line(data_host: str, data_port: int, admin_host: str, admin_port: int, db_path: str) -> str:
    """The one line tests and scripts wait for."""
    return (
        f"framegate ready data=ws://{data_host}:{data_port} admin=http://{admin_host}:{admin_port} "
        f"codec={codec.IMPLEMENTATION} db={db_path}"
    )


def serve(config: Config) -> int:
    """Run the gateway until a signal; return the process exit code."""
    try:
        return run(_serve(config))
    except OSError as exc:
        print(f"framegate serve: cannot listen: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    catalog = MemoryCatalog(default_api=config.default_api)
    plane, admin = await start_control_plane(config, catalog)
    gateway = Gateway(config, catalog)
    try:
        server = await loop.create_server(gateway.protocol, config.host, config.port, reuse_address=True)
    except OSError:
        await admin.close()
        plane.close()
        raise
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(ready_line(config.host, port, config.admin_host, admin.port, config.db_path) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("draining %d connections", len(gateway.connections))
    server.close()
    gateway.shutdown()
    try:
        await asyncio.wait_for(gateway.idle.wait(), config.drain_timeout)
    except TimeoutError:
        logger.warning("drain timeout: %d connections dropped", len(gateway.connections))
    await admin.close()
    plane.close()
    return EXIT_OK
