#!/usr/bin/env bash
# Static checks of the units in deploy/: `systemd-analyze verify`, and the
# exposure score of `systemd-analyze security --offline=yes` against its
# ceiling (0.8 for the socket-activated unit, 1.5 for the one that binds its
# own ports). Run by tests/run; prints "N passed, N failed".
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RUCHY_SERVE_BIN:-$root/target/debug/ruchy-serve}
[ -x "$bin" ] || { echo "check-units: build first ($bin missing)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$root"/deploy/*.service "$root"/deploy/*.socket "$tmp"/
# verify insists that ExecStart= names an existing executable.
sed -i "s#/usr/bin/ruchy-serve#$bin#g" "$tmp"/*.service

passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }

version=$(systemctl --version | awk 'NR == 1 { print $2 }')
for unit in "$tmp"/*.socket "$tmp"/*.service; do
    name=$(basename "$unit")
    if out=$(cd "$tmp" && systemd-analyze verify "$name" 2>&1); then
        # systemd before 253 does not know Type=notify-reload and says so;
        # the unit documents the Type=notify fallback for it. Anything else fails.
        if [ "$version" -lt 253 ]; then
            out=$(grep -v "Failed to parse service type, ignoring: notify-reload" <<<"$out" || true)
        fi
        if [ -z "$out" ]; then ok "verify $name"; else bad "verify $name: $out"; fi
    else
        bad "verify $name: $out"
    fi
done

score() {
    systemd-analyze security --offline=yes "$1" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
for pair in ruchy-serve.service:0.8 ruchy-serve-standalone.service:1.5; do
    unit=${pair%%:*}
    limit=${pair##*:}
    got=$(cd "$tmp" && score "$unit")
    if [ -n "$got" ] && awk -v g="$got" -v l="$limit" 'BEGIN { exit !(g <= l) }'; then
        ok "security $unit: exposure $got (limit $limit)"
    else
        bad "security $unit: exposure ${got:-unknown} above $limit"
    fi
done

echo "check-units: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
