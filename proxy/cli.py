"""The ``framegate`` console script: ``serve``, ``bench``, ``echo-backend``, ``export``.

Layer 5. Builds one ``Config`` from flags and ``FRAMEGATE_<FLAG>`` environment
variables (a flag wins over the environment), validates it, and hands it to
the server. Subcommand implementations are imported lazily so ``--help`` and
``bench`` stay fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

from proxy import __version__, limits
from proxy.config import Config

_SERVE_FLAGS: dict[str, tuple[str, type, str]] = {
    # Config field: (flag, type, help)
    "host": ("--host", str, "data-plane listen address (default %(default)s)"),
    "port": ("--port", int, "data-plane port, where clients connect to ws://HOST:PORT/{stage} (default %(default)s)"),
    "admin_host": ("--admin-host", str, "control-plane and /metrics listen address (default %(default)s)"),
    "admin_port": ("--admin-port", int, "control-plane (apigatewayv2 REST) and /metrics port (default %(default)s)"),
    "db_path": ("--db", str, "SQLite store path (default %(default)s)"),
    "backend": ("--backend", str, "front one backend: API 'quickstart', $default -> this ws:// URL, stage 'prod'"),
    "config_file": ("--config", str, "YAML or JSON file of APIs, routes, stages to apply at start"),
    "default_api": ("--default-api", str, "API id served when the Host names no API (default: the only API)"),
    "region": ("--region", str, "region shown in ARNs and apiEndpoint (default %(default)s)"),
    "max_frame": ("--max-frame", int, "largest frame payload in bytes; more closes with 1009 (default %(default)s)"),
    "max_message": ("--max-message", int, "largest message in bytes; more closes with 1009 (default %(default)s)"),
    "handshake_timeout": (
        "--handshake-timeout",
        float,
        "seconds a client has to finish its upgrade (default %(default)s)",
    ),
    "idle_timeout": (
        "--idle-timeout",
        float,
        "close after this many seconds without data frames (default %(default)s)",
    ),
    "max_connection_duration": (
        "--max-connection-duration",
        float,
        "close connections older than this, in seconds (default %(default)s)",
    ),
    "drain_timeout": (
        "--drain-timeout",
        float,
        "seconds to close connections on SIGTERM/SIGINT before exit (default %(default)s)",
    ),
    "max_stages_per_api": ("--max-stages-per-api", int, "stage quota per API (default %(default)s)"),
    "account_burst_limit": ("--account-burst-limit", int, "account-level token-bucket size (default %(default)s)"),
    "account_rate_limit": ("--account-rate-limit", float, "account-level requests per second (default %(default)s)"),
    "new_connections_per_s": (
        "--new-connections-per-s",
        float,
        "account-level new connections per second (default %(default)s)",
    ),
    "data_trace_max_bytes": (
        "--data-trace-max-bytes",
        int,
        "payload bytes shown in data-trace log lines (default %(default)s)",
    ),
    "throttled_frame": (
        "--throttled-frame",
        str,
        "text frame for a throttled message, with {connectionId} and {requestId} placeholders (default: AWS's)",
    ),
    "log_dir": ("--log-dir", str, "directory for access logs sent to arn:aws:logs ARNs (default: logs/ next to --db)"),
    "log_level": ("--log-level", str, "DEBUG, INFO, WARNING or ERROR (default %(default)s)"),
}


def _env_default(field_name: str, fallback: object, kind: type) -> object:
    raw = os.environ.get(f"FRAMEGATE_{field_name.upper()}")
    return fallback if raw is None else kind(raw)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the gateway (data plane + control plane + /metrics)",
        description="Run the WebSocket gateway. An empty store gets a demo API: ws://127.0.0.1:8080/dev echoes.",
    )
    defaults = Config()
    for f in fields(Config):
        if f.name not in _SERVE_FLAGS:
            continue
        flag, kind, text = _SERVE_FLAGS[f.name]
        parser.add_argument(
            flag, dest=f.name, type=kind, help=text, default=_env_default(f.name, getattr(defaults, f.name), kind)
        )
    parser.add_argument(
        "--workers",
        type=_workers,
        # A string default goes through ``type`` like a flag: a bad FRAMEGATE_WORKERS is a usage error.
        default=os.environ.get("FRAMEGATE_WORKERS", "1"),
        help="worker processes sharing --port (SO_REUSEPORT), or 'auto' for one per usable core (default 1)",
    )
    parser.set_defaults(run=_run_serve)


def _workers(text: str) -> int:
    """``--workers``: a positive count, or ``auto`` (the CPUs this process may use)."""
    if text == "auto":
        return len(os.sched_getaffinity(0))
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of workers or 'auto', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 or 'auto', got {count}")
    return count


def _run_serve(args: argparse.Namespace) -> int:
    values = {name: getattr(args, name) for name in _SERVE_FLAGS}
    config = Config(**values)
    try:
        config.validate()
    except ValueError as exc:
        print(f"framegate serve: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:
        from proxy.server.supervisor import supervise

        return supervise(config, args.workers)
    from proxy.server.app import serve

    return serve(config)


def _add_echo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("echo-backend", help="run a WebSocket echo server for demos and benchmarks")
    parser.add_argument("--host", default=limits.DEFAULT_HOST, help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=limits.ECHO_PORT, help="listen port (default %(default)s)")
    parser.set_defaults(run=_run_echo)


def _run_echo(args: argparse.Namespace) -> int:
    from proxy.server.echo import run_echo_backend

    return run_echo_backend(args.host, args.port)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("bench", help="load-test a WebSocket endpoint")
    from proxy.bench.options import add_arguments

    add_arguments(parser)
    parser.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from proxy.bench.main import run

    return run(args)


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("export", help="write the store's APIs, routes and stages as a --config file")
    parser.add_argument(
        "--db", dest="db_path", default=Config().db_path, help="SQLite store path (default %(default)s)"
    )
    parser.add_argument(
        "--format", choices=("json", "yaml"), default="json", help="output format (default %(default)s)"
    )
    parser.add_argument("-o", "--output", default="-", help="file to write, - for stdout (default %(default)s)")
    parser.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from proxy.control.declarative import run_export

    return run_export(args.db_path, args.format, args.output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framegate", description="A self-hosted WebSocket gateway modelled on AWS API Gateway."
    )
    parser.add_argument("--version", action="version", version=f"framegate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,bench,echo-backend,export}")
    _add_serve(sub)
    _add_bench(sub)
    _add_echo(sub)
    _add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
