#!/usr/bin/env python3
"""Adds Home Assistant's MQTT integration for a broker through its config flow, as a user would;
prints the entry's id once the entry is loaded (connected to the broker).

    $HA_VENV/bin/python tests/ha/setup_mqtt.py --url URL --token TOKEN --port 1883 \
        [--broker 127.0.0.1] [--username U --password P]

Outside the Supervisor the flow opens at its "broker" step; posting the broker's address and
login makes Home Assistant connect before it creates the entry. Needs aiohttp.
"""

import argparse
import asyncio
import sys
import time

import aiohttp

LOAD_TIMEOUT = 30


async def setup(args):
    url = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        flows = f"{url}/api/config/config_entries/flow"
        async with http.post(flows, json={"handler": "mqtt"}) as r:
            form = await r.json()
        if form.get("step_id") != "broker":
            sys.exit(f"setup_mqtt: the flow did not open at the broker step: {form}")
        broker = {"broker": args.broker, "port": args.port}
        if args.username:
            broker |= {"username": args.username, "password": args.password or ""}
        async with http.post(f"{flows}/{form['flow_id']}", json=broker) as r:
            result = await r.json()
        if result.get("type") != "create_entry":
            sys.exit(f"setup_mqtt: no entry (errors {result.get('errors')}): {result}")

        entry_id = result["result"]["entry_id"]
        deadline = time.monotonic() + LOAD_TIMEOUT
        while True:
            async with http.get(f"{url}/api/config/config_entries/entry?domain=mqtt") as r:
                entry = next(e for e in await r.json() if e["entry_id"] == entry_id)
            if entry["state"] == "loaded":
                return entry_id
            if time.monotonic() > deadline:
                sys.exit(f"setup_mqtt: the entry is not loaded after {LOAD_TIMEOUT} s: {entry}")
            await asyncio.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--broker", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username")
    parser.add_argument("--password")
    print(asyncio.run(setup(parser.parse_args())))


if __name__ == "__main__":
    main()
