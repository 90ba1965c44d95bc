#!/usr/bin/env bash
# Cross-builds Vigil's release binary for aarch64 (every Raspberry Pi running Home Assistant OS)
# and runs it under qemu-user: `vigil --version`, `check-config`, `detect` on a cry clip with the
# aarch64 ONNX Runtime, and `vigil run` with the demo camera, whose RTSP restream a native client
# plays. CI runs it; on its own:
#
#   scripts/check-aarch64.sh              build, then run the checks
#   scripts/check-aarch64.sh --build      build only (the binary's path is printed)
#
# How, on an amd64 Debian bookworm machine with no internet but Debian's apt, PyPI and crates.io
# (so no `rustup target add`): Debian's rustc-web (a rustc, amd64) compiles, with its own
# version's standard library for aarch64 taken from the arm64 libstd-rust-web-dev package and
# given by --sysroot to the target's crates only (build scripts and proc-macros use rustc-web's
# amd64 std); cargo is rustup's. gcc-aarch64-linux-gnu links against an arm64 sysroot: Debian's
# arm64 GStreamer development and runtime packages and their dependencies, resolved by apt with
# a private state directory (the machine's dpkg is not touched: multiarch cannot install them
# beside the amd64 ones) and unpacked into a folder. The sysroot and the std are cached under
# ~/.cache/vigil/aarch64, keyed by a stamp of the package list (bump SYSROOT_VERSION to take
# Debian's updates) and by rustc-web's version; the build goes to target/aarch64-cross.
#
# Environment: VIGIL_CACHE (default ~/.cache/vigil), VIGIL_AARCH64_RTSP_PORT (default: a free
# port), VIGIL_AARCH64_KEEP=1 keeps the run's temporary folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HERE="$PWD"
CACHE="${VIGIL_CACHE:-$HOME/.cache/vigil}/aarch64"
TRIPLE=aarch64-unknown-linux-gnu
MULTIARCH=aarch64-linux-gnu

# What the sysroot holds: the build's -dev packages (scripts/install-deps.sh's BUILD_PACKAGES
# for arm64) and what `vigil run` loads (its RUNTIME_PACKAGES), with libc6-dev to link against.
SYSROOT_VERSION=2
SYSROOT_PACKAGES=(
    libc6-dev libstdc++6
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
    libgstreamer-plugins-bad1.0-0
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice gstreamer1.0-x
    libgstrtspserver-1.0-0
)

say() { echo "[check-aarch64] $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

build_only=0
case "${1:-}" in
    --build) build_only=1 ;;
    "") ;;
    *) say "usage: $0 [--build]"; exit 2 ;;
esac

bash scripts/install-deps.sh cross

# apt for arm64 with its own state: package lists, cache and an empty dpkg status.
APT_DIR="$CACHE/apt"
APT_ARM64=(
    apt-get -q -o Dir::State="$APT_DIR/state" -o Dir::State::status="$APT_DIR/status"
    -o Dir::Cache="$APT_DIR/cache" -o APT::Architecture=arm64 -o APT::Architectures::=arm64
    -o APT::Install-Recommends=false -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)"
)
apt_arm64() { "${APT_ARM64[@]}" "$@"; }
apt_arm64_update() {
    [[ -f "$APT_DIR/.updated" ]] && return
    mkdir -p "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial"
    : > "$APT_DIR/status"
    say "apt: the arm64 package lists (private state in $APT_DIR)"
    apt_arm64 update -qq >/dev/null
    touch "$APT_DIR/.updated"
}

# Absolute symlinks inside an unpacked tree point at the host; make them relative.
relative_links() {
    local root="$1" link dest
    while IFS= read -r -d '' link; do
        dest="$(readlink "$link")"
        ln -sfn "$(realpath -sm --relative-to="$(dirname "$link")" "$root$dest")" "$link"
    done < <(find "$root" -type l -lname '/*' -print0)
}

