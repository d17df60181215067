"""Type-directed conversion between model values and plain dicts, in both spellings."""

from __future__ import annotations

import pytest

from proxy.control import records
from proxy.control.model import DEFAULT_ROUTE_SETTINGS, Deployment, Route, RouteResponse, RouteSettings, Snapshot, Stage
from proxy.errors import BadRequestException


def test_camel_spelling() -> None:
    assert records.camel("route_selection_expression") == "routeSelectionExpression"
    assert records.camel("name") == "name"


def test_nested_values_round_trip_through_the_store_spelling() -> None:
    route = Route("r1", "$default", "integrations/i1", route_responses=(RouteResponse("rr1"),))
    deployment = Deployment("d1", "2018-11-15T06:49:09Z", Snapshot("$request.body.action", {"$default": route}, {}))
    assert records.from_plain(Deployment, records.to_plain(deployment)) == deployment


def test_map_keys_are_kept_and_member_names_respelled() -> None:
    stage = Stage(
        "prod",
        "t",
        "t",
        stage_variables={"backend_url": "x"},
        route_settings={"$default": RouteSettings(throttling_burst_limit=1)},
    )
    plain = records.to_plain(stage, records.camel)
    assert plain["stageVariables"] == {"backend_url": "x"}
    assert plain["routeSettings"] == {"$default": {"throttlingBurstLimit": 1}}
    assert plain["defaultRouteSettings"]["throttlingRateLimit"] == DEFAULT_ROUTE_SETTINGS.throttling_rate_limit
    assert records.from_plain(Stage, plain, records.camel) == stage


def test_integers_become_floats_where_the_model_says_double() -> None:
    settings = records.fields_from_plain(Stage, {"defaultRouteSettings": {"throttlingRateLimit": 5}}, records.camel)
    assert settings["default_route_settings"].throttling_rate_limit == 5.0
    assert isinstance(settings["default_route_settings"].throttling_rate_limit, float)


@pytest.mark.parametrize(
    "body",
    [
        {"stageVariables": {"a": 1}},
        {"autoDeploy": "yes"},
        {"defaultRouteSettings": {"throttlingBurstLimit": True}},
        {"routeSettings": ["x"]},
    ],
)
def test_wrong_types_are_bad_requests(body: dict[str, object]) -> None:
    with pytest.raises(BadRequestException):
        records.fields_from_plain(Stage, body, records.camel)
