"""The ``framegate`` console script: ``serve``, ``bench``, ``echo-backend``, ``export``.

Layer 5. Builds one ``Config`` from flags and ``FRAMEGATE_<FLAG>`` environment
variables (a flag wins over the environment), validates it, and hands it to
the server. Subcommand implementations are imported lazily so ``--help`` and
``bench`` stay fast.

Bad input is a usage error, never a traceback: a flag value that does not
parse (argparse's message), a ``FRAMEGATE_*`` variable that does not, a
setting ``Config.validate`` refuses (named by its flag) or a ``--config`` file
that cannot be read, parsed or has an unknown key (file, line and key) all
exit 2 with one line on stderr starting ``framegate serve: ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from proxy import __version__, limits
from proxy.config import LOG_FORMATS, LOG_LEVELS, USAGE_ERROR, Config, InvalidSetting
from proxy.logformat import configure_logging

_SERVE = "framegate serve"
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off", "")


def _one_of(choices: Sequence[str], normalise: Callable[[str], str] = str) -> Callable[[str], str]:
    """A flag's parser accepting ``choices`` (after ``normalise``), naming them when it refuses."""

    def parse(text: str) -> str:
        value = normalise(text)
        if value not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


_SERVE_FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    # Config field: (flag, parse, help)
    "host": ("--host", str, "data-plane listen address (default %(default)s)"),
    "port": ("--port", int, "data-plane port, where clients connect to ws://HOST:PORT/{stage} (default %(default)s)"),
    "admin_host": ("--admin-host", str, "control-plane and /metrics listen address (default %(default)s)"),
    "admin_port": ("--admin-port", int, "control-plane (apigatewayv2 REST) and /metrics port (default %(default)s)"),
    "db_path": (
        "--db",
        str,
        "store: a SQLite file path, or redis://HOST:PORT/DB shared by the nodes of a cluster (default %(default)s)",
    ),
    "redis": (
        "--redis",
        str,
        "redis://HOST:PORT/DB for state shared by every node and worker: throttle buckets and the "
        "connection registry that routes @connections calls (default: none)",
    ),
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
    "log_dir": (
        "--log-dir",
        str,
        "directory for access logs sent to arn:aws:logs ARNs (default: logs/ next to a SQLite --db, "
        "./logs with a redis:// one)",
    ),
    "log_level": (
        "--log-level",
        _one_of(LOG_LEVELS, str.upper),
        "DEBUG, INFO, WARNING or ERROR, any case (default %(default)s)",
    ),
    "log_format": ("--log-format", _one_of(LOG_FORMATS), "process log lines: text or json (default %(default)s)"),
    "max_connections": (
        "--max-connections",
        int,
        "client connections served at once; more are answered 503 (default: from the open-file limit)",
    ),
    "lambda_endpoint": (
        "--lambda-endpoint",
        str,
        "Lambda Invoke API base URL for AWS/AWS_PROXY integrations, e.g. http://127.0.0.1:3001 (sam local)",
    ),
    "tls_cert": ("--tls-cert", str, "PEM certificate chain: the data port speaks wss:// (with --tls-key)"),
    "tls_key": ("--tls-key", str, "PEM private key (unencrypted) of --tls-cert"),
    "tls_cert_dir": (
        "--tls-cert-dir",
        str,
        "directory of per-domain NAME.crt/NAME.key (_wildcard.PARENT.crt for *.PARENT), chosen by SNI",
    ),
    "admin_tls_cert": ("--admin-tls-cert", str, "PEM certificate chain: the admin port speaks https://"),
    "admin_tls_key": ("--admin-tls-key", str, "PEM private key (unencrypted) of --admin-tls-cert"),
    "backend_ca": ("--backend-ca", str, "PEM CA bundle trusted for wss:// backends instead of the system store"),
    "credentials": (
        "--credentials",
        str,
        "AWS shared-credentials file: every admin request, and every upgrade to an AWS_IAM $connect, "
        "must be SigV4-signed by one of its keys",
    ),
    "admin_allow_remote_unauthenticated": (
        "--admin-allow-remote-unauthenticated",
        bool,
        "serve the admin API on a non-loopback --admin-host without --credentials (unsafe)",
    ),
}


