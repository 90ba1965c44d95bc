#!/usr/bin/env bash
# What cry clips cost: CPU and memory of `vigil run` (release) with N fake cameras, with clips
# on and off, first quiet (the pre-roll buffer only), then crying without a pause (a clip being
# written on every camera all the time). Figures go to BENCHMARKS.md ("Cry clips").
#
#   cargo build --release --bin vigil --bin vigil-fake-camera
#   bench/clips.sh [cameras] [seconds per phase]      (default 2 cameras, 60 s)
set -euo pipefail

cameras=${1:-2}
seconds=${2:-60}
repo=$(cd "$(dirname "$0")/.." && pwd)
vigil=$repo/target/release/vigil
fake=$repo/target/release/vigil-fake-camera
cry=$repo/tests/fixtures/audio/cry_03_burping.wav
work=$(mktemp -d /tmp/vigil-bench-clips.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# utime + stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

start_cameras() {
    for i in $(seq "$cameras"); do
        mkfifo "$work/cam$i.in"
        port=$(free_port)
        "$fake" --audio aac --port "$port" <"$work/cam$i.in" >"$work/cam$i.out" 2>/dev/null &
        pids+=($!)
        exec {fd}>"$work/cam$i.in"
        eval "cam${i}_fd=$fd"
        eval "cam${i}_port=$port"
    done
    sleep 2
}

run() { # clips: true|false
    local clips=$1 data=$work/data-$1 options=$work/options-$1.yaml
    mkdir -p "$data"
    {
        echo "rtsp_port: $(free_port)"
        echo "web_port: $(free_port)"
        echo "api_port: $(free_port)"
        echo "clips: $clips"
        echo "log_level: warning"
        echo "cameras:"
        for i in $(seq "$cameras"); do
            eval "port=\$cam${i}_port"
            echo "  - {name: cam$i, url: 'rtsp://127.0.0.1:$port/stream'}"
        done
    } >"$options"
    "$vigil" run --config "$options" --data-dir "$data" >"$work/vigil-$clips.log" 2>&1 &
    local pid=$!
    sleep 20
    local t0 t1 r1 t2 r2
    t0=$(ticks "$pid")
    sleep "$seconds"
    t1=$(ticks "$pid")
    r1=$(kib "$pid" VmRSS)
    # Crying without a pause: every camera plays the 6 s cry again every 5 s.
    local end=$((SECONDS + seconds))
    while ((SECONDS < end)); do
        for i in $(seq "$cameras"); do
            eval "fd=\$cam${i}_fd"
            echo "play $cry" >&"$fd"
        done
        sleep 5
    done
    t2=$(ticks "$pid")
    r2=$(kib "$pid" VmRSS)
    local hz
    hz=$(getconf CLK_TCK)
    awk -v c="$clips" -v n="$cameras" -v s="$seconds" -v hz="$hz" \
        -v q="$((t1 - t0))" -v w="$((t2 - t1))" -v r1="$r1" -v r2="$r2" -v hwm="$(kib "$pid" VmHWM)" \
        'BEGIN { printf "clips=%s cameras=%d  quiet: %.1f %% CPU, RSS %.1f MiB   crying: %.1f %% CPU, RSS %.1f MiB   peak %.1f MiB\n",
                 c, n, 100 * q / hz / s, r1 / 1024, 100 * w / hz / s, r2 / 1024, hwm / 1024 }'
    kill "$pid"
    wait "$pid" || true
    if [ "$clips" = true ]; then
        echo "clips written: $(find "$data/clips" -name '*.mp4' | wc -l), $(du -sh "$data/clips" | cut -f1)"
    fi
}

start_cameras
run false
run true
