#!/usr/bin/env bash
# The monitoring kit in deploy/: promtool validates the scrape config and the
# alert rules and runs the rules' unit tests; the Grafana dashboard must be
# JSON whose queries only use metrics ruchy-serve exports. Prints
# "N passed, N failed".
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root/deploy"
passed=0
failed=0
run() { # name, command...
    local name=$1
    shift
    if out=$("$@" 2>&1); then
        echo "ok: $name"
        passed=$((passed + 1))
    else
        echo "FAILED: $name"
        echo "$out"
        failed=$((failed + 1))
    fi
}
run "promtool check config" promtool check config prometheus/prometheus.yml
run "promtool check rules" promtool check rules prometheus/rules.yml
run "promtool test rules" promtool test rules prometheus/rules_test.yml
run "dashboard queries name exported metrics" python3 - grafana/ruchy-serve-dashboard.json <<'PY'
import json, re, sys
known = {"http_requests_total", "http_request_duration_seconds_bucket", "http_response_body_bytes_total",
         "http_connections_open", "ruchy_serve_config_reloads_total", "ruchy_serve_config_generation", "ruchy_serve_tls_handshakes_total",
         "ruchy_serve_tls_certificate_expiry_timestamp_seconds", "up"}
dash = json.load(open(sys.argv[1]))
for p in dash["panels"]:
    for t in p["targets"]:
        for name in re.findall(r"([a-z_]+)\{", t["expr"]):
            if name not in known:
                sys.exit(f"panel {p['title']!r} uses unknown metric {name}")
PY
echo "monitoring: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