stamp="$(printf '%s\n' "$SYSROOT_VERSION" "${SYSROOT_PACKAGES[@]}" | sha256sum | cut -c1-12)"
SYS="$CACHE/sysroot-$stamp"
sysroot() {
    [[ -f "$SYS/.vigil-sysroot" ]] && return
    local t0 tmp list
    t0="$(now)"
    apt_arm64_update
    tmp="$(mktemp -d "$CACHE/sysroot-tmp.XXXXXX")"
    # What apt would install on an empty arm64 system: package:arch=version, one a line.
    apt_arm64 -s install "${SYSROOT_PACKAGES[@]}" 2>/dev/null \
        | sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([a-z0-9]*\)\]).*/\1:\3=\2/p' \
        > "$tmp/packages"
    [[ -s "$tmp/packages" ]] || die "apt resolved no arm64 packages for the sysroot"
    if list="$(grep -v -E ':(arm64|all)=' "$tmp/packages")"; then
        die "apt picked packages of another architecture for the sysroot: $list"
    fi
    say "sysroot: downloading $(wc -l < "$tmp/packages") arm64 packages"
    mkdir -p "$tmp/debs" "$tmp/root"
    (cd "$tmp/debs" && xargs "${APT_ARM64[@]}" download -qq < "$tmp/packages" >/dev/null) \
        || die "could not download the sysroot's packages"
    say "sysroot: unpacking"
    local deb
    for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
    relative_links "$tmp/root"
    # gstreamer-webrtc-sys links libgstwebrtc-1.0 through pkg-config; Debian ships its .pc file
    # only in libgstreamer-plugins-bad1.0-dev (OpenCV and more): the same shim as install-deps.sh.
    local libdir="$tmp/root/usr/lib/$MULTIARCH" version
    version="$(sed -n 's/^Version: //p' "$libdir/pkgconfig/gstreamer-1.0.pc")"
    ln -sfn libgstwebrtc-1.0.so.0 "$libdir/libgstwebrtc-1.0.so"
    cat > "$libdir/pkgconfig/gstreamer-webrtc-1.0.pc" <<EOF
libdir=/usr/lib/$MULTIARCH
includedir=/usr/include/gstreamer-1.0
Name: gstreamer-webrtc-1.0
Description: GStreamer WebRTC support (link shim written by Vigil's check-aarch64.sh)
Version: $version
Requires: gstreamer-1.0 >= $version, gstreamer-base-1.0 >= $version
Requires.private: gstreamer-sdp-1.0 >= $version
Libs: -L\${libdir} -lgstwebrtc-1.0
Cflags: -I\${includedir}
EOF
    # What dpkg's maintainer scripts would have done: the BLAS and LAPACK alternatives (libav's
    # plugin needs libblas.so.3).
    ln -sfn blas/libblas.so.3 "$libdir/libblas.so.3"
    ln -sfn lapack/liblapack.so.3 "$libdir/liblapack.so.3"
    # qemu-user 7.2 shows the guest the host's x86 /proc/cpuinfo, where ONNX Runtime's cpuinfo
    # finds no ARM processor and crashes (SIGSEGV); qemu -L serves this one instead: two
    # Cortex-A72 cores, a Raspberry Pi 4. A real aarch64 machine has its own.
    mkdir -p "$tmp/root/proc"
    local i
    for i in 0 1; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
        printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done > "$tmp/root/proc/cpuinfo"
    cp "$tmp/packages" "$tmp/root/.vigil-packages"
    rm -rf "$SYS"
    mv "$tmp/root" "$SYS"
    rm -rf "$tmp"
    touch "$SYS/.vigil-sysroot"
    say "sysroot: $SYS ($(du -sh "$SYS" | cut -f1)) in $(since "$t0") s"
}

# rustc-web's own version of the standard library, for aarch64.
RUSTC_WEB=/usr/bin/rustc
rust_std() {
    local version
    version="$(dpkg-query -W -f='${Version}' rustc-web)"
    RUST_SYS="$CACHE/rust-std-$version/usr"
    [[ -f "$RUST_SYS/.vigil-rust-std" ]] && return
    apt_arm64_update
    local tmp
    tmp="$(mktemp -d "$CACHE/rust-std-tmp.XXXXXX")"
    say "rust: libstd-rust-web-dev:arm64 $version"
    (cd "$tmp" && apt_arm64 download -qq "libstd-rust-web-dev:arm64=$version") \
        || die "no libstd-rust-web-dev:arm64 of rustc-web's version $version (apt-get update?)"
    dpkg-deb -x "$tmp"/libstd-rust-web-dev_*.deb "$tmp/root"
    [[ -d "$tmp/root/usr/lib/rustlib/$TRIPLE/lib" ]] || die "no $TRIPLE std in libstd-rust-web-dev"
    ln -sfn /usr/lib/rustlib/x86_64-unknown-linux-gnu "$tmp/root/usr/lib/rustlib/x86_64-unknown-linux-gnu"
    rm -rf "$CACHE/rust-std-$version"
    mv "$tmp/root" "$CACHE/rust-std-$version"
    rm -rf "$tmp"
    touch "$RUST_SYS/.vigil-rust-std"
}

