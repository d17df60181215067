"""The one route table, checked row by row against botocore's apigatewayv2 model."""

from __future__ import annotations

from typing import Any

import botocore.loaders
import pytest

from proxy.control import handlers
from proxy.errors import BadRequestException

MODEL: dict[str, Any] = botocore.loaders.Loader().load_service_model("apigatewayv2", "service-2")
WEBSOCKET_RESOURCES = (
    "Api",
    "Route",
    "RouteResponse",
    "Integration",
    "IntegrationResponse",
    "Deployment",
    "Stage",
    "Authorizer",
)
EXPECTED = {
    f"{verb}{resource}{suffix}"
    for resource in (*WEBSOCKET_RESOURCES, "DomainName", "ApiMapping")
    for verb, suffix in (("Create", ""), ("Get", ""), ("Get", "s"), ("Update", ""), ("Delete", ""))
}


@pytest.mark.parametrize("op", handlers.OPERATIONS, ids=lambda op: op.name)
def test_row_matches_botocore(op: handlers.Operation) -> None:
    http = MODEL["operations"][op.name]["http"]
    assert (op.method, op.uri, op.status) == (http["method"], http["requestUri"], http["responseCode"])


def test_every_websocket_crud_operation_is_served() -> None:
    served = {op.name for op in handlers.OPERATIONS}
    assert EXPECTED - served == set()
    assert len(served) == len(handlers.OPERATIONS), "an operation appears twice"


def test_labels_are_decoded_one_segment_at_a_time() -> None:
    op, labels = handlers.match("DELETE", "/v2/apis/abc/stages/prod/routesettings/%24default")
    assert op.name == "DeleteRouteSettings"
    assert labels == {"apiId": "abc", "stageName": "prod", "routeKey": "$default"}
    op, labels = handlers.match("GET", "/v2/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Fapis%2Fabc")
    assert op.name == "GetTags" and labels == {"resource-arn": "arn:aws:apigateway:us-east-1::/apis/abc"}


def test_unimplemented_operations_are_named_and_not_supported_not_missing() -> None:
    """botocore reads NotFoundException as "no such resource": an unimplemented operation must not say that."""
    with pytest.raises(BadRequestException, match=r"^ImportApi is not supported by framegate$"):
        handlers.match("PUT", "/v2/apis")
    with pytest.raises(BadRequestException, match=r"^GetVpcLinks is not supported by framegate$"):
        handlers.match("GET", "/v2/vpclinks")
    with pytest.raises(BadRequestException, match="not an apigatewayv2 operation; it is not supported"):
        handlers.match("GET", "/v3/elsewhere")
