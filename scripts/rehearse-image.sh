#!/usr/bin/env bash
# Rehearses the add-on image without Docker: the Dockerfile's runtime stage replayed in a Debian
# bookworm root (debootstrap --variant=minbase), then, chrooted, the add-on's s6 `run` script
# with a /data/options.json (no cameras: the demo camera) and a stand-in Supervisor. Checks that
# the demo camera restreams (a client on the host plays it), that the API's snapshot, stream.mp4
# and WebRTC answer work (parsers, decoder, AAC, libnice), that vigil-healthcheck passes inside
# the root and that SIGTERM stops Vigil within 5 s. So the runtime profile of install-deps.sh
# installs every library and GStreamer plugin the binary loads. CI runs it; on its own (root):
#
#   scripts/rehearse-image.sh                       the rehearsal
#   scripts/rehearse-image.sh --without PLUGIN.so   the same with that plugin deleted from the
#                                                   root after the install: must FAIL, naming it
#   scripts/rehearse-image.sh --self-test           runs both: the rehearsal passes, and it
#                                                   fails without libgstnice.so
#
# What stands in for what cannot run here: the base image (ghcr.io/home-assistant/base-debian)
# is a debootstrap root with what that image adds that Vigil's scripts use (bash, jq, curl,
# ca-certificates) and two small stand-ins, /command/with-contenv (s6-overlay) and bashio (only
# bashio::log.*); the Supervisor is a Python http.server answering /addons/self/info and
# /services/mqtt as it does. The binary: target/debug/vigil (VIGIL_REHEARSE_BIN to change it),
# the one CI's tests have just built. It is not the image's release build, but it links the same
# libraries and loads the same plugins, which is what this checks; building a release binary
# would add about 10 minutes on a 2-core CI machine.
#
# Cached under ~/.cache/vigil/rehearsal: the debootstrap root (a tarball keyed by ROOT_VERSION
# and the mirror) and the root after install-deps.sh runtime (keyed also by that script's sha256).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HERE="$PWD"
CACHE="${VIGIL_CACHE:-$HOME/.cache/vigil}/rehearsal"
ROOT_VERSION=1
# What the base image has that the run script, the health check and install-deps.sh use.
BASE_PACKAGES=bash,jq,curl,ca-certificates

say() { echo "[rehearse-image] $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

without=""
case "${1:-}" in
    "") ;;
    --without)
        without="${2:?--without needs a plugin file name, such as libgstnice.so}"
        ;;
    --self-test)
        bash "$0" || die "the rehearsal failed"
        say "self-test: the rehearsal must fail without libgstnice.so"
        if out="$(bash "$0" --without libgstnice.so 2>&1)"; then
            echo "$out" >&2
            die "the rehearsal passed with libgstnice.so removed: it would not catch a missing plugin"
        fi
        echo "$out" | grep -E 'FAILED.*(nice|libgstnice)' >&2 \
            || { echo "$out" | tail -20 >&2; die "the failure without libgstnice.so does not name it"; }
        say "self-test OK: without libgstnice.so the rehearsal fails and says so"
        exit 0
        ;;
    *) say "usage: $0 [--without PLUGIN.so | --self-test]"; exit 2 ;;
esac
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"

bash scripts/install-deps.sh cross
BIN="${VIGIL_REHEARSE_BIN:-$HERE/target/debug/vigil}"
if [[ -z "${VIGIL_REHEARSE_BIN:-}" ]]; then
    say "cargo build --bin vigil (debug, as the tests build it)"
    cargo build --locked --bin vigil
fi
[[ -x "$BIN" ]] || die "no Vigil binary at $BIN"
ORT_LIB=/usr/local/lib/vigil/libonnxruntime.so
[[ -f "$ORT_LIB" ]] || bash scripts/install-deps.sh build

# The mirror this machine's apt uses (the first Debian URI), unless VIGIL_DEBIAN_MIRROR says.
mirror="${VIGIL_DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null | grep -E '^(URIs:|deb) ' | grep -oE 'https?://[^ ]*/debian/?( |$)' \
    | tr -d ' ' | head -1 || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"

mkdir -p "$CACHE"
base_stamp="$(printf '%s\n' "$ROOT_VERSION" "$mirror" "$BASE_PACKAGES" | sha256sum | cut -c1-12)"
BASE_TAR="$CACHE/bookworm-minbase-$base_stamp.tar.gz"
RUNTIME_TAR="$CACHE/bookworm-runtime-$base_stamp-$(sha256sum scripts/install-deps.sh | cut -c1-12).tar.gz"

