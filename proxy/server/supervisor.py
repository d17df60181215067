"""``framegate serve --workers N``: N worker processes sharing the data port, and their supervisor.

Layer 4. The supervisor serves nothing itself; it starts, watches and stops
workers, each a ``framegate serve`` process (``python -m
proxy.server.supervisor``, its ``Config`` in the environment variable
``FRAMEGATE_WORKER_CONFIG``, written and read only here).

* **One data port.** Every worker binds ``--port`` with ``SO_REUSEPORT``
  (``Config.reuse_port``) and the kernel spreads new connections over them.
  The supervisor binds the port first with the same option and never listens
  on it: that resolves ``--port 0`` to one port for all, and keeps the port
  reserved while a worker restarts.
* **One admin API.** Worker 0 serves the control plane and ``/metrics`` on
  ``--admin-port``; the others bind theirs to a private loopback port the
  supervisor picks, which worker 0 scrapes to report ``/metrics`` summed over
  all workers (``proxy.server.metricsmerge``). The supervisor keeps no state (no store, no catalog), so a crash of
  the admin is an ordinary worker restart, on the same port.
* **Start-up.** Worker 0 starts first and opens the store (demo API,
  ``--config``, ``--backend`` applied once), then the others. When all are up
  the supervisor prints worker 0's ready line with ``workers=N pids=...``;
  every later (re)start prints ``framegate worker I ready pid=P``.
* **Crashes.** A worker that exits unasked is restarted after
  ``WORKER_RESTART_DELAY_S``, doubling up to ``WORKER_RESTART_MAX_DELAY_S``
  while it keeps dying within ``WORKER_MIN_UPTIME_S``. Connections of the
  dead worker are lost; the others' are untouched.
* **Signals.** SIGTERM and SIGINT are forwarded as SIGTERM: each worker
  drains (``--drain-timeout``) and exits; the supervisor exits 0 after the
  last. SIGHUP goes to worker 0 only: it re-applies ``--config`` to the
  store the workers share, and the others follow it like any change. Every
  worker applying the file itself would race on the store and create each
  newly declared API once per worker.

Control-plane changes made through worker 0 reach the others through the
store they share (``proxy.server.cluster.StoreWatcher``): SQLite's
``PRAGMA data_version`` polled, or the Redis store's notifications.

@connections calls reach a connection whichever worker they arrive at: with
``--redis`` through the connection registry, as between nodes; without, each
worker listens on a Unix socket in a private directory the supervisor makes
(and removes) and asks its siblings there (``proxy.server.siblings``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from proxy.config import Config
from proxy.limits import (
    WORKER_MIN_UPTIME_S,
    WORKER_RESTART_DELAY_S,
    WORKER_RESTART_MAX_DELAY_S,
    WORKER_START_TIMEOUT_S,
)
from proxy.server.loop import run_loop

logger = logging.getLogger(__name__)

CONFIG_VARIABLE = "FRAMEGATE_WORKER_CONFIG"
WORKER_READY = "framegate worker"


def usable_cores() -> int:
    """The CPUs this process may run on (``--workers auto``)."""
    return len(os.sched_getaffinity(0))


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen on) ``host:port`` with SO_REUSEPORT; workers then bind the same port."""
    reservation = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reservation.bind((host, port))
    except OSError:
        reservation.close()
        raise
    return reservation


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class _Worker:
    __slots__ = ("config", "delay", "index", "process", "started")

    def __init__(self, index: int, config: Config) -> None:
        self.index = index
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.delay = WORKER_RESTART_DELAY_S


