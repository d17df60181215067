"""``framegate serve`` refuses bad input as a usage error, never with a traceback; its log formats.

The command runs as a subprocess, as an operator runs it: exit status 2 and
one message line on stderr starting ``framegate serve: ``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.plane import open_control_plane
from proxy.limits import EXIT_BROKEN_PIPE
from proxy.logformat import JsonFormatter
from tests.helpers.servers import ROOT, serve_argv

RUN_CEILING_S = 60.0
"""Ceiling for one refused start (imports only; nothing is served)."""
PREFIX = "framegate serve: "


def _serve(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        serve_argv(tmp_path / "framegate.db", *flags),
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUN_CEILING_S,
        check=False,
    )


def _assert_usage_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(PREFIX), message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--port", "abc"), ("--port", "invalid int value")),
        (("--port", "70000"), ("--port", "0..65535")),
        (("--idle-timeout", "-1"), ("--idle-timeout", "must not be negative")),
        (("--max-connections", "0"), ("--max-connections", "at least 1")),
        (("--log-level", "loud"), ("--log-level", "DEBUG")),
        (("--log-format", "xml"), ("--log-format", "text, json")),
        (("--backend", "http://x"), ("--backend", "ws://")),
        (("--redis", "http://x"), ("--redis", "redis://")),
        (("--redis", "redis://127.0.0.1:99999/0"), ("--redis", "port")),
        (("--redis", "redis://127.0.0.1:6379/abc"), ("--redis", "database number")),
        (("--db", "redis://127.0.0.1:6379/1/2"), ("--db", "database number")),
        (("--db", "redis://127.0.0.1:6379/0?db=x"), ("--db", "db=")),
    ],
    ids=[
        "port-not-int",
        "port-range",
        "negative-timeout",
        "zero-cap",
        "log-level",
        "log-format",
        "backend-scheme",
        "redis-scheme",
        "redis-port",
        "redis-database",
        "db-database-path",
        "db-database-query",
    ],
)
def test_a_bad_flag_value_is_a_usage_error(tmp_path: Path, flags: tuple[str, ...], words: tuple[str, ...]) -> None:
    _assert_usage_error(_serve(tmp_path, *flags), *words)


def test_a_bad_redis_url_is_refused_without_echoing_its_password(tmp_path: Path) -> None:
    message = _assert_usage_error(_serve(tmp_path, "--redis", "redis://:hunter2@127.0.0.1:99999/0"), "--redis")
    assert "hunter2" not in message


def test_serve_help_names_the_flags_a_cluster_needs() -> None:
    from proxy.cli import build_parser

    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    text = " ".join(subcommands["serve"].format_help().split())
    for words in ("--workers N", "--db redis://HOST:PORT/DB", "--redis redis://HOST:PORT/DB", "Scaling out"):
        assert words in text


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("FRAMEGATE_PORT", "abc", ("FRAMEGATE_PORT", "int")),
        ("FRAMEGATE_IDLE_TIMEOUT", "soon", ("FRAMEGATE_IDLE_TIMEOUT", "float")),
        ("FRAMEGATE_LOG_LEVEL", "loud", ("FRAMEGATE_LOG_LEVEL", "DEBUG")),
    ],
)
def test_a_bad_environment_variable_is_a_usage_error_that_does_not_echo_it(
    tmp_path: Path, variable: str, value: str, words: tuple[str, ...]
) -> None:
    message = _assert_usage_error(_serve(tmp_path, env={variable: value}), *words)
    assert value not in message


def test_a_bad_environment_variable_does_not_break_other_commands(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "export", "--db", str(tmp_path / "none.db")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "FRAMEGATE_PORT": "abc"},
        capture_output=True,
        text=True,
        timeout=RUN_CEILING_S,
        check=False,
    )
    assert result.returncode == 1 and "no store at" in result.stderr and "Traceback" not in result.stderr


def test_an_unreadable_config_file_is_named(tmp_path: Path) -> None:
    _assert_usage_error(_serve(tmp_path, "--config", str(tmp_path / "missing.yaml")), "missing.yaml", "cannot read")
    _assert_usage_error(_serve(tmp_path, "--config", str(tmp_path)), str(tmp_path), "cannot read")


def test_malformed_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "api.yaml"
    config.write_text("apis:\n  - name: demo\n    routes: [\n")
    _assert_usage_error(_serve(tmp_path, "--config", str(config)), f"{config}:4:1:")


def test_malformed_json_names_the_file_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "api.json"
    config.write_text('{"apis": [\n  {"name": "demo",}\n]}')
    _assert_usage_error(_serve(tmp_path, "--config", str(config)), f"{config}:2:")


def test_an_unknown_config_key_is_refused_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "api.yaml"
    config.write_text(
        "apis:\n"
        "  - name: demo\n"
        "    routeSelectionExpression: $request.body.action\n"
        "    stages:\n"
        "      - stageName: dev\n"
        "        defaultRouteSettings: {throttlingBurstLimt: 5}\n"
    )
    message = _assert_usage_error(_serve(tmp_path, "--config", str(config)), f"{config}:6:", "throttlingBurstLimt")
    assert "throttlingBurstLimit" in message  # the suggestion


def test_a_config_the_control_plane_refuses_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "api.yaml"
    config.write_text("apis:\n  - name: demo\n    routeSelectionExpression: 7\n")
    _assert_usage_error(_serve(tmp_path, "--config", str(config)), "routeSelectionExpression")


def test_json_formatter_writes_one_object_per_record_with_the_traceback() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("proxy.x", logging.ERROR, __file__, 1, "failed: %s", ("why",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "proxy.x", "failed: why")
    assert entry["time"].endswith("+00:00") and "ValueError: boom" in entry["exc_info"]


def test_a_closed_stdout_pipe_ends_quietly(tmp_path: Path) -> None:
    """`framegate export | head -1` (or a bench summary piped the same way): no traceback when the
    reader is gone before the output is written."""
    db = tmp_path / "framegate.db"
    open_control_plane(Config(db_path=str(db)), MemoryCatalog()).close()
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "export", "--db", str(db)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=RUN_CEILING_S,
            check=False,
        )
    finally:
        os.close(writer)
    assert result.returncode == EXIT_BROKEN_PIPE
    assert result.stderr == ""
