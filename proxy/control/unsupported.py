"""The answer to a request no row of ``control.handlers.OPERATIONS`` serves.

Layer 3. AWS clients read ``NotFoundException`` as "this resource does not
exist", which is the wrong story for an operation framegate does not
implement (models, VPC links, portals, routing rules, import/export ...). The
answer is a ``BadRequestException`` that names the apigatewayv2 operation,
looked up in botocore's own service model (loaded on the first such request
only), and says it is not supported.
"""

from __future__ import annotations

import re
from functools import cache

from botocore.session import get_session

from proxy.errors import BadRequestException

SERVICE: str = "apigatewayv2"


@cache
def _operations() -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    """(operation name, method, path pattern) for every operation in botocore's model."""
    model = get_session().get_service_model(SERVICE)
    rows = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(http["requestUri"]))
        rows.append((name, http["method"], re.compile(pattern)))
    return tuple(rows)


def operation_name(method: str, path: str) -> str | None:
    """The apigatewayv2 operation a request is for, or None if it is none of them."""
    return next((name for name, verb, pattern in _operations() if verb == method and pattern.fullmatch(path)), None)


def unsupported_operation(method: str, path: str) -> BadRequestException:
    """The error for a request framegate has no operation for."""
    name = operation_name(method, path)
    if name is not None:
        return BadRequestException(f"{name} is not supported by framegate")
    return BadRequestException(f"{method} {path} is not an apigatewayv2 operation; it is not supported by framegate")
