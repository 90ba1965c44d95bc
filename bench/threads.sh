#!/usr/bin/env bash
# CPU per thread of a running process, over a window: which of Vigil's threads (GStreamer
# streaming threads are named after their element or task, tokio's are tokio-runtime-w) spend
# the CPU. Reads /proc/PID/task/*/stat twice.
#
#   bench/threads.sh PID [SECONDS]        (default 20 s)
#
# Prints one line per thread name (threads of one name added up), in CPU-seconds per minute,
# most first, then the total.
set -euo pipefail
pid="$1"
window="${2:-20}"
ticks="$(getconf CLK_TCK)"

sample() {
    local stat
    for stat in /proc/"$pid"/task/*/stat; do
        # comm may hold spaces: it is between the first '(' and the last ')'.
        sed -E 's/^[0-9]+ \((.*)\) [A-Za-z] (.*)$/\1|\2/' "$stat" 2>/dev/null \
            | awk -F'|' -v tid="${stat//[^0-9]/}" '{ split($2, f, " "); print tid "|" $1 "|" f[11] + f[12] }'
    done
}

before="$(sample)"
sleep "$window"
after="$(sample)"
awk -F'|' -v window="$window" -v ticks="$ticks" '
    NR == FNR { start[$1] = $3; next }
    { used = $3 - ($1 in start ? start[$1] : 0); name[$2] += used; total += used }
    END {
        scale = 60 / window / ticks
        for (n in name) if (name[n] > 0) printf "%8.3f  %s\n", name[n] * scale, n
        printf "%8.3f  total (CPU-s/min)\n", total * scale
    }' <(echo "$before") <(echo "$after") | sort -rn
