#!/usr/bin/env python3
"""A stand-in for the Supervisor's ingress proxy, for the panel's browser tests.

    ingress_proxy.py --listen PORT --upstream http://127.0.0.1:WEB_PORT --token TOKEN

Like the real one (aiohttp, supervisor/api/ingress.py): requests to
/api/hassio_ingress/<token>/<path> go to <upstream>/<path> with the prefix stripped and
X-Ingress-Path set; WebSockets are piped both ways; anything else is a 404. Prints "ready" when
listening. Run with Home Assistant's venv python (it has aiohttp).
"""

import argparse
import asyncio

import aiohttp
from aiohttp import web

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    prefix = f"/api/hassio_ingress/{args.token}"

    async def handle(request: web.Request):
        if not request.path.startswith(prefix + "/") and request.path != prefix:
            return web.Response(status=404, text="not an ingress path")
        path = request.path[len(prefix):] or "/"
        url = args.upstream + path + (f"?{request.query_string}" if request.query_string else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers["X-Ingress-Path"] = prefix
        headers["X-Forwarded-For"] = request.remote or ""
        session: aiohttp.ClientSession = request.app["session"]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            client = web.WebSocketResponse()
            await client.prepare(request)
            ws_headers = {k: v for k, v in headers.items()
                          if not k.lower().startswith("sec-websocket")}
            async with session.ws_connect(url, headers=ws_headers, autoping=False) as upstream:
                async def pipe(src, dst):
                    async for msg in src:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await dst.send_str(msg.data)
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            await dst.send_bytes(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                            break
                    await dst.close()
                await asyncio.wait(
                    [asyncio.ensure_future(pipe(client, upstream)),
                     asyncio.ensure_future(pipe(upstream, client))],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            return client
        async with session.request(request.method, url, headers=headers,
                                   data=await request.read(), allow_redirects=False) as up:
            body = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=up.status, body=body, headers=out)

    async def start(app):
        app["session"] = aiohttp.ClientSession(auto_decompress=False)

    async def stop(app):
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.listen, print=None)


if __name__ == "__main__":
    main()
