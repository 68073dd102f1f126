#!/usr/bin/env bash
# Instructions per request, counted by callgrind: deterministic, unlike
# wall-clock runs on a shared machine, so a change of a few percent shows.
# Each case runs its server under callgrind for N1 and N2 HTTP/1.1 requests
# (h2load --h1, 10 connections) and reports (I(N2) - I(N1)) / (N2 - N1), so
# start-up and shutdown cancel out. Cases:
#   ruchy-200      ruchy-serve, a cached 1 KiB file, metrics off (w1's path)
#   ruchy-200-m    the same with the metrics listener on
#   ruchy-200-log  the same with the access log to a file (the shipped
#                  default's target: 64 KiB buffer, 1 s flush)
#   ruchy-200-loc  the same with 50 [[locations]] (40 prefixes, 5 globs and
#                  5 regexes; the request is in the `/` prefix, which sets
#                  `files.try`, after every glob and regex has been tried),
#                  issue 26's cost case
#   ruchy-404      ruchy-serve, a missing path (w6's path)
#   ceiling-200    benches/ceiling.rs (bare hyper), the same 1 KiB file
#   ceiling-404    bare hyper's 404
# and "ruchy / ceiling" for 200 and 404: what ruchy-serve's own work adds.
# Counts cover every thread of the process, kernel time not at all.
#
# Usage: benches/callgrind.sh [N1 N2]   (default 2000 8000)
# RUCHY_BIN=path measures another ruchy-serve build (before/after a change).
# Needs valgrind, h2load (nghttp2-client) and curl. Under valgrind, openat2
# answers ENOSYS (valgrind 3.19 does not know it), so cache misses take the
# O_NOFOLLOW walk; the cases here are cache hits and cached 404s.
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
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --features bench-ceiling --bin hyper-ceiling
ceiling=$root/target/release/hyper-ceiling
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
printf 'root = "%s/www"\nworkers = 1\nallow_root = true\n[[listen]]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warn"\naccess_log_path = "%s/access.log"\n[metrics]\naddress = ""\n' \
    "$work" "$port" "$work" >"$work/log.toml"

instructions() { # name path requests command...
    local name=$1 path=$2 n=$3
    shift 3
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name.$n" "$@" 2>"$work/vg.$name.$n" &
    local pid=$!
    for _ in $(seq 1 150); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
    # A first request warms the cache (a miss resolves; hits are measured).
    curl -s -o /dev/null "http://127.0.0.1:$port$path"
    h2load --h1 -n "$n" -c 10 -t 1 "http://127.0.0.1:$port$path" | grep -q " $n done" ||
        { echo "$name: h2load failed" >&2; kill "$pid"; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    local total
    total=$(sed -n 's/^totals: //p' "$work/cg.$name.$n")
    [ -n "$total" ] || { echo "$name: no callgrind totals; valgrind said:" >&2; tail -5 "$work/vg.$name.$n" >&2; exit 1; }
    echo "$total"
}

declare -A per
measure() { # name path command...
    local name=$1 path=$2
    shift 2
    local a b
    a=$(instructions "$name" "$path" "$n1" "$@")
    b=$(instructions "$name" "$path" "$n2" "$@")
    per[$name]=$(((b - a) / (n2 - n1)))
    printf '%-12s %8d instructions per request (%d at %d requests, %d at %d)\n' "$name" "${per[$name]}" "$a" "$n1" "$b" "$n2"
}
measure ruchy-200 /1k.html "$bin" --config "$work/off.toml"
measure ruchy-200-m /1k.html "$bin" --config "$work/on.toml"
measure ruchy-200-log /1k.html "$bin" --config "$work/log.toml"
{
    cat "$work/off.toml"
    for i in $(seq 1 39); do printf '[[locations]]\nprefix = "/section-%s/"\nexpires = "1h"\n' "$i"; done
    printf '[[locations]]\nprefix = "/"\nfiles = { try = ["{path}", "{path}.html"] }\n'
    for i in $(seq 1 5); do printf '[[locations]]\nglob = "**/*.ext%s"\nreturn = 404\n' "$i"; done
    for i in $(seq 1 4); do printf "[[locations]]\nregex = '^/blog/(\\\\d+)/v%s/(.*)\$'\nreturn = 410\n" "$i"; done
    printf "[[locations]]\nregex = '(?i)\\\\.(php|asp)\$'\nreturn = 404\n"
} >"$work/loc.toml"
measure ruchy-200-loc /1k.html "$bin" --config "$work/loc.toml"
measure ruchy-404 /missing.html "$bin" --config "$work/off.toml"
measure ceiling-200 /1k.html "$ceiling" "$work/www" "127.0.0.1:$port"
measure ceiling-404 /missing.html "$ceiling" "$work/www" "127.0.0.1:$port"
awk -v r2="${per[ruchy-200]}" -v rm="${per[ruchy-200-m]}" -v rl="${per[ruchy-200-log]}" -v rc="${per[ruchy-200-loc]}" -v r4="${per[ruchy-404]}" \
    -v c2="${per[ceiling-200]}" -v c4="${per[ceiling-404]}" 'BEGIN {
    printf "ruchy / ceiling: 200 %.2f, 404 %.2f; metrics recording: %d instructions per request (%.1f%%); file access log: %d (%.1f%%); 50 locations: %d (%.1f%%)\n",
        r2 / c2, r4 / c4, rm - r2, (rm - r2) * 100 / r2, rl - r2, (rl - r2) * 100 / r2, rc - r2, (rc - r2) * 100 / r2 }'
