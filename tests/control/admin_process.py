"""A process serving only the control plane, for durability tests that ``kill -9`` it.

Usage: ``python -m tests.control.admin_process DB_PATH``; prints
``framegate admin ready admin=http://HOST:PORT db=PATH`` once listening.
"""

from __future__ import annotations

import asyncio
import sys

from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.server.admin import start_control_plane


async def _main(db_path: str) -> None:
    config = Config(db_path=db_path, admin_port=0)
    _, server = await start_control_plane(config, MemoryCatalog())
    sys.stdout.write(f"framegate admin ready admin=http://{config.admin_host}:{server.port} db={db_path}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
