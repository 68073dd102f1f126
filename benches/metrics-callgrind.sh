#!/usr/bin/env bash
# Cost of recording metrics, in instructions per request: deterministic,
# unlike wall-clock runs on a shared machine. Runs the release binary under
# callgrind with metrics off and on, for N1 and N2 HTTP/1.1 requests of a
# 1 KiB file (h2load --h1, 10 connections), and reports
# (I(N2) - I(N1)) / (N2 - N1) for each, so start-up cost cancels out.
# Needs valgrind and h2load (nghttp2-client). Usage: benches/metrics-callgrind.sh [N1 N2]
# RUCHY_BIN=path measures another build (no cargo build then), for
# before/after comparisons of a change.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n1=${1:-2000}
n2=${2:-8000}
for tool in valgrind h2load curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install valgrind nghttp2-client curl)" >&2; exit 1; }
done
bin=${RUCHY_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    bin=$root/target/release/ruchy-serve
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/www"
head -c 1024 /dev/zero | tr '\0' x >"$work/www/1k.html"
port=19080
for m in off on; do
    addr='""'
    [ "$m" = on ] && addr='"127.0.0.1:19898"'
    printf 'root = "%s/www"\nworkers = 1\nallow_root = true\n[[listen]]\naddress = "127.0.0.1:%s"\n[log]\naccess_log = "off"\nlevel = "warn"\n[metrics]\naddress = %s\n' \
        "$work" "$port" "$addr" >"$work/$m.toml"
done
instructions() { # mode requests
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1.$2" "$bin" --config "$work/$1.toml" 2>/dev/null &
    local pid=$!
    for _ in $(seq 1 150); do curl -s -o /dev/null "http://127.0.0.1:$port/1k.html" && break; sleep 0.2; done
    h2load --h1 -n "$2" -c 10 -t 1 "http://127.0.0.1:$port/1k.html" | grep -q "$2 succeeded"
    kill -TERM "$pid"
    wait "$pid" || true
    sed -n 's/^totals: //p' "$work/cg.$1.$2"
}
declare -A per
for m in off on; do
    a=$(instructions "$m" "$n1")
    b=$(instructions "$m" "$n2")
    per[$m]=$(((b - a) / (n2 - n1)))
    echo "metrics $m: $a instructions at $n1 requests, $b at $n2: ${per[$m]} per request"
done
awk -v off="${per[off]}" -v on="${per[on]}" \
    'BEGIN { printf "recording costs %d instructions per request: %.1f%% of %d\n", on - off, (on - off) * 100 / off, off }'
