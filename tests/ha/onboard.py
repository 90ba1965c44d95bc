#!/usr/bin/env python3
"""Onboards a fresh Home Assistant and prints a long-lived access token (only that, on stdout).

    $HA_VENV/bin/python tests/ha/onboard.py --url http://127.0.0.1:8123

Creates the owner (POST /api/onboarding/users gives an authorization code), trades the code for
an access token (POST /auth/token), marks the remaining onboarding steps done (core_config,
analytics, which stays off, integration), then asks the websocket API for a long-lived token
(auth/long_lived_access_token). Needs aiohttp, which the Home Assistant venv has.
"""

import argparse
import asyncio
import sys
import time

import aiohttp

USERNAME = "vigil"
PASSWORD = "vigil-test-password"


async def checked(response, what):
    """The JSON answer, or exit with the status and the text."""
    if response.status >= 400:
        sys.exit(f"onboard: {what}: HTTP {response.status} {await response.text()}")
    return await response.json(content_type=None)


async def onboard(url):
    client_id = f"{url}/"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/onboarding") as r:
            done = {step["step"]: step["done"] for step in await checked(r, "onboarding status")}
        if done.get("user"):
            sys.exit("onboard: Home Assistant is onboarded already (a fresh config dir is needed)")
        owner = {
            "client_id": client_id,
            "name": "Vigil Test",
            "username": USERNAME,
            "password": PASSWORD,
            "language": "en",
        }
        async with http.post(f"{url}/api/onboarding/users", json=owner) as r:
            code = (await checked(r, "owner"))["auth_code"]
        grant = {"grant_type": "authorization_code", "code": code, "client_id": client_id}
        async with http.post(f"{url}/auth/token", data=grant) as r:
            access = (await checked(r, "access token"))["access_token"]

        headers = {"Authorization": f"Bearer {access}"}
        steps = [
            ("core_config", None),
            ("analytics", None),
            ("integration", {"client_id": client_id, "redirect_uri": f"{url}/?auth_callback=1"}),
        ]
        for step, body in steps:
            async with http.post(f"{url}/api/onboarding/{step}", headers=headers, json=body) as r:
                await checked(r, step)

        async with http.ws_connect(f"{url}/api/websocket") as ws:
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": access})
            if (answer := await ws.receive_json())["type"] != "auth_ok":
                sys.exit(f"onboard: websocket login: {answer}")
            await ws.send_json(
                {
                    "id": 1,
                    "type": "auth/long_lived_access_token",
                    # Token names are unique per user.
                    "client_name": f"vigil-test-{time.time_ns()}",
                    "lifespan": 365,
                }
            )
            answer = await ws.receive_json()
            if not answer.get("success"):
                sys.exit(f"onboard: long-lived token: {answer}")
            return answer["result"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    print(asyncio.run(onboard(args.url.rstrip("/"))))


if __name__ == "__main__":
    main()