ROOT="$(mktemp -d /tmp/vigil-rehearsal.XXXXXX)"
SUP_DIR="$(mktemp -d /tmp/vigil-supervisor.XXXXXX)"
pid="" sup_pid=""
mounted=()
mount_in() { mkdir -p "$ROOT$2"; mount "${@:3}" "$1" "$ROOT$2"; mounted+=("$ROOT$2"); }
unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
    done
    mounted=()
}
cleanup() {
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
    [[ -n "$sup_pid" ]] && kill "$sup_pid" 2>/dev/null
    unmount_all
    if [[ "${VIGIL_REHEARSE_KEEP:-0}" == 1 ]]; then
        say "kept $ROOT"
    elif ! grep -q " $ROOT" /proc/mounts; then
        rm -rf "$ROOT"
    else
        say "not removing $ROOT: still mounted"
    fi
    rm -rf "$SUP_DIR"
}
trap cleanup EXIT
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
mounts() {
    mount_in /proc /proc -t proc
    mount_in sysfs /sys -t sysfs
    # /dev alone, not recursively: unmounting a recursive bind can take the host's /dev/pts along.
    mount_in /dev /dev --bind
    mount_in tmpfs /run -t tmpfs
    mount_in tmpfs /tmp -t tmpfs
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
}

# 1. The base: Debian bookworm minbase plus what the base image adds.
if [[ ! -f "$BASE_TAR" ]]; then
    t0="$(now)"
    say "debootstrap --variant=minbase bookworm from $mirror (once; cached in $BASE_TAR)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$ROOT" "$mirror" \
        > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
    # The same suites as the host and the base image: bookworm, its updates and security.
    rm -f "$ROOT/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/" 2>/dev/null \
        || echo "deb $mirror bookworm main" > "$ROOT/etc/apt/sources.list"
    in_root apt-get clean
    tar -C "$ROOT" -czf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$ROOT" && mkdir "$ROOT"
    say "base root in $(since "$t0") s ($(du -h "$BASE_TAR" | cut -f1))"
fi

# 2. The runtime stage: `bash /tmp/install-deps.sh runtime`, as the Dockerfile runs it.
t0="$(now)"
if [[ -f "$RUNTIME_TAR" ]]; then
    tar -C "$ROOT" -xzf "$RUNTIME_TAR"
    mounts
    say "runtime root from the cache ($(basename "$RUNTIME_TAR")) in $(since "$t0") s"
else
    tar -C "$ROOT" -xzf "$BASE_TAR"
    # As in Debian's container images: packages do not start their daemons.
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
    chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
    mounts
    say "install-deps.sh runtime in the root"
    install -m 0644 scripts/install-deps.sh "$ROOT/tmp/install-deps.sh"
    in_root bash -o pipefail -c 'bash /tmp/install-deps.sh runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh' \
        || die "install-deps.sh runtime failed in the root"
    in_root apt-get clean
    unmount_all
    find "$CACHE" -maxdepth 1 -name "bookworm-runtime-$base_stamp-*.tar.gz" -delete
    tar -C "$ROOT" -czf "$RUNTIME_TAR.tmp" . && mv "$RUNTIME_TAR.tmp" "$RUNTIME_TAR"
    mounts
    say "runtime root in $(since "$t0") s (cached as $(basename "$RUNTIME_TAR"))"
fi

# The Dockerfile's COPY lines: ONNX Runtime, the binary, the models (sha256 checked), addon/rootfs.
install -D -m 0644 "$ORT_LIB" "$ROOT/usr/local/lib/vigil/libonnxruntime.so"
install -D -m 0755 "$BIN" "$ROOT/usr/bin/vigil"
mkdir -p "$ROOT/usr/share/vigil"
cp -r models "$ROOT/usr/share/vigil/models"
model_sha="$(grep -oE '[0-9a-f]{64}  /usr/share/vigil/models/yamnet.onnx' Dockerfile)"
[[ -n "$model_sha" ]] || die "no model sha256 in the Dockerfile"
echo "$model_sha" | in_root sha256sum -c --quiet - || die "the model's sha256 differs from the Dockerfile's"
in_root /usr/bin/vigil --version > /dev/null || die "vigil --version fails in the root (a missing library?)"
cp -a addon/rootfs/. "$ROOT/"

if [[ -n "$without" ]]; then
    plugin="$(find "$ROOT/usr/lib" -name "$without" -path '*gstreamer-1.0*' | head -1)"
    [[ -n "$plugin" ]] || die "no $without in the root to remove"
    say "removing ${plugin#"$ROOT"} (the check must now fail)"
    rm -f "$plugin"
fi