mkdir -p "$CACHE"
sysroot
# The build sees the sysroot through a link that keeps its name, so a new sysroot (another
# stamp) does not rebuild every crate; older sysroots go.
ln -sfn "$(basename "$SYS")" "$CACHE/sysroot"
find "$CACHE" -maxdepth 1 -name 'sysroot-*' ! -name "$(basename "$SYS")" -exec rm -rf {} +
SYS="$CACHE/sysroot"
rust_std
[[ "$("$RUSTC_WEB" --version)" == rustc\ 1.9[6-9]* ]] || die "$RUSTC_WEB is not rustc-web 1.96+"

# The build: rustup's cargo, rustc-web, a target directory of its own.
OUT="$HERE/target/aarch64-cross"
BIN="$OUT/$TRIPLE/release/vigil"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER
export RUSTC="$RUSTC_WEB" CARGO_TARGET_DIR="$OUT"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--sysroot=$RUST_SYS -C link-arg=--sysroot=$SYS"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CFLAGS_aarch64_unknown_linux_gnu="--sysroot=$SYS"
export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_SYSROOT_DIR="$SYS"
export PKG_CONFIG_LIBDIR="$SYS/usr/lib/$MULTIARCH/pkgconfig:$SYS/usr/share/pkgconfig"
say "building the release binary for $TRIPLE ($("$RUSTC_WEB" --version), $(cargo --version))"
t0="$(now)"
cargo build --release --locked --bin vigil --target "$TRIPLE"
say "built $BIN in $(since "$t0") s"
file -b "$BIN" | grep -q 'ARM aarch64' || die "$BIN is not an aarch64 executable: $(file -b "$BIN")"
if [[ $build_only -eq 1 ]]; then echo "$BIN"; exit 0; fi

# The runs, under qemu-user with the sysroot as the guest's /. GStreamer loads the plugins in
# the process (no arm64 plugin scanner to fork through binfmt), with a registry of its own.
ORT_LIB="${VIGIL_ORT_AARCH64_DIR:-$HOME/.cache/vigil/aarch64/ort}/libonnxruntime.so"
[[ -f "$ORT_LIB" ]] || die "no aarch64 ONNX Runtime at $ORT_LIB (scripts/install-deps.sh cross)"
RUN="$(mktemp -d /tmp/vigil-aarch64.XXXXXX)"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    if [[ "${VIGIL_AARCH64_KEEP:-0}" == 1 ]]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
export QEMU_LD_PREFIX="$SYS"
export GST_PLUGIN_SYSTEM_PATH="$SYS/usr/lib/$MULTIARCH/gstreamer-1.0"
export GST_PLUGIN_SCANNER="$SYS/usr/lib/$MULTIARCH/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner"
export GST_REGISTRY="$RUN/registry.bin" GST_REGISTRY_FORK=no
export ORT_DYLIB_PATH="$ORT_LIB"
unset SUPERVISOR_TOKEN SUPERVISOR_URL
vigil() { qemu-aarch64-static "$BIN" "$@"; }

