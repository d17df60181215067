"""The HTTP backend both integration contenders call: an aiohttp app answering each POST with its body.

``python -m benchmarks.peers.http_backend --port 0`` prints ``http-backend ready http://HOST:PORT``.
With ``--lambda``, it serves the Lambda Invoke API instead
(``POST /2015-03-31/functions/{name}/invocations``) with an echoing AWS_PROXY
function: ``{"statusCode": 200, "body": event["body"]}``; it checks only that
the request is SigV4-shaped, as a local emulator does.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop
from aiohttp import web

ECHO_PATH = "/echo"
INVOKE_PATH = "/2015-03-31/functions/{function}/invocations"


async def _echo(request: web.Request) -> web.StreamResponse:
    return web.Response(body=await request.read())


async def _invoke(request: web.Request) -> web.StreamResponse:
    if not request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
        return web.json_response({"message": "Missing Authentication Token"}, status=403)
    event = json.loads(await request.read())
    return web.json_response({"statusCode": 200, "body": event.get("body")})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lambda", dest="as_lambda", action="store_true", help="serve the Lambda Invoke API")
    args = parser.parse_args()
    app = web.Application()
    if args.as_lambda:
        app.router.add_post(INVOKE_PATH, _invoke)
    else:
        app.router.add_post(ECHO_PATH, _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(f"http-backend ready http://{args.host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main())