class Supervisor:
    """Runs ``count`` workers of ``config`` until SIGTERM/SIGINT (see the module docstring)."""

    def __init__(self, config: Config, count: int) -> None:
        self.config = config
        self.count = count
        self.workers: list[_Worker] = []
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        try:
            reservation = reserve_port(self.config.host, self.config.port)
        except OSError as exc:
            print(f"framegate serve: cannot listen on {self.config.host}:{self.config.port}: {exc}", file=sys.stderr)
            return 1
        try:
            return await self._run(reservation.getsockname()[1])
        finally:
            reservation.close()

    async def _run(self, port: int) -> int:
        host = self.config.admin_host
        admin_ports = [self.config.admin_port or free_port(host)]
        # Each other worker gets a fixed private admin port, kept across restarts, so that worker 0
        # can sum their /metrics into its own.
        admin_ports += [free_port(host) for _ in range(1, self.count)]
        scrape_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        peers = tuple(f"http://{scrape_host}:{port}/metrics" for port in admin_ports[1:])
        sockets = self._route_sockets()
        for index in range(self.count):
            config = dataclasses.replace(
                self.config,
                port=port,
                reuse_port=True,
                admin_port=admin_ports[index],
                workers=self.count,
                worker_metrics=peers if index == 0 else (),
                route_socket=sockets[index] if sockets else None,
                sibling_sockets=tuple(path for other, path in enumerate(sockets) if other != index),
            )
            self.workers.append(_Worker(index, config))
        try:
            return await self._supervise()
        finally:
            if sockets:
                shutil.rmtree(Path(sockets[0]).parent, ignore_errors=True)

    def _route_sockets(self) -> list[str]:
        """Each worker's socket for @connections calls from its siblings; none with ``--redis`` (it routes)."""
        if self.config.redis is not None:
            return []
        directory = Path(tempfile.mkdtemp(prefix="framegate-"))  # mode 0700: this user's workers only
        return [str(directory / f"worker-{index}.sock") for index in range(self.count)]

    async def _supervise(self) -> int:
        try:
            ready = await self._start(self.workers[0])
            for worker in self.workers[1:]:
                await self._start(worker)
        except RuntimeError as exc:
            print(f"framegate serve: {exc}", file=sys.stderr)
            await self._stop_all()
            return 1
        pids = ",".join(str(worker.process.pid) for worker in self.workers if worker.process is not None)
        print(f"{ready} workers={self.count} pids={pids}", flush=True)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        watchers = [loop.create_task(self._watch(worker)) for worker in self.workers]
        await self.stopping.wait()
        logger.info("stopping %d workers", self.count)
        await self._stop_all()
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        return 0

    async def _start(self, worker: _Worker) -> str:
        """Start ``worker`` and return its ready line."""
        env = {**os.environ, CONFIG_VARIABLE: json.dumps(dataclasses.asdict(worker.config))}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.server.supervisor", stdout=asyncio.subprocess.PIPE, env=env
        )
        worker.process = process
        worker.started = time.monotonic()
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), WORKER_START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if not line:
            raise RuntimeError(f"worker {worker.index} (pid {process.pid}) did not start; see its log above")
        # Anything else it prints goes on to our stdout, so its pipe never fills.
        asyncio.get_running_loop().create_task(self._relay(process.stdout))
        logger.info("worker %d ready (pid %d)", worker.index, process.pid)
        return line.decode().rstrip("\n")

    @staticmethod
    async def _relay(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()

    async def _watch(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it exits unasked."""
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            if self.stopping.is_set():
                return
            lived = time.monotonic() - worker.started
            worker.delay = WORKER_RESTART_DELAY_S if lived >= WORKER_MIN_UPTIME_S else worker.delay
            logger.warning(
                "worker %d (pid %d) exited with %d; restarting in %.1f s",
                worker.index,
                worker.process.pid,
                status,
                worker.delay,
            )
            # A timer, not a synchronisation: a worker crashing at once is not restarted in a tight loop.
            await asyncio.sleep(worker.delay)
            worker.delay = min(worker.delay * 2, WORKER_RESTART_MAX_DELAY_S)
            if self.stopping.is_set():
                return
            try:
                await self._start(worker)
            except RuntimeError as exc:
                logger.error("%s", exc)
                continue
            print(f"{WORKER_READY} {worker.index} ready pid={worker.process.pid}", flush=True)

    def _forward(self, signum: int) -> None:
        for worker in self.workers:
            self._signal(worker, signum)

    def _reload(self) -> None:
        """SIGHUP: worker 0 re-applies ``--config``; the store carries the result to the others."""
        if not self._signal(self.workers[0], signal.SIGHUP):
            logger.error("SIGHUP: worker 0 is restarting, --config not re-applied; send SIGHUP again")

    @staticmethod
    def _signal(worker: _Worker, signum: int) -> bool:
        """Send ``signum`` to ``worker`` if it is running; True if it was."""
        if worker.process is None or worker.process.returncode is not None:
            return False
        try:
            worker.process.send_signal(signum)
        except ProcessLookupError:
            return False
        return True

    async def _stop_all(self) -> None:
        """SIGTERM every worker (each drains) and wait for all of them."""
        self._forward(signal.SIGTERM)
        for worker in self.workers:
            if worker.process is not None:
                await worker.process.wait()


def supervise(config: Config, count: int) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; the exit status for the CLI."""
    return run_loop(Supervisor(config, count).run())


def _worker_main() -> int:
    from proxy.logformat import configure_logging
    from proxy.server.app import serve

    fields = json.loads(os.environ[CONFIG_VARIABLE])
    for name in ("worker_metrics", "sibling_sockets"):  # JSON has lists only
        fields[name] = tuple(fields.get(name, ()))
    config = Config(**fields)
    configure_logging(config.log_level, config.log_format)
    return serve(config)


if __name__ == "__main__":
    raise SystemExit(_worker_main())
