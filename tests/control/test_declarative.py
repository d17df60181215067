"""--config apply (idempotent, YAML or JSON), framegate export, and the start-up state of a plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.declarative import apply_document, export_document, run_export
from proxy.control.plane import open_control_plane

ROOT = Path(__file__).resolve().parents[2]
CONFIG_YAML = """
apis:
  - name: chat
    protocolType: WEBSOCKET
    routeSelectionExpression: $request.body.action
    routes:
      - routeKey: $default
        integration:
          integrationType: HTTP_PROXY
          integrationUri: ws://${stageVariables.backend}
        routeResponses: [{routeResponseKey: $default}]
      - routeKey: ping
        integration:
          integrationType: MOCK
          requestTemplates: {$default: '{"statusCode": 200}'}
          integrationResponses: [{integrationResponseKey: $default}]
    stages:
      - stageName: blue
        stageVariables: {backend: "127.0.0.1:9101"}
      - stageName: green
        stageVariables: {backend: "127.0.0.1:9102"}
        defaultRouteSettings: {throttlingBurstLimit: 10}
domainNames:
  - domainName: chat.example.com
    apiMappings:
      - {api: chat, stage: green, apiMappingKey: v2}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_file_is_applied_and_published(tmp_path: Path) -> None:
    catalog = MemoryCatalog()
    config = Config(db_path=str(tmp_path / "a.db"), config_file=_write(tmp_path, "c.yaml", CONFIG_YAML))
    plane = open_control_plane(config, catalog)
    try:
        assert [s.api.name for s in plane.service.apis.values()] == ["chat"], "no demo beside a --config"
        green = catalog.resolve("chat.example.com", "/v2")
        assert green.stage.stage_variables == {"backend": "127.0.0.1:9102"}
        assert green.stage.default_route_settings.throttling_burst_limit == 10
        assert green.stage.default_route_settings.throttling_rate_limit == 10000.0
        assert set(green.snapshot.routes) == {"$default", "ping"}
        api_id = green.api.api_id
        blue = catalog.resolve(f"{api_id}.execute-api.local", "/blue")
        assert blue.deployment_id == green.deployment_id
        assert blue.stage.stage_variables == {"backend": "127.0.0.1:9101"}
    finally:
        plane.close()


def test_applying_twice_changes_nothing(tmp_path: Path) -> None:
    config = Config(db_path=str(tmp_path / "a.db"), config_file=_write(tmp_path, "c.yaml", CONFIG_YAML))
    plane = open_control_plane(config, MemoryCatalog())
    before = export_document(plane.service)
    state = next(iter(plane.service.apis.values()))
    deployments, stages = dict(state.deployments), dict(state.stages)
    apply_document(plane.service, yaml.safe_load(CONFIG_YAML))
    plane.close()
    plane = open_control_plane(config, MemoryCatalog())  # and a restart applies it a third time
    try:
        state = next(iter(plane.service.apis.values()))
        assert state.deployments == deployments
        assert state.stages == stages
        assert export_document(plane.service) == before
    finally:
        plane.close()


