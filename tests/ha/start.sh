#!/usr/bin/env bash
# Starts the Home Assistant core that tests/ha/install.sh installed, in the background, with a
# minimal configuration on 127.0.0.1, and waits until its HTTP API answers.
#
#   tests/ha/start.sh CONFIG_DIR
#
#   HA_VENV        the venv (default ~/.cache/vigil/ha/venv)
#   HA_PORT        its HTTP port (default 8123)
#   HA_EXTRA_YAML  a file appended to configuration.yaml (more integrations)
#
# Prints `pid=<hass's pid> url=http://127.0.0.1:<port>`; the log is CONFIG_DIR/home-assistant.log.
# Stop it by that pid (SIGTERM). A configuration.yaml already in CONFIG_DIR is kept, so the same
# directory can be started again.
set -euo pipefail

HA_VENV="${HA_VENV:-$HOME/.cache/vigil/ha/venv}"
HA_PORT="${HA_PORT:-8123}"
CONFIG="${1:?usage: start.sh CONFIG_DIR}"
URL="http://127.0.0.1:$HA_PORT"
TIMEOUT=240

say() { echo "[ha/start] $*" >&2; }

if [[ ! -x "$HA_VENV/bin/hass" ]]; then
    say "no Home Assistant in $HA_VENV: run tests/ha/install.sh"
    exit 1
fi
mkdir -p "$CONFIG"

# No default_config: nothing that discovers, phones home or reaches the internet. The location is
# set, so onboarding has nothing to look up; the STUN server handed to WebRTC clients is loopback.
if [[ ! -f "$CONFIG/configuration.yaml" ]]; then
    cat >"$CONFIG/configuration.yaml" <<YAML
homeassistant:
  name: Vigil test
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  currency: EUR
  language: en
  webrtc:
    ice_servers:
      - url: "stun:127.0.0.1:3478"
http:
  server_host: 127.0.0.1
  server_port: $HA_PORT
api:
websocket_api:
onboarding:
auth:
config:
camera:
logger:
  default: info
  logs:
    homeassistant.components.mqtt: debug
YAML
    if [[ -n "${HA_EXTRA_YAML:-}" ]]; then cat "$HA_EXTRA_YAML" >>"$CONFIG/configuration.yaml"; fi
fi

# Its own session: a Ctrl-C at the caller's terminal does not reach it; the caller stops it by pid.
setsid "$HA_VENV/bin/hass" --config "$CONFIG" --skip-pip --log-file "$CONFIG/home-assistant.log" \
    >"$CONFIG/hass.out" 2>&1 </dev/null &
pid=$!

# /api/onboarding answers without a login as soon as the HTTP server is up.
deadline=$(( SECONDS + TIMEOUT ))
answers() {
    "$HA_VENV/bin/python" - "$URL/api/onboarding" 2>/dev/null <<'PY'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PY
}
until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        say "hass exited; the end of its output:"
        tail -n 40 "$CONFIG/hass.out" >&2
        exit 1
    fi
    if (( SECONDS > deadline )); then
        say "no answer from $URL after $TIMEOUT s; stopping hass"
        kill "$pid"
        exit 1
    fi
    sleep 0.5
done
say "up at $URL after $SECONDS s"
echo "pid=$pid url=$URL"
