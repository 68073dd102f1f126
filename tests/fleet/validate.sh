#!/usr/bin/env bash
# The shipped balancer configurations, exactly as in deploy/, checked by the
# real programs: `nginx -t` (the site file included in a minimal nginx.conf)
# and `haproxy -c`. fleet.py then runs them with their addresses rewritten.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/nginx.conf" <<CONF
pid $work/nginx.pid;
error_log $work/error.log;
events { }
http { include $PWD/deploy/nginx/ruchy-serve.conf; }
CONF
nginx -t -q -c "$work/nginx.conf" -p "$work"
echo "ok: nginx -t deploy/nginx/ruchy-serve.conf"
haproxy -c -q -f deploy/haproxy/haproxy.cfg
echo "ok: haproxy -c deploy/haproxy/haproxy.cfg"