def _env_default(field_name: str, fallback: object, parse: Callable[[str], Any], errors: list[str]) -> object:
    """``FRAMEGATE_<FIELD>`` parsed as its flag would be, else ``fallback``; a value that does not
    parse is noted in ``errors`` (reported if ``serve`` runs) rather than raised while building."""
    variable = f"FRAMEGATE_{field_name.upper()}"
    raw = os.environ.get(variable)
    if raw is None:
        return fallback
    if parse is bool:  # a switch: bool("0") would be True
        word = raw.strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS
        errors.append(f"{variable}: not one of {', '.join(_TRUE_WORDS + _FALSE_WORDS)}")
        return fallback
    try:
        return parse(raw)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        # the value is not echoed: an environment may hold what should not reach a log
        kind = getattr(parse, "__name__", "value").lstrip("_").replace("_", " ")
        detail = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"not a valid {kind}"
        errors.append(f"{variable}: {detail.replace(repr(raw), 'the value')}")
        return fallback


def _usage_error(message: str) -> int:
    print(f"{_SERVE}: {message}", file=sys.stderr)
    return USAGE_ERROR


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the gateway (data plane + control plane + /metrics)",
        description="Run the WebSocket gateway. An empty store gets a demo API: ws://127.0.0.1:8080/dev echoes.",
        epilog=(
            "Scaling out: --workers N runs N processes on one machine (one port, one admin API). A cluster "
            "of machines needs, on every node, --db redis://HOST:PORT/DB (one shared store, Redis with "
            "appendfsync always) and --redis redis://HOST:PORT/DB (shared throttling, and @connections calls "
            "routed to the node holding the connection); see README "
            "'Scaling out' and docs/cluster.md."
        ),
    )
    defaults = Config()
    env_errors: list[str] = []
    for f in fields(Config):
        if f.name not in _SERVE_FLAGS:
            continue
        flag, parse, text = _SERVE_FLAGS[f.name]
        default = _env_default(f.name, getattr(defaults, f.name), parse, env_errors)
        if parse is bool:  # a switch: present or not
            parser.add_argument(flag, dest=f.name, action="store_true", help=text, default=default)
            continue
        parser.add_argument(flag, dest=f.name, type=parse, help=text, default=default)
    parser.add_argument(
        "--workers",
        type=_workers,
        # A string default goes through ``type`` like a flag: a bad FRAMEGATE_WORKERS is a usage error.
        default=os.environ.get("FRAMEGATE_WORKERS", "1"),
        help="worker processes sharing --port (SO_REUSEPORT), or 'auto' for one per usable core (default 1)",
    )
    parser.set_defaults(run=_run_serve, env_errors=env_errors)


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
    if args.env_errors:
        return _usage_error(args.env_errors[0])
    config = Config(**{name: getattr(args, name) for name in _SERVE_FLAGS})
    try:
        config.validate()
    except InvalidSetting as exc:
        flag = _SERVE_FLAGS[exc.name][0] if exc.name in _SERVE_FLAGS else exc.name
        return _usage_error(f"{flag} {exc.problem}")
    if config.config_file is not None:
        from proxy.control.declarative import DocumentError, load_document

        try:
            load_document(config.config_file)
        except DocumentError as exc:
            return _usage_error(f"--config {exc}")
    config = dataclasses.replace(config, workers=args.workers)
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
    try:
        try:
            args = build_parser().parse_args(argv)
            configure_logging(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "text"))
            result: int = args.run(args)
        finally:
            sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is caught below
    except BrokenPipeError:
        # The reader of stdout went away (`framegate bench ... | head`): stop quietly, and point
        # stdout at /dev/null so the interpreter's own final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return limits.EXIT_BROKEN_PIPE
    return result


if __name__ == "__main__":
    raise SystemExit(main())
