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
SYSROOT_VERSION=1
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
