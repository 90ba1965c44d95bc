#!/usr/bin/env bash
# Installs what Vigil needs, for one or more profiles. Idempotent, and quick when all is there.
#
#   scripts/install-deps.sh [build] [runtime] [test] [cross] [all]     (default: all)
#
#   build    what compiling needs: GStreamer development files, the gstreamer-webrtc-1.0
#            pkg-config shim, and the ONNX Runtime shared library (loaded at run time; the image
#            copies it from its build stage)
#   runtime  the GStreamer plugins Vigil uses at run time
#   test     what the tests start: mosquitto, Chromium, ffmpeg/ffprobe, openssl (test
#            certificates), shellcheck, hadolint and the add-on linter's Python packages, and
#            Home Assistant core (tests/ha/install.sh: a pinned core in a cached venv)
#   cross    what scripts/check-aarch64.sh and scripts/rehearse-image.sh need (not in `all`):
#            Debian's rustc-web (its arm64 std comes from apt there), gcc-aarch64-linux-gnu,
#            qemu-user-static, debootstrap, ffmpeg (the restream's client), and the aarch64
#            ONNX Runtime library in VIGIL_ORT_AARCH64_DIR
#
# Environment:
#   VIGIL_ORT_DIR   where libonnxruntime.so goes (default /usr/local/lib/vigil)
#   VIGIL_ORT_AARCH64_DIR   the aarch64 one, for `cross` (default ~/.cache/vigil/aarch64/ort)
#   VIGIL_TOOLS     venv for the Python test tools (default ~/.cache/vigil/tools)
#
# The Dockerfile and CI both run this script, so what CI proves is what the image gets.
set -euo pipefail

ORT_VERSION=1.32.0
# sha256 of the cp311 manylinux_2_28 wheels on PyPI; the shared library inside is what we keep.
ORT_SHA256_x86_64=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
ORT_SHA256_aarch64=2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c
ORT_DIR="${VIGIL_ORT_DIR:-/usr/local/lib/vigil}"
ORT_AARCH64_DIR="${VIGIL_ORT_AARCH64_DIR:-$HOME/.cache/vigil/aarch64/ort}"
TOOLS="${VIGIL_TOOLS:-$HOME/.cache/vigil/tools}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "[install-deps] $*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

BUILD_PACKAGES=(
    pkg-config ca-certificates
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
    # libgstwebrtc-1.0.so.0 itself (its -dev package would pull in OpenCV: see webrtc_pkgconfig)
    libgstreamer-plugins-bad1.0-0
)
RUNTIME_PACKAGES=(
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice gstreamer1.0-x
    libgstrtspserver-1.0-0 ca-certificates
    # cry clips are named in local time: the Supervisor's TZ needs the zone files
    tzdata
)
TEST_PACKAGES=(
    mosquitto mosquitto-clients chromium ffmpeg shellcheck gstreamer1.0-tools
    iproute2 util-linux procps python3-venv nftables openssl
    # tests/flv.rs fetches stream.mp4 and snapshots as bytes
    curl
)
CROSS_PACKAGES=(
    rustc-web gcc-aarch64-linux-gnu qemu-user-static debootstrap ffmpeg file curl python3
)

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || echo "$p"
    done
}