def test_changed_config_redeploys_its_stages(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", CONFIG_YAML)
    config = Config(db_path=str(tmp_path / "a.db"), config_file=path)
    open_control_plane(config, MemoryCatalog()).close()
    _write(tmp_path, "c.yaml", CONFIG_YAML.replace("ws://${stageVariables.backend}", "ws://127.0.0.1:9999"))
    catalog = MemoryCatalog()
    plane = open_control_plane(config, catalog)
    try:
        target = catalog.resolve("chat.example.com", "/v2")
        assert next(i.integration_uri for i in target.snapshot.integrations.values()) == "ws://127.0.0.1:9999"
        assert len(next(iter(plane.service.apis.values())).deployments) == 2
    finally:
        plane.close()


def test_export_then_apply_reproduces_the_state(tmp_path: Path) -> None:
    config = Config(db_path=str(tmp_path / "a.db"), config_file=_write(tmp_path, "c.yaml", CONFIG_YAML))
    open_control_plane(config, MemoryCatalog()).close()
    for fmt in ("json", "yaml"):
        out = tmp_path / f"export.{fmt}"
        assert run_export(config.db_path, fmt, str(out)) == 0
        copy = Config(db_path=str(tmp_path / f"copy-{fmt}.db"), config_file=str(out))
        original = open_control_plane(config, MemoryCatalog())
        reproduced = open_control_plane(copy, MemoryCatalog())
        try:
            assert export_document(reproduced.service) == export_document(original.service)
        finally:
            original.close()
            reproduced.close()
    exported = json.loads((tmp_path / "export.json").read_text())
    assert exported["domainNames"][0]["apiMappings"] == [{"api": "chat", "stage": "green", "apiMappingKey": "v2"}]


def test_bare_start_seeds_the_demo_and_restart_keeps_state(tmp_path: Path) -> None:
    config = Config(db_path=str(tmp_path / "a.db"))
    plane = open_control_plane(config, MemoryCatalog())
    demo = next(iter(plane.service.apis.values()))
    plane.service.update_stage(demo.api.api_id, "dev", {"stage_variables": {"kept": "yes"}})
    plane.close()
    catalog = MemoryCatalog()
    plane = open_control_plane(config, catalog)
    try:
        assert len(plane.service.apis) == 1, "the demo is seeded once"
        target = catalog.resolve("127.0.0.1:8080", "/dev")
        assert target.stage.stage_variables == {"kept": "yes"}
        route = target.snapshot.routes["$default"]
        integration = target.snapshot.integration_for(route)
        assert integration is not None and integration.integration_type == "MOCK"
        assert integration.request_templates == {"$default": '{"statusCode": 200}'}
        assert [r.integration_response_key for r in integration.integration_responses] == ["$default"]
        assert [r.route_response_key for r in route.route_responses] == ["$default"]
    finally:
        plane.close()


def test_backend_creates_then_repoints_quickstart(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    open_control_plane(Config(db_path=db), MemoryCatalog()).close()  # a bare start seeds the demo
    open_control_plane(Config(db_path=db, backend="ws://127.0.0.1:9101"), MemoryCatalog()).close()
    catalog = MemoryCatalog()
    plane = open_control_plane(Config(db_path=db, backend="ws://127.0.0.1:9102"), catalog)
    try:
        assert [s.api.name for s in plane.service.apis.values()] == ["demo", "quickstart"]
        target = catalog.resolve("127.0.0.1:8080", "/prod")  # still the default API beside the demo
        integration = target.snapshot.integration_for(target.snapshot.routes["$default"])
        assert integration is not None
        assert (integration.integration_type, integration.integration_uri) == ("HTTP_PROXY", "ws://127.0.0.1:9102")
    finally:
        plane.close()


def test_default_api_outranks_the_backend_quickstart(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    seeded = open_control_plane(Config(db_path=db), MemoryCatalog())  # a bare start seeds the demo
    (demo,) = seeded.service.apis
    seeded.close()
    config = Config(db_path=db, backend="ws://127.0.0.1:9101", default_api=demo)
    catalog = MemoryCatalog(config.default_api)  # as ``framegate serve`` builds it
    plane = open_control_plane(config, catalog)
    try:
        assert [s.api.name for s in plane.service.apis.values()] == ["demo", "quickstart"]
        assert catalog.default_api == demo
    finally:
        plane.close()


@pytest.mark.integration
def test_framegate_export_command(tmp_path: Path) -> None:
    config = Config(db_path=str(tmp_path / "a.db"), config_file=_write(tmp_path, "c.yaml", CONFIG_YAML))
    open_control_plane(config, MemoryCatalog()).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "proxy", "export", "--db", config.db_path, "--format", "yaml"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document = yaml.safe_load(done.stdout)
    assert [api["name"] for api in document["apis"]] == ["chat"]
    assert [s["stageName"] for s in document["apis"][0]["stages"]] == ["blue", "green"]
    missing = [sys.executable, "-m", "proxy", "export", "--db", str(tmp_path / "none.db")]
    done = subprocess.run(missing, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no store" in done.stderr
    assert not (tmp_path / "none.db").exists()


def test_an_api_without_routes_is_declared_but_not_deployed(tmp_path: Path) -> None:
    text = "apis:\n  - {name: empty, protocolType: WEBSOCKET, routeSelectionExpression: $x, stages: [{stageName: s}]}\n"
    config = Config(db_path=str(tmp_path / "a.db"), config_file=_write(tmp_path, "c.yaml", text))
    plane = open_control_plane(config, MemoryCatalog())
    try:
        state = next(iter(plane.service.apis.values()))
        assert state.stages["s"].deployment_id is None and state.deployments == {}
    finally:
        plane.close()
