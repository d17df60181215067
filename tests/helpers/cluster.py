"""Driving several framegate processes as one gateway: admin clients, polls with ceilings, floods.

Every wait here is a bounded loop of real requests (never a sleep): it ends
as soon as what it waits for is true, or fails at its ceiling.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.helpers.redis import RedisServer

CEILING_S = 15.0
"""Ceiling of every poll; never a synchronisation device."""
DUMMY_CREDENTIALS = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}
NO_RETRIES = BotoConfig(retries={"total_max_attempts": 1})

ECHO = '{"action": "ping"}'
"""A message the demo API's stage ``dev`` echoes."""
WHOAMI = json.dumps({"action": "whoami"})
IDENTITY_TEMPLATE = '{"connectionId": "$context.connectionId", "stage": "$context.stage"}'

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def node_flags(redis: RedisServer) -> tuple[str, ...]:
    """A cluster node's flags: the shared store in database 0 and shared throttling in database 1."""
    base = redis.url.rsplit("/", 1)[0]
    return ("--db", f"{base}/0", "--redis", f"{base}/1")


def admin_client(admin: str) -> Any:
    """boto3's apigatewayv2 client on a framegate admin URL."""
    return boto3.client("apigatewayv2", endpoint_url=admin, config=NO_RETRIES, **DUMMY_CREDENTIALS)


def demo_deployment(client: Any) -> tuple[str, str]:
    """The demo API's id and the deployment its stage ``dev`` serves."""
    api = next(item for item in client.get_apis()["Items"] if item["Name"] == "demo")
    stage = client.get_stage(ApiId=api["ApiId"], StageName="dev")
    return api["ApiId"], stage["DeploymentId"]


async def connects(url: str) -> bool:
    """True if a WebSocket upgrade to ``url`` is accepted (and echoes), False if it is refused."""
    try:
        async with connect(url, open_timeout=CEILING_S) as client:
            await client.send(ECHO)
            return await asyncio.wait_for(client.recv(), CEILING_S) == ECHO
    except InvalidStatus:
        return False


async def until_all_connect(url: str, count: int) -> float:
    """Returns the seconds until ``count`` connections in a row to ``url`` were all accepted."""
    start = time.monotonic()
    while time.monotonic() - start < CEILING_S:
        if all([await connects(url) for _ in range(count)]):
            return time.monotonic() - start
    raise AssertionError(f"{url} still refused connections after {CEILING_S} s")


def scrape(admin: str) -> Samples:
    """Every sample of ``admin``'s /metrics by (name, sorted labels)."""
    with urllib.request.urlopen(f"{admin}/metrics", timeout=CEILING_S) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape_until(admin: str, condition: Callable[[Samples], bool]) -> Samples:
    """Scrape ``admin``'s /metrics until ``condition`` holds; returns those samples."""
    start = time.monotonic()
    samples: Samples = {}
    while time.monotonic() - start < CEILING_S:
        samples = await asyncio.to_thread(scrape, admin)
        if condition(samples):
            return samples
    raise AssertionError(f"/metrics never met the condition; last scrape: {sorted(samples.items())[:40]}")


def whoami_route(template: str = IDENTITY_TEMPLATE) -> dict[str, Any]:
    """A ``whoami`` route (``--config`` form) whose MOCK integration answers ``template``: the client's context."""
    return {
        "routeKey": "whoami",
        "integration": {
            "integrationType": "MOCK",
            "requestTemplates": {"$default": '{"statusCode": 200}'},
            "templateSelectionExpression": "\\$default",
            "integrationResponses": [
                {"integrationResponseKey": "$default", "responseTemplates": {"$default": template}}
            ],
        },
        "routeResponses": [{"routeResponseKey": "$default"}],
    }


def api_document() -> dict[str, Any]:
    """One API on stages prod and beta whose ``whoami`` route answers the client's connection id."""
    whoami = whoami_route()
    return {
        "apis": [
            {
                "name": "chat",
                "protocolType": "WEBSOCKET",
                "routeSelectionExpression": "$request.body.action",
                "routes": [whoami],
                "stages": [{"stageName": "prod"}, {"stageName": "beta"}],
            }
        ]
    }


async def whoami(client: ClientConnection) -> str:
    """The connection id of ``client``, connected to a stage of ``api_document``."""
    await client.send(WHOAMI)
    identity: dict[str, str] = json.loads(await asyncio.wait_for(client.recv(), CEILING_S))
    return identity["connectionId"]