apt_install() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if [[ ${#missing[@]} -eq 0 ]]; then return; fi
    say "apt: installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

multiarch() { echo "$(uname -m)-linux-gnu"; }

# gstreamer-webrtc-sys links libgstwebrtc-1.0 through pkg-config. Debian ships the .pc file only
# in libgstreamer-plugins-bad1.0-dev, which drags in OpenCV (+600 MB); a pkg-config file and the
# unversioned link are all the build needs.
webrtc_pkgconfig() {
    local arch libdir pcdir version
    arch="$(multiarch)"
    libdir="/usr/local/lib/$arch"
    pcdir="/usr/local/lib/$arch/pkgconfig"
    if pkg-config --exists gstreamer-webrtc-1.0 2>/dev/null; then return; fi
    version="$(pkg-config --modversion gstreamer-1.0)"
    say "writing the gstreamer-webrtc-1.0 pkg-config shim ($version) in $pcdir"
    as_root mkdir -p "$pcdir"
    as_root ln -sf "/usr/lib/$arch/libgstwebrtc-1.0.so.0" "$libdir/libgstwebrtc-1.0.so"
    as_root tee "$pcdir/gstreamer-webrtc-1.0.pc" >/dev/null <<EOF
libdir=$libdir
includedir=/usr/include/gstreamer-1.0
Name: gstreamer-webrtc-1.0
Description: GStreamer WebRTC support (link shim written by Vigil's install-deps.sh)
Version: $version
Requires: gstreamer-1.0 >= $version, gstreamer-base-1.0 >= $version
Requires.private: gstreamer-sdp-1.0 >= $version
Libs: -L\${libdir} -lgstwebrtc-1.0
Cflags: -I\${includedir}
EOF
    pkg-config --exists gstreamer-webrtc-1.0 \
        || { say "pkg-config still cannot find gstreamer-webrtc-1.0"; exit 1; }
}

# The ONNX Runtime shared library, from the `onnxruntime` wheel on PyPI (ort loads it at run time):
#   onnxruntime_lib [machine [dir]]   (default: this machine's, in ORT_DIR)
onnxruntime_lib() {
    local machine="${1:-$(uname -m)}" dir="${2:-$ORT_DIR}"
    local marker="$dir/.onnxruntime-$ORT_VERSION" sha platform tmp wheel
    if [[ -f "$marker" && -f "$dir/libonnxruntime.so" ]]; then return; fi
    case "$machine" in
        x86_64) sha="$ORT_SHA256_x86_64" ;;
        aarch64 | arm64) machine=aarch64; sha="$ORT_SHA256_aarch64" ;;
        *) say "no onnxruntime wheel for $machine (amd64 and aarch64 only)"; exit 1 ;;
    esac
    platform="manylinux_2_28_$machine"
    local pip=()
    if python3 -m pip --version >/dev/null 2>&1; then
        pip=(python3 -m pip)
    else
        apt_install python3-pip
        pip=(python3 -m pip)
    fi
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    say "downloading onnxruntime $ORT_VERSION ($platform) from PyPI"
    "${pip[@]}" download -q --no-deps --only-binary=:all: --platform "$platform" \
        --python-version 3.11 --implementation cp -d "$tmp" "onnxruntime==$ORT_VERSION"
    wheel="$(ls "$tmp"/onnxruntime-*.whl)"
    echo "$sha  $wheel" | sha256sum -c --quiet - \
        || { say "onnxruntime wheel checksum mismatch"; exit 1; }
    python3 - "$wheel" "$tmp" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so.")]
    if len(names) != 1:
        sys.exit(f"expected one libonnxruntime.so.* in the wheel, found {names}")
    with z.open(names[0]) as src, open(sys.argv[2] + "/libonnxruntime.so", "wb") as dst:
        dst.write(src.read())
EOF
    as_root mkdir -p "$dir"
    as_root install -m 0644 "$tmp/libonnxruntime.so" "$dir/libonnxruntime.so"
    as_root touch "$marker"
    say "onnxruntime $ORT_VERSION ($machine) in $dir/libonnxruntime.so"
}

python_tools() {
    local stamp="$TOOLS/.vigil-tools-2"
    if [[ -f "$stamp" ]]; then return; fi
    say "python test tools in $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q -r "$HERE/scripts/test-tools.txt"
    touch "$stamp"
}

# The end-to-end tests' Home Assistant core. Its tests are never skipped: if it cannot be
# installed, the install fails.
home_assistant() {
    # mobile_app: the MQTT end-to-end test registers a phone to receive the blueprint's
    # notification (its PyNaCl is not among the integrations install.sh always covers).
    HA_INTEGRATIONS=mobile_app bash "$HERE/tests/ha/install.sh" \
        || { say "Home Assistant core could not be installed (tests/ha/install.sh)"; exit 1; }
}

profiles=("$@")
[[ ${#profiles[@]} -eq 0 ]] && profiles=(all)
want() { local p; for p in "${profiles[@]}"; do [[ $p == "$1" || $p == all ]] && return 0; done; return 1; }
for p in "${profiles[@]}"; do
    case "$p" in
        build | runtime | test | cross | all) ;;
        *) say "unknown profile '$p' (build, runtime, test, cross, all)"; exit 2 ;;
    esac
done

t0=$(date +%s)
packages=()
want build && packages+=("${BUILD_PACKAGES[@]}")
want runtime && packages+=("${RUNTIME_PACKAGES[@]}")
want test && packages+=("${TEST_PACKAGES[@]}")
# `cross` is asked for by name only: `all` is what a developer's tests need.
want_cross() { local p; for p in "${profiles[@]}"; do [[ $p == cross ]] && return 0; done; return 1; }
want_cross && packages+=("${CROSS_PACKAGES[@]}")
apt_install "${packages[@]}"
want build && webrtc_pkgconfig
want build && onnxruntime_lib
want_cross && onnxruntime_lib aarch64 "$ORT_AARCH64_DIR"
if want test; then
    python_tools
    home_assistant
fi
say "ready (${profiles[*]}) in $(( $(date +%s) - t0 )) s"