say "vigil --version"
version="$(vigil --version)" || die "vigil --version failed under qemu"
[[ "$version" == "vigil $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ]] \
    || die "vigil --version said '$version'"

free_ports() {
    python3 -c 'import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'
}
read -r rtsp_port web_port api_port < <(free_ports)
rtsp_port="${VIGIL_AARCH64_RTSP_PORT:-$rtsp_port}"
cat > "$RUN/vigil.yaml" <<EOF
# No cameras: the built-in demo camera.
cameras: []
rtsp_port: $rtsp_port
web_port: $web_port
api_port: $api_port
EOF
say "vigil check-config"
vigil check-config --config "$RUN/vigil.yaml" > "$RUN/check-config.txt" \
    || die "vigil check-config failed: $(cat "$RUN/check-config.txt")"
grep -q "^rtsp_port: $rtsp_port" "$RUN/check-config.txt" || die "check-config did not print the options"

clip=tests/fixtures/audio/cry_09_tired.wav
say "vigil detect $clip (ONNX Runtime for aarch64)"
t0="$(now)"
vigil detect "$clip" > "$RUN/detect.txt" 2>&1 || die "vigil detect failed: $(tail -5 "$RUN/detect.txt")"
detect_secs="$(since "$t0")"
grep -q '^1 crying episode' "$RUN/detect.txt" \
    || die "vigil detect found no single crying episode in $clip: $(tail -5 "$RUN/detect.txt")"
say "detect: $(grep -A1 '^1 crying episode' "$RUN/detect.txt" | tail -1 | sed 's/^ *//') in $detect_secs s"

# vigil run with the demo camera; a native client (ffmpeg) plays the restream.
say "vigil run (demo camera; RTSP on $rtsp_port)"
t0="$(now)"
mkdir -p "$RUN/data"
qemu-aarch64-static "$BIN" run --config "$RUN/vigil.yaml" --data-dir "$RUN/data" > "$RUN/run.log" 2>&1 &
pid=$!
url="rtsp://127.0.0.1:$rtsp_port/demo"
# The restream answers 503 until the camera's first frame: ask until a frame comes.
first=""
for _ in $(seq 120); do
    kill -0 "$pid" 2>/dev/null || die "vigil run exited: $(tail -20 "$RUN/run.log")"
    if timeout 20 ffmpeg -nostdin -hide_banner -loglevel error -rtsp_transport tcp -i "$url" \
        -map 0:v -c copy -frames:v 1 -f null - 2>/dev/null; then
        first="$(since "$t0")"
        break
    fi
    sleep 0.5
done
[[ -n "$first" ]] || die "no video frame from $url within a minute: $(tail -20 "$RUN/run.log")"
if grep -q 'Failed to load plugin' "$RUN/run.log"; then
    die "a GStreamer plugin did not load: $(grep 'Failed to load plugin' "$RUN/run.log")"
fi
# A client's own first frame, then a few seconds of play; Vigil's CPU over them.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
c0="$(cpu_ticks)"
t1="$(now)"
timeout 20 ffmpeg -nostdin -hide_banner -loglevel error -rtsp_transport tcp -i "$url" \
    -map 0:v -c copy -frames:v 1 -f null - || die "a second client got no frame from $url"
client_first="$(since "$t1")"
frames=45
t2="$(now)"
timeout 30 ffmpeg -nostdin -hide_banner -nostats -rtsp_transport tcp -i "$url" -map 0:v -c copy \
    -frames:v "$frames" -f framemd5 "$RUN/frames.md5" 2> "$RUN/ffmpeg.log" \
    || die "the restream did not play $frames frames: $(tail -5 "$RUN/ffmpeg.log")"
play_secs="$(since "$t2")"
got="$(grep -c '^0,' "$RUN/frames.md5" || true)"
[[ "$got" -eq "$frames" ]] || die "the restream gave $got video frames, not $frames"
grep -q 'Video: h264' "$RUN/ffmpeg.log" || die "the restream's video is not H.264: $(grep Stream "$RUN/ffmpeg.log")"
c1="$(cpu_ticks)"
cpu="$(awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v t="$(since "$t1")" \
    'BEGIN { printf "%.0f", 100 * c / hz / t }')"
rss="$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")"
say "run: first restream frame $first s after start; a new client's first frame in $client_first s; $frames frames in $play_secs s; vigil (qemu) ${cpu}% of one core, RSS $rss MiB"
t1="$(now)"
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && die "vigil run did not stop within 10 s of SIGTERM"
code=0
wait "$pid" || code=$?
pid=""
[[ $code -eq 0 ]] || die "vigil run exited with $code after SIGTERM: $(tail -5 "$RUN/run.log")"
say "stopped $(since "$t1") s after SIGTERM"
say "OK: vigil for $TRIPLE built and ran under qemu (detect $detect_secs s, first frame $first s)"
