"""The catalog remembers resolved targets, and forgets them on every change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.control.catalog import DEMO_API_DESCRIPTION, DEMO_API_NAME, ApiEntry
from proxy.errors import NotFoundException
from proxy.limits import RESOLVED_TARGET_CACHE
from proxy.session import is_websocket
from tests.helpers.apis import api_entry, catalog_with, snapshot, ws


def _entry(api_id: str, uri: str = "ws://127.0.0.1:9/") -> ApiEntry:
    return api_entry(api_id, {"prod": (snapshot({"$default": ws("i1", uri)}), {})})


def test_a_republished_api_is_resolved_anew() -> None:
    catalog = catalog_with(_entry("aaaaaaaaaa", "ws://127.0.0.1:1/"))
    first = catalog.resolve("127.0.0.1:8080", "/prod")
    assert catalog.resolve("127.0.0.1:8080", "/prod") is first  # remembered
    catalog.publish_api(_entry("aaaaaaaaaa", "ws://127.0.0.1:2/"))
    again = catalog.resolve("127.0.0.1:8080", "/prod")
    assert again.snapshot.integrations["i1"].integration_uri == "ws://127.0.0.1:2/"


def test_a_removed_api_no_longer_resolves() -> None:
    catalog = catalog_with(_entry("aaaaaaaaaa"))
    catalog.resolve("127.0.0.1:8080", "/prod")
    catalog.remove_api("aaaaaaaaaa")
    with pytest.raises(NotFoundException):
        catalog.resolve("127.0.0.1:8080", "/prod")


def test_changing_the_default_api_redirects_hosts_that_name_none() -> None:
    catalog = catalog_with(_entry("aaaaaaaaaa"), _entry("bbbbbbbbbb"), default_api="aaaaaaaaaa")
    assert catalog.resolve("127.0.0.1:8080", "/prod").api.api_id == "aaaaaaaaaa"
    catalog.default_api = "bbbbbbbbbb"
    assert catalog.resolve("127.0.0.1:8080", "/prod").api.api_id == "bbbbbbbbbb"


def test_failures_are_not_remembered() -> None:
    catalog = catalog_with(_entry("aaaaaaaaaa"))
    with pytest.raises(NotFoundException):
        catalog.resolve("127.0.0.1:8080", "/dev")
    catalog.publish_api(api_entry("aaaaaaaaaa", {"dev": (snapshot({"$default": ws("i1", "ws://x/")}), {})}))
    assert catalog.resolve("127.0.0.1:8080", "/dev").stage.stage_name == "dev"


def test_memory_stays_bounded_whatever_paths_clients_send() -> None:
    catalog = catalog_with(_entry("aaaaaaaaaa"))
    for number in range(3 * RESOLVED_TARGET_CACHE):
        assert catalog.resolve("127.0.0.1:8080", f"/prod/{number}").stage.stage_name == "prod"
    assert len(catalog._resolved) <= RESOLVED_TARGET_CACHE


def test_a_uri_that_is_a_stage_variable_is_decided_after_substitution() -> None:
    """``${stageVariables.backend}`` holding ws://... is a WebSocket passthrough, not an unknown kind."""
    shared = snapshot(
        {"$default": ws("i1", "${stageVariables.backend}"), "other": ws("i2", "ws://${stageVariables.h}")}
    )
    entry = api_entry(
        "aaaaaaaaaa",
        {"blue": (shared, {"backend": "ws://127.0.0.1:1/", "h": "x"}), "green": (shared, {"h": "y"})},
    )
    catalog = catalog_with(entry)
    blue = catalog.resolve("127.0.0.1:8080", "/blue")
    assert blue.snapshot.integrations["i1"].integration_uri == "ws://127.0.0.1:1/"
    assert blue.snapshot.integrations["i2"].integration_uri == "ws://${stageVariables.h}", "scheme known: left as is"
    assert is_websocket(blue.snapshot.integration_for(blue.snapshot.routes["$default"]))
    assert catalog.resolve("127.0.0.1:8080", "/blue/x").snapshot is blue.snapshot, "one bound snapshot per stage"
    green = catalog.resolve("127.0.0.1:8080", "/green")
    assert green.snapshot.integrations["i1"].integration_uri == "${stageVariables.backend}", "undefined: fails later"


def test_a_snapshot_without_stage_variable_uris_is_served_as_deployed() -> None:
    entry = _entry("aaaaaaaaaa")
    catalog = catalog_with(entry)
    assert catalog.resolve("127.0.0.1:8080", "/prod").snapshot is entry.deployments["dep-prod"].snapshot


def _demo_entry(api_id: str) -> ApiEntry:
    entry = api_entry(api_id, {"dev": (snapshot({"$default": ws("i1", "ws://127.0.0.1:9/")}), {})}, name=DEMO_API_NAME)
    return ApiEntry(replace(entry.api, description=DEMO_API_DESCRIPTION), entry.stages, entry.deployments)


def test_a_first_api_beside_the_demo_is_reached_from_a_plain_url() -> None:
    catalog = catalog_with(_demo_entry("demo000000"), _entry("aaaaaaaaaa"))
    assert catalog.resolve("127.0.0.1:8080", "/prod").api.api_id == "aaaaaaaaaa"


def test_an_api_named_demo_by_a_user_still_counts() -> None:
    catalog = catalog_with(_entry("aaaaaaaaaa"), api_entry("bbbbbbbbbb", {"prod": (snapshot({}), {})}, name="demo"))
    with pytest.raises(NotFoundException, match=r"/\{apiId\}/\{stage\}"):
        catalog.resolve("127.0.0.1:8080", "/prod")


def test_the_path_names_the_api_among_several() -> None:
    catalog = catalog_with(_entry("aaaaaaaaaa"), _entry("bbbbbbbbbb"))
    target = catalog.resolve("127.0.0.1:8080", "/bbbbbbbbbb/prod")
    assert (target.api.api_id, target.stage.stage_name) == ("bbbbbbbbbb", "prod")
    with pytest.raises(NotFoundException, match="Several APIs"):
        catalog.resolve("127.0.0.1:8080", "/prod")