# The base image's s6-overlay and bashio, as far as the run script uses them.
mkdir -p "$ROOT/command"
cat > "$ROOT/command/with-contenv" <<'EOF'
#!/bin/bash
# Stand-in for s6-overlay's with-contenv (rehearse-image.sh): the container's environment is
# this process's own.
exec "$@"
EOF
cat > "$ROOT/usr/bin/bashio" <<'EOF'
#!/usr/bin/env bash
# Stand-in for bashio (rehearse-image.sh): only its log functions, then the script.
bashio::log() { printf '[%s] %s: %s\n' "$(date +%T)" "$1" "${*:2}"; }
bashio::log.info() { bashio::log INFO "$@"; }
bashio::log.warning() { bashio::log WARNING "$@"; }
bashio::log.error() { bashio::log ERROR "$@"; }
# shellcheck disable=SC1090
source "$@"
EOF
chmod 0755 "$ROOT/command/with-contenv" "$ROOT/usr/bin/bashio"

# The Supervisor's stand-in: the add-on's own info, and no MQTT broker installed.
cat > "$SUP_DIR/supervisor.py" <<'EOF'
import http.server, json, sys
TOKEN = sys.argv[2]
class Supervisor(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            print(self.command, self.path, "refused: wrong token", flush=True)
            return self.reply(401, {"result": "error", "message": "401: Unauthorized"})
        print(self.command, self.path, flush=True)
        if self.path == "/addons/self/info":
            return self.reply(200, {"result": "ok", "data": {"name": "Vigil", "slug": "local_vigil", "version": "0.1.0", "state": "started"}})
        if self.path == "/services/mqtt":
            return self.reply(400, {"result": "error", "message": "Service not enabled"})
        return self.reply(502, {"result": "error", "message": "no Home Assistant core in the rehearsal"})
    do_POST = do_GET
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Supervisor).serve_forever()
EOF
read -r sup_port rtsp_port web_port api_port < <(python3 -c 'import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
token="rehearsal-$RANDOM$RANDOM"
python3 "$SUP_DIR/supervisor.py" "$sup_port" "$token" > "$SUP_DIR/requests.log" 2>&1 &
sup_pid=$!

# /data/options.json: config.yaml's defaults, no cameras, free ports.
mkdir -p "$ROOT/data"
cat > "$ROOT/data/options.json" <<EOF
{"cameras": [], "cry_threshold": 0.5, "rtsp_port": $rtsp_port, "web_port": $web_port,
 "api_port": $api_port, "webrtc_ice_servers": [], "mqtt": {}, "log_level": "info"}
EOF

# 3. The add-on's service, chrooted, as s6 starts it.
say "starting the s6 run script (RTSP $rtsp_port, panel $web_port, API $api_port)"
t0="$(now)"
chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SUPERVISOR_TOKEN="$token" SUPERVISOR_URL="http://127.0.0.1:$sup_port" \
    /etc/s6-overlay/s6-rc.d/vigil/run > "$ROOT/tmp/vigil.log" 2>&1 &
pid=$!
log() { cat "$ROOT/tmp/vigil.log"; }
# The first words that name a missing plugin or library, for the failure message.
missing() { log | grep -iE "missing|no such element|not found|failed to load|cannot open shared" | head -5; }
# Vigil warns at start of each GStreamer element it cannot find.
missing_elements() { log | grep -oE "GStreamer element '[^']+' is missing" | sort -u | tr '\n' ' '; }
fail() {
    say "Vigil's log:"
    log | tail -30 >&2
    local elements
    elements="$(missing_elements)"
    die "$1${2:+: $2}${elements:+ (Vigil says: $elements)}"
}

url="rtsp://127.0.0.1:$rtsp_port/demo"
first=""
for _ in $(seq 120); do
    kill -0 "$pid" 2>/dev/null || fail "the run script exited" "$(missing)"
    if timeout 10 ffmpeg -nostdin -hide_banner -loglevel error -rtsp_transport tcp -i "$url" \
        -map 0:v -c copy -frames:v 1 -f null - 2>/dev/null; then
        first="$(since "$t0")"
        break
    fi
    sleep 0.5
done
[[ -n "$first" ]] || fail "no video from $url within a minute" "$(missing)"
log | grep -q 'Starting Vigil' || fail "the run script did not log its start through bashio"
say "the demo camera restreams: first frame $first s after the run script started"
frames=30
timeout 30 ffmpeg -nostdin -hide_banner -nostats -rtsp_transport tcp -i "$url" -map 0:v -map 0:a \
    -c copy -frames:v "$frames" -f framemd5 "$SUP_DIR/frames.md5" 2> "$SUP_DIR/ffmpeg.log" \
    || fail "the restream did not play" "$(tail -3 "$SUP_DIR/ffmpeg.log")"
[[ "$(grep -c '^0,' "$SUP_DIR/frames.md5")" -eq "$frames" ]] || fail "fewer than $frames video frames"
grep -q '^1,' "$SUP_DIR/frames.md5" || fail "the restream sent no audio"
grep -q 'Audio: aac' "$SUP_DIR/ffmpeg.log" || fail "the restream's audio is not AAC" "$(grep Stream "$SUP_DIR/ffmpeg.log")"

# The API, from inside the root as Home Assistant would ask it: a snapshot (H.264 decoder, JPEG
# encoder), stream.mp4 (MP4 muxer, AAC) and a WebRTC answer (webrtcbin, libnice, Opus).
api="http://127.0.0.1:$api_port/api"
in_root curl -fsS --max-time 30 -o /tmp/frame.jpeg "$api/frame.jpeg?src=demo" \
    || fail "no snapshot from $api/frame.jpeg" "$(missing)"
[[ "$(head -c 2 "$ROOT/tmp/frame.jpeg" | od -An -tx1 | tr -d ' ')" == ffd8 ]] || fail "the snapshot is not a JPEG"
in_root curl -sS --max-time 4 -o /tmp/stream.mp4 "$api/stream.mp4?src=demo" || true
grep -q ftyp "$ROOT/tmp/stream.mp4" 2>/dev/null || fail "no MP4 from $api/stream.mp4" "$(missing)"
cat > "$ROOT/tmp/offer.sdp" <<'EOF'
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic: WMS
m=video 9 UDP/TLS/RTP/SAVPF 102
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:rHrs
a=ice-pwd:y5Vd9GoGzXO1W6tYEuXAj8yY
a=ice-options:trickle
a=fingerprint:sha-256 9E:BC:40:15:E3:AF:9B:22:9C:1F:B7:E4:2C:AC:28:B1:5B:3C:25:DE:FA:C5:54:3C:9F:6A:0A:BD:F8:6A:2B:1B
a=setup:actpass
a=mid:0
a=recvonly
a=rtcp-mux
a=rtpmap:102 H264/90000
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:rHrs
a=ice-pwd:y5Vd9GoGzXO1W6tYEuXAj8yY
a=ice-options:trickle
a=fingerprint:sha-256 9E:BC:40:15:E3:AF:9B:22:9C:1F:B7:E4:2C:AC:28:B1:5B:3C:25:DE:FA:C5:54:3C:9F:6A:0A:BD:F8:6A:2B:1B
a=setup:actpass
a=mid:1
a=recvonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
EOF
in_root curl -sS --max-time 30 -o /tmp/answer.sdp -w '%{http_code}' -H 'Content-Type: application/sdp' \
    --data-binary @/tmp/offer.sdp "$api/webrtc?src=demo" > "$SUP_DIR/webrtc.status" || true
status="$(cat "$SUP_DIR/webrtc.status")"
[[ "$status" == 201 ]] || fail "the WebRTC offer got HTTP $status" "$(head -c 300 "$ROOT/tmp/answer.sdp" 2>/dev/null; echo; missing)"
grep -q '^a=candidate' "$ROOT/tmp/answer.sdp" || fail "the WebRTC answer has no ICE candidate (libnice)"
grep -qi 'opus/48000' "$ROOT/tmp/answer.sdp" || fail "the WebRTC answer has no Opus audio"
say "the API answers: snapshot, stream.mp4, a WebRTC answer with candidates"

in_root /usr/local/bin/vigil-healthcheck || fail "vigil-healthcheck failed inside the root"
say "vigil-healthcheck passes"
# SUPERVISOR_TOKEN and SUPERVISOR_URL reached Vigil through the run script: it asked for MQTT.
grep -q '^GET /services/mqtt$' "$SUP_DIR/requests.log" \
    || fail "Vigil did not ask the stand-in Supervisor for /services/mqtt with its token" \
        "$(cat "$SUP_DIR/requests.log")"
if log | grep -iE "Failed to load plugin|no element|missing plugin|GStreamer element '[^']+' is missing"; then
    fail "Vigil's log names a missing plugin"
fi

t1="$(now)"
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "Vigil did not stop within 5 s of SIGTERM"
code=0
wait "$pid" || code=$?
pid=""
stop="$(since "$t1")"
[[ $code -eq 0 ]] || fail "Vigil exited with $code after SIGTERM"
say "SIGTERM: stopped in $stop s (exit 0)"
say "Supervisor stand-in was asked: $(sort -u "$SUP_DIR/requests.log" | tr '\n' ';')"
say "OK: the image's runtime stage runs the add-on (first frame $first s, stop $stop s)"
