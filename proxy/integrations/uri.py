"""What an integration URI names, decided on the URI as it will be called.

Layer 2, sans-IO. The data plane decides with stage variables substituted
(``${stageVariables.backend}`` may hold ``ws://...``, ``http://...`` or a
Lambda URI); the control plane uses the same predicates on literal URIs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from proxy.errors import IntegrationError
from proxy.limits import DEFAULT_REGION

WEBSOCKET_SCHEMES: Final = ("ws://", "wss://")
HTTP_SCHEMES: Final = ("http://", "https://")

_LAMBDA_URI = re.compile(
    r"arn:aws:apigateway:(?P<region>[^:]+):lambda:path/2015-03-31/functions/(?P<function>.+)/invocations"
)
_FUNCTION_REGION = re.compile(r"arn:aws:lambda:(?P<region>[^:]+):")


def is_websocket_uri(uri: str | None) -> bool:
    return uri is not None and uri.startswith(WEBSOCKET_SCHEMES)


def is_http_uri(uri: str | None) -> bool:
    return uri is not None and uri.startswith(HTTP_SCHEMES)


def is_lambda_uri(uri: str | None) -> bool:
    """Whether ``uri`` is a Lambda invocation URI (stage variables may stand anywhere in it)."""
    return uri is not None and _LAMBDA_URI.fullmatch(uri) is not None


@dataclass(frozen=True, slots=True)
class LambdaTarget:
    """Where an integration's invocation goes, once stage variables are substituted."""

    function: str
    """The function ARN (or bare name, as ``sam local`` knows functions) as written in the URI."""
    region: str
    """The region SigV4 signs for: the function ARN's, else the integration URI's."""


def lambda_target(uri: str) -> LambdaTarget:
    """Parse a substituted Lambda integration URI.

    Raises:
        IntegrationError: it is not a Lambda invocation URI.
    """
    found = _LAMBDA_URI.fullmatch(uri)
    if found is None:
        raise IntegrationError(f"{uri!r} is not a Lambda invocation URI")
    function = found["function"]
    in_arn = _FUNCTION_REGION.match(function)
    return LambdaTarget(function, in_arn["region"] if in_arn else found["region"] or DEFAULT_REGION)
