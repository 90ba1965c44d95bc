#!/usr/bin/env bash
# Installs the Home Assistant core the end-to-end tests run (tests/common/home_assistant.rs) into
# a cached venv, so that `hass --skip-pip` starts offline. Quick when it is already there.
#
#   tests/ha/install.sh            (scripts/install-deps.sh test runs it)
#
#   HA_VENV          the venv (default ~/.cache/vigil/ha/venv; the tests read the same variable)
#   HA_PYTHON        a Python 3.13 (default: pyenv's 3.13.x, else python3.13 on PATH)
#   HA_INTEGRATIONS  more integrations whose requirements to install, comma-separated
#
# Pinned: homeassistant 2025.4.4 (the newest checked on Python 3.13) under its own
# package_constraints.txt, and pycares<5 (pycares 5 breaks the aiodns that 2025.4 pins). With
# --skip-pip, Home Assistant installs nothing itself: every requirement of the integrations it
# loads is installed here, read from their manifests with their dependencies followed.
set -euo pipefail

HA_VERSION=2025.4.4
HA_VENV="${HA_VENV:-$HOME/.cache/vigil/ha/venv}"
# What bootstrap always loads, what tests/ha/start.sh's configuration names, and what the tests
# add (mqtt, go2rtc, generic and its stream).
INTEGRATIONS="homeassistant,persistent_notification,logger,network,system_log,frontend,recorder,\
analytics,application_credentials,backup,hardware,system_health,automation,person,scene,script,\
tag,zone,counter,input_boolean,input_button,input_datetime,input_number,input_select,input_text,\
schedule,timer,http,api,websocket_api,onboarding,auth,config,camera,mqtt,go2rtc,stream,generic"
INTEGRATIONS+="${HA_INTEGRATIONS:+,$HA_INTEGRATIONS}"
STAMP="$HA_VENV/.vigil-ha"

say() { echo "[ha/install] $*" >&2; }

wanted="$HA_VERSION $INTEGRATIONS"
if [[ -x "$HA_VENV/bin/hass" && "$(cat "$STAMP" 2>/dev/null)" == "$wanted" ]]; then exit 0; fi
t0=$(date +%s)

# A pyenv shim may exist and still fail, so each candidate must run.
python313() {
    local p
    for p in ${HA_PYTHON:-} "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 \
        "$(command -v python3.13 || true)"; do
        [[ -n $p ]] || continue
        if "$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    say "Home Assistant $HA_VERSION needs Python 3.13: install it with pyenv or set HA_PYTHON"
    return 1
}

if [[ ! -x "$HA_VENV/bin/python" ]]; then
    python="$(python313)"
    say "creating $HA_VENV with $python"
    mkdir -p "$(dirname "$HA_VENV")"
    "$python" -m venv "$HA_VENV"
fi
# uv resolves and installs Home Assistant's few hundred packages about ten times faster than pip.
"$HA_VENV/bin/python" -m pip install -q --disable-pip-version-check uv
install() { "$HA_VENV/bin/python" -m uv pip install -q --python "$HA_VENV/bin/python" "$@"; }

say "homeassistant $HA_VERSION"
install --no-deps "homeassistant==$HA_VERSION"
package="$("$HA_VENV/bin/python" -c \
    'import homeassistant, os; print(os.path.dirname(homeassistant.__file__))')"

# The requirements of every integration named, and of the integrations they depend on.
listed="$("$HA_VENV/bin/python" - "$package/components" "$INTEGRATIONS" <<'PY'
import json, pathlib, sys
components, todo = pathlib.Path(sys.argv[1]), sys.argv[2].split(",")
seen, requirements = set(), set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((components / domain / "manifest.json").read_text())
    requirements.update(manifest.get("requirements", []))
    todo += manifest.get("dependencies", [])
print("\n".join(sorted(requirements)))
PY
)"
mapfile -t requirements <<<"$listed"
say "with the requirements of ${INTEGRATIONS//,/ }"
install -c "$package/package_constraints.txt" "homeassistant==$HA_VERSION" 'pycares<5' \
    "${requirements[@]}"

"$HA_VENV/bin/hass" --version >/dev/null
echo "$wanted" >"$STAMP"
say "ready in $(( $(date +%s) - t0 )) s ($(du -sh "$HA_VENV" | cut -f1))"
