#!/usr/bin/env python3
"""Sends a WebRTC offer for a camera through Home Assistant's websocket, as its frontend does,
and prints each event that comes back (session, answer, candidate, error) as a JSON line.

    $HA_VENV/bin/python tests/ha/webrtc_offer.py --url URL --token TOKEN \
        --entity camera.nursery --offer-file offer.sdp

Exits 0 once an answer came (after 0.5 s more for trickled candidates), 1 on an error or when
nothing answers within 15 s. Needs aiohttp.
"""

import argparse
import asyncio
import json
import sys

import aiohttp

TIMEOUT = 15.0
CANDIDATES_AFTER_ANSWER = 0.5


async def offer(args):
    url = args.url.rstrip("/")
    with open(args.offer_file, encoding="utf-8") as f:
        sdp = f.read()
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/api/websocket") as ws:
        await ws.receive_json()  # auth_required
        await ws.send_json({"type": "auth", "access_token": args.token})
        if (await ws.receive_json())["type"] != "auth_ok":
            sys.exit("webrtc_offer: websocket login refused")
        await ws.send_json(
            {"id": 1, "type": "camera/webrtc/offer", "entity_id": args.entity, "offer": sdp}
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        answered = False
        while True:
            try:
                message = await asyncio.wait_for(ws.receive_json(), deadline - loop.time())
            except TimeoutError:
                return 0 if answered else 1
            if message.get("type") == "result" and not message.get("success"):
                print(json.dumps(message), flush=True)
                return 1
            if message.get("type") != "event":
                continue
            event = message["event"]
            print(json.dumps(event), flush=True)
            if event.get("type") == "error":
                return 1
            if event.get("type") == "answer" and not answered:
                answered = True
                deadline = loop.time() + CANDIDATES_AFTER_ANSWER


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--entity", required=True)
    parser.add_argument("--offer-file", required=True)
    sys.exit(asyncio.run(offer(parser.parse_args())))


if __name__ == "__main__":
    main()
