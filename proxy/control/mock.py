"""MOCK integrations: the gateway answers a route itself (docs/aws-behaviour.md#integrations).

Layer 3, sans-IO. How a MOCK integration runs, as in AWS:

1. A request template is chosen: ``integration.template_selection_expression``
   is evaluated on the message (``$default`` when unset) and its value picks
   a key of ``request_templates``, falling back to ``$default``.
2. The template renders to JSON carrying ``statusCode``: that is the result's
   status. No template and a passing-through ``passthrough_behavior`` means 200;
   ``NEVER`` (or ``WHEN_NO_TEMPLATES`` while templates exist) means failure.
3. Only a two-way route (one with a route response) replies. The integration
   response is chosen by its key against the status: ``/regex/`` keys must
   match the whole status, else ``$default``.
4. That response's template is chosen like the request's (its expression may
   read ``${integration.response.statuscode}``) and rendered with the message as
   ``$input.body``. Without response templates the message passes through, so
   a bare MOCK route with a route response echoes (framegate's demo ``$default``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from proxy.control.context import RequestContext
from proxy.control.model import DEFAULT, EMPTY, Integration, IntegrationResponse, Route
from proxy.control.routing import parse_json_or_none
from proxy.control.templates import render_template, select_template
from proxy.errors import IntegrationError
from proxy.limits import MAX_HTTP_STATUS, MIN_HTTP_STATUS, MOCK_DEFAULT_STATUS, TEMPLATE_CACHE

STATUS_VARIABLE: Final = "integration.response.statuscode"
NEVER: Final = "NEVER"
WHEN_NO_TEMPLATES: Final = "WHEN_NO_TEMPLATES"


@dataclass(frozen=True, slots=True)
class MockResult:
    status: int
    """From the request template's ``{"statusCode": N}``; 200 without a template."""
    reply: str | None
    """Text frame for the client; None for a one-way route, or when no
    integration response matched or its template rendered nothing."""


@lru_cache(maxsize=TEMPLATE_CACHE)
def _status_code(rendered: str) -> int:
    document = parse_json_or_none(rendered)
    status = document.get("statusCode") if isinstance(document, dict) else None
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not MIN_HTTP_STATUS <= status <= MAX_HTTP_STATUS:
        raise IntegrationError(f'MOCK request template must yield {{"statusCode": <HTTP status>}}, got {rendered!r}')
    return status


def check_passthrough(integration: Integration) -> None:
    """No request template applies: raise unless ``passthroughBehavior`` lets the message through.

    Shared by MOCK, HTTP and AWS integrations (AWS answers such a message with an error).

    Raises:
        IntegrationError: ``NEVER``, or ``WHEN_NO_TEMPLATES`` while templates exist.
    """
    passthrough = integration.passthrough_behavior
    if passthrough == NEVER or (passthrough == WHEN_NO_TEMPLATES and integration.request_templates):
        raise IntegrationError(
            f"No request template matches and passthroughBehavior is {passthrough} "
            f"(integration {integration.integration_id})"
        )


def _request_status(integration: Integration, request_template: str | None, render: Render) -> int:
    if request_template is not None:
        return _status_code(render(request_template))
    check_passthrough(integration)
    return MOCK_DEFAULT_STATUS


def _key_matches(key: str, status: str) -> bool:
    if len(key) > 1 and key.startswith("/") and key.endswith("/"):
        try:
            return re.fullmatch(key[1:-1], status) is not None
        except re.error:
            return False
    return key == status


def select_integration_response(
    responses: tuple[IntegrationResponse, ...], status: int | str
) -> IntegrationResponse | None:
    """The first response whose key matches ``status`` (or a Lambda ``errorMessage``), else the ``$default`` one."""
    value = str(status)
    default = None
    for response in responses:
        key = response.integration_response_key
        if key == DEFAULT:
            default = response
        elif _key_matches(key, value):
            return response
    return default


class Render:
    """Renders templates for one request, sharing its body (``$input.body``), context and variables."""

    def __init__(self, body: str, context: RequestContext, stage_variables: Mapping[str, str]) -> None:
        self.body = body
        self.context = context.lazy_variables()
        self.stage_variables = stage_variables

    def __call__(self, template: str) -> str:
        return render_template(template, body=self.body, context=self.context, stage_variables=self.stage_variables)


def mapped_reply(
    responses: tuple[IntegrationResponse, ...],
    status: int | str,
    render: Render,
    variables: Mapping[str, str] = EMPTY,
) -> str | None:
    """A two-way route's reply through the integration responses (steps 3 and 4 of the module doc).

    Args:
        responses: the integration's integration responses.
        status: the integration's status, matched against their keys.
        render: renders with ``$input.body`` = the integration's answer, which
            passes through unchanged when the chosen response has no template.
        variables: more selection variables (``integration.response.header.X``).

    Returns:
        The text to send, or None (no response matched, or it rendered blank).
    """
    response = select_integration_response(responses, status)
    if response is None:
        return None
    template = select_template(
        response.response_templates,
        response.template_selection_expression,
        variables={**variables, STATUS_VARIABLE: str(status)},
    )
    reply = render.body if template is None else render(template)
    return reply if reply.strip() else None


def run_mock(
    integration: Integration,
    route: Route,
    *,
    body: str,
    context: RequestContext,
    stage_variables: Mapping[str, str],
) -> MockResult:
    """Run a MOCK integration for one connect or message (steps in the module doc).

    Args:
        integration: the route's MOCK integration.
        route: the selected route (its route responses make it two-way).
        body: the message text; ``""`` for ``$connect``.
        context: the request's ``$context``.
        stage_variables: the connection's stage variables.

    Raises:
        IntegrationError: no usable request template, or one without a valid
            ``statusCode``, or a template helper failed. The client sees the
            "Internal server error" frame (or, on ``$connect``, a refused upgrade).
    """
    render = Render(body, context, stage_variables)
    request_template = select_template(integration.request_templates, integration.template_selection_expression, body)
    status = _request_status(integration, request_template, render)
    if not route.two_way:
        return MockResult(status, None)
    return MockResult(status, mapped_reply(integration.integration_responses, status, render))
