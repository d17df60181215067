"""The deployment recipe's files agree with the CLI: docker-compose.yml, deploy/haproxy.cfg.

Docker is not run here; these checks catch a flag the CLI does not know, a port the load
balancer does not send to, and a node that stays down when Redis is slower to start than it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from proxy.cli import build_parser
from tests.helpers.servers import ROOT

NODES = ("node-a", "node-b")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document["services"]


def test_every_node_command_is_a_valid_serve_command_line() -> None:
    parser = build_parser()
    for name in NODES:
        args = parser.parse_args(compose()[name]["command"])
        assert args.command == "serve" and args.db_path.startswith("redis://") and args.redis.startswith("redis://")


def test_haproxy_sends_to_the_nodes_data_port_and_compose_publishes_their_admin_port() -> None:
    parser = build_parser()
    servers = dict(re.findall(r"^\s*server (\S+) (\S+:\d+)", (ROOT / "deploy" / "haproxy.cfg").read_text(), re.M))
    for name in NODES:
        args = parser.parse_args(compose()[name]["command"])
        assert servers[name] == f"{name}:{args.port}"
        assert all(port.endswith(f":{args.admin_port}") for port in compose()[name]["ports"])


def test_a_node_that_exits_because_redis_was_not_ready_is_started_again() -> None:
    for name in NODES:
        assert compose()[name].get("restart") in ("unless-stopped", "always", "on-failure")
