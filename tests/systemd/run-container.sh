#!/usr/bin/env bash
# The shipped units under a real systemd as PID 1: a Debian 12 container
# (systemd 254 from bookworm-backports, for Type=notify-reload) booted with
# systemd-nspawn, driven with nsenter. Checks socket activation on first
# connection, the journal's structured fields, reload under load, drain on
# stop, restart under load, the watchdog restarting a SIGSTOPped process,
# and ACME against Pebble with the shipped units and drop-in.
#
# The root file system is built once with debootstrap (about a minute) and
# kept in $RUCHY_SERVE_ROOTFS_CACHE (default /var/cache/ruchy-serve-test) so
# later runs boot at once; the booted container and the files copied into it
# are removed on exit. Needs root. Prints "N passed, N failed".
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RUCHY_SERVE_BIN:-$root/target/debug/ruchy-serve}
cache=${RUCHY_SERVE_ROOTFS_CACHE:-/var/cache/ruchy-serve-test}
rootfs=$cache/rootfs-bookworm-systemd254
machine=ruchy-test-$$
log=$(mktemp)

[ -x "$bin" ] || { echo "run-container: $bin missing; build first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run-container: needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }

passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }

# The Debian mirror this machine already uses.
mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{ print $2 }' | grep -v security | head -1 || true)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{ print $2 }' | head -1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_rootfs() {
    local m tmp
    m=$(mirror)
    tmp=$rootfs.partial
    rm -rf "$tmp"
    mkdir -p "$cache"
    echo "run-container: building $rootfs from $m" >&2
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,procps,iproute2 \
        bookworm "$tmp" "$m" >"$log" 2>&1 || { cat "$log"; return 1; }
    echo "deb $m bookworm-backports main" >"$tmp/etc/apt/sources.list.d/backports.list"
    chroot "$tmp" apt-get update -qq >"$log" 2>&1 || { cat "$log"; return 1; }
    DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -qq -t bookworm-backports \
        systemd systemd-sysv >"$log" 2>&1 || { cat "$log"; return 1; }
    chroot "$tmp" apt-get clean
    mv "$tmp" "$rootfs"
}

[ -x "$rootfs/lib/systemd/systemd" ] || build_rootfs

# Install what a package would: binary, units, config, a served tree. The
# access logs of an earlier run (the root file system is cached) go first.
rm -rf "$rootfs/var/log/ruchy-serve" "$rootfs/var/log/private/ruchy-serve" \
    "$rootfs/var/lib/ruchy-serve" "$rootfs/var/lib/private/ruchy-serve"
install -m 0755 "$bin" "$rootfs/usr/bin/ruchy-serve"
cp "$root/deploy/ruchy-serve.service" "$root/deploy/ruchy-serve.socket" "$root/deploy/ruchy-serve-metrics.socket" "$rootfs/etc/systemd/system/"
mkdir -p "$rootfs/etc/systemd/system/ruchy-serve.service.d" "$rootfs/etc/ruchy-serve" "$rootfs/srv/www"
# A short watchdog so the SIGSTOP check takes seconds, not minutes.
printf '[Service]\nWatchdogSec=2s\n' >"$rootfs/etc/systemd/system/ruchy-serve.service.d/test.conf"
sed 's#^root = .*#root = "/srv/www"#' "$root/config/ruchy-serve.toml" >"$rootfs/etc/ruchy-serve/ruchy-serve.toml"
echo "hello from the container" >"$rootfs/srv/www/index.html"
head -c 67108864 /dev/urandom >"$rootfs/srv/www/large.bin"
chmod -R a+rX "$rootfs/srv/www"

cleanup() {
    if [ -n "${pid1:-}" ] && kill -0 "$pid1" 2>/dev/null; then
        nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do kill -0 "$pid1" 2>/dev/null || break; sleep 0.1; done
    fi
    [ -n "${nspawn:-}" ] && kill "$nspawn" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$rootfs/etc/systemd/system/ruchy-serve."* "$rootfs/etc/systemd/system/ruchy-serve-https.socket" \
        "$rootfs/var/lib/ruchy-serve" "$rootfs/var/lib/private/ruchy-serve" "$rootfs/usr/local/bin/pebble"* \
        "$rootfs/etc/ruchy-serve" "$rootfs/srv/www" \
        "$rootfs/usr/bin/ruchy-serve" "$log" "$rootfs/var/log/ruchy-serve" "$rootfs/var/log/private/ruchy-serve"
}
trap cleanup EXIT

SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q -D "$rootfs" -M "$machine" \
    --register=no --keep-unit --private-network -b >"$log.boot" 2>&1 &
nspawn=$!
pid1=""
for _ in $(seq 1 100); do
    pid1=$(ps --ppid "$nspawn" -o pid= 2>/dev/null | head -1 | tr -d ' ' || true)
    [ -n "$pid1" ] && timeout 30 nsenter -t "$pid1" -a systemctl is-system-running --wait >/dev/null 2>&1 && break
    sleep 0.1
done
[ -n "$pid1" ] || { cat "$log.boot"; echo "run-container: container did not boot" >&2; exit 1; }
rm -f "$log.boot"
inside() { nsenter -t "$pid1" -a "$@"; }
prop() { inside systemctl show -P "$2" "$1"; }

echo "run-container: booted $(inside systemctl --version | head -1) in $machine (PID 1 is $pid1 on the host)"

# 1. Socket activation: the first connection starts the service.
inside systemctl start ruchy-serve.socket ruchy-serve-metrics.socket
if [ "$(prop ruchy-serve.service ActiveState)" = inactive ]; then ok "service idle until the first connection"; else bad "service started before any connection"; fi
body=$(inside curl -sS --max-time 10 http://127.0.0.1/ || true)
if [ "$body" = "hello from the container" ]; then ok "first connection served"; else bad "first connection: '$body'"; fi
if [ "$(prop ruchy-serve.service ActiveState)" = active ]; then ok "service active after the first connection"; else bad "service state $(prop ruchy-serve.service ActiveState)"; fi

# Metrics through the third socket.
metrics=$(inside curl -sS --max-time 10 http://127.0.0.1:9898/metrics || true)
if grep -q '^http_requests_total{code="200",listener="systemd:http",method="GET",site="default"} 1$' <<<"$metrics"; then ok "metrics socket serves /metrics"; else bad "metrics: $(head -c 300 <<<"$metrics")"; fi
ready=$(inside curl -s --max-time 10 -o /dev/null -w '%{http_code}' http://127.0.0.1:9898/readyz || true)
if [ "$ready" = 200 ]; then ok "/readyz is 200 when serving"; else bad "/readyz $ready"; fi

# 2. The shipped configuration writes the access log to
# /var/log/ruchy-serve/access.log (LogsDirectory=), flushed within 1 s, not to
# the journal; SIGUSR1 as logrotate's postrotate sends it moves new lines to
# a new file.
alog=/var/log/ruchy-serve/access.log
inside curl -sS -o /dev/null "http://127.0.0.1/index.html?file-check-$$"
sleep 1.5
if inside grep -q "GET /index.html?file-check-$$ HTTP/1.1\" 200" "$alog"; then ok "access log in $alog"; else bad "no line in $alog: $(inside ls -la /var/log/ruchy-serve/ 2>&1)"; fi
if [ "$(inside journalctl -u ruchy-serve -o cat --no-pager | grep -c "file-check-$$" || true)" = 0 ]; then ok "access log not in the journal"; else bad "access line in the journal"; fi
inside mv "$alog" "$alog.1"
inside systemctl kill --kill-whom=main --signal=USR1 ruchy-serve.service
sleep 0.5
inside curl -sS -o /dev/null "http://127.0.0.1/index.html?after-rotation-$$"
sleep 1.5
if inside grep -q "after-rotation-$$" "$alog" && ! inside grep -q "after-rotation-$$" "$alog.1"; then
    ok "SIGUSR1 reopened the access log"
else
    bad "after SIGUSR1: $(inside ls -la /var/log/ruchy-serve/ 2>&1)"
fi

# Load for the next checks: a bounded loop inside the container, one request
# per connection, counting failures.
load() { # $1 = requests
    inside sh -c "ok=0; fail=0; i=0; while [ \$i -lt $1 ]; do
        if [ \"\$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' http://127.0.0.1/)\" = 200 ]; then ok=\$((ok+1)); else fail=\$((fail+1)); fi
        i=\$((i+1)); done; echo \"\$ok \$fail\""
}

# 3. Reload under steady load (Type=notify-reload: systemctl waits for READY=1).
load 1500 >"$log.load" &
loader=$!
reloads=0
for _ in $(seq 1 10); do
    inside systemctl reload ruchy-serve && reloads=$((reloads + 1))
    sleep 0.2
done
wait "$loader"
read -r lok lfail <"$log.load"
if [ "$reloads" = 10 ] && [ "$lfail" = 0 ] && [ "$lok" = 1500 ]; then
    ok "10 reloads under load: $lok requests, $lfail failed"
else
    bad "reload under load: $reloads reloads, $lok ok, $lfail failed"
fi
# This boot's only (-b): the root file system, and with it a persistent
# journal, is kept between runs.
journal() { inside journalctl -b -u ruchy-serve --no-pager -o cat; }
# (grep -c, not -q: with pipefail, grep -q closing the pipe early fails journalctl.)
if [ "$(journal | grep -c "reloaded: serving /srv/www")" -ge 10 ]; then ok "reload logged"; else bad "no reload in the journal"; fi

# 4. Restart under load: the socket keeps queueing, nothing is refused.
load 1000 >"$log.load" &
loader=$!
sleep 0.3
inside systemctl restart ruchy-serve
wait "$loader"
read -r lok lfail <"$log.load"
if [ "$lfail" = 0 ]; then ok "restart under load: $lok requests, $lfail failed"; else bad "restart under load: $lok ok, $lfail failed"; fi

# 5. Stop drains: a slow 64 MiB download in flight completes byte-exact.
want=$(sha256sum "$rootfs/srv/www/large.bin" | cut -d' ' -f1)
inside sh -c 'curl -s --limit-rate 20M -o /tmp/large.bin -w "%{http_code}" http://127.0.0.1/large.bin > /tmp/large.code' &
downloader=$!
sleep 1
inside systemctl stop ruchy-serve
wait "$downloader" || true
got=$(inside sha256sum /tmp/large.bin | cut -d' ' -f1)
code=$(inside cat /tmp/large.code)
if [ "$code" = 200 ] && [ "$got" = "$want" ]; then ok "stop drained a 64 MiB download byte-exact"; else bad "drain: code $code, sha $got vs $want"; fi
result=$(prop ruchy-serve.service Result)
if [ "$result" = success ]; then ok "stop ended cleanly (Result=success)"; else bad "stop Result=$result"; fi
if [ "$(journal | grep -c "drained: all connections closed")" -ge 1 ]; then ok "drain logged"; else bad "no drain in the journal"; fi

# 6. Watchdog: a frozen process is killed and restarted.
inside curl -s -o /dev/null http://127.0.0.1/
before=$(prop ruchy-serve.service MainPID)
restarts=$(prop ruchy-serve.service NRestarts)
inside kill -STOP "$before"
after=$before
for _ in $(seq 1 100); do
    sleep 0.2
    after=$(prop ruchy-serve.service MainPID)
    if [ "$after" != "$before" ] && [ "$after" != 0 ] && [ "$(prop ruchy-serve.service ActiveState)" = active ]; then break; fi
done
if [ "$after" != "$before" ] && [ "$(prop ruchy-serve.service NRestarts)" -gt "$restarts" ]; then
    ok "watchdog restarted the frozen process ($before -> $after)"
else
    bad "watchdog: MainPID $before -> $after, NRestarts $(prop ruchy-serve.service NRestarts)"
fi
body=$(inside curl -sS --max-time 10 http://127.0.0.1/ || true)
if [ "$body" = "hello from the container" ]; then ok "serving again after the watchdog restart"; else bad "after restart: '$body'"; fi
# 7. With the file turned off (an empty access_log_path), the journal has
# the access log's structured fields at PRIORITY 6.
printf '[Service]\nEnvironment=RUCHY_SERVE_LOG__ACCESS_LOG_PATH=\n' >"$rootfs/etc/systemd/system/ruchy-serve.service.d/journal.conf"
inside systemctl daemon-reload
inside systemctl restart ruchy-serve
inside curl -sS -o /dev/null "http://127.0.0.1/index.html?journal-check-$$"
sleep 0.5
entry=$(inside journalctl -u ruchy-serve -o json --no-pager | grep "journal-check-$$" | tail -1 || true)
missing=""
for field in '"HTTP_STATUS":"200"' '"HTTP_METHOD":"GET"' "\"REQUEST_PATH\":\"/index.html?journal-check-$$\"" '"REMOTE_ADDR":"127.0.0.1"' '"DURATION_US":' '"PRIORITY":"6"' '"SYSLOG_IDENTIFIER":"ruchy-serve"'; do
    grep -qF "$field" <<<"$entry" || missing="$missing $field"
done
if [ -z "$missing" ]; then ok "journal entry has structured fields"; else bad "journal entry lacks$missing: $entry"; fi

# 8. ACME with the shipped units: ruchy-serve.service plus the shipped
# deploy/ruchy-serve-acme.conf drop-in (network to the CA; everything else
# kept), StateDirectory=ruchy-serve, the HTTPS socket. The CA is Debian's
# Pebble run inside the container (its HTTP-01 validation connects to port
# 80, the socket unit), with pebble-challtestsrv as its DNS.
rm -f "$rootfs/etc/systemd/system/ruchy-serve.service.d/journal.conf"
pb=$rootfs/etc/ruchy-serve/pebble
mkdir -p "$pb"
cp /usr/bin/pebble /usr/bin/pebble-challtestsrv "$rootfs/usr/local/bin/"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pb/ca.key" -out "$pb/ca.pem" \
    -days 2 -subj "/CN=container test CA" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pb/pebble.key" -out "$pb/pebble.csr" \
    -subj "/CN=localhost" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$pb/ext.cnf"
openssl x509 -req -in "$pb/pebble.csr" -CA "$pb/ca.pem" -CAkey "$pb/ca.key" -CAcreateserial -out "$pb/pebble.pem" \
    -days 2 -extfile "$pb/ext.cnf" >/dev/null 2>&1
chmod a+r "$pb"/*
cat >"$pb/pebble.json" <<'JSON'
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
 "certificate": "/etc/ruchy-serve/pebble/pebble.pem", "privateKey": "/etc/ruchy-serve/pebble/pebble.key",
 "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
inside sh -c 'nohup /usr/local/bin/pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 127.0.0.1:8053 \
    -http01 "" -https01 "" -tlsalpn01 "" -management 127.0.0.1:8055 >/root/challtestsrv.log 2>&1 &'
inside sh -c 'PEBBLE_VA_NOSLEEP=1 nohup /usr/local/bin/pebble -strict -config /etc/ruchy-serve/pebble/pebble.json \
    -dnsserver 127.0.0.1:8053 >/root/pebble.log 2>&1 &'
for _ in $(seq 1 50); do inside grep -q "ACME directory available" /root/pebble.log 2>/dev/null && break; sleep 0.1; done
cp "$root/deploy/ruchy-serve-https.socket" "$rootfs/etc/systemd/system/"
cp "$root/deploy/ruchy-serve-acme.conf" "$rootfs/etc/systemd/system/ruchy-serve.service.d/acme.conf"
printf '[Unit]\nRequires=ruchy-serve-https.socket\nAfter=ruchy-serve-https.socket\n[Service]\nSockets=ruchy-serve-https.socket\n' \
    >"$rootfs/etc/systemd/system/ruchy-serve.service.d/https.conf"
sed -e 's#^directory = ""#directory = "https://127.0.0.1:14000/dir"#' \
    -e 's#^agree_to_terms = false#agree_to_terms = true\nca_root = "/etc/ruchy-serve/pebble/ca.pem"#' \
    -e 's#^root = .*#root = "/srv/www"#' "$root/config/ruchy-serve.toml" >"$rootfs/etc/ruchy-serve/ruchy-serve.toml"
printf '\n[[listen]]\naddress = "systemd:https"\ntls = true\n\n[[sites]]\nnames = ["acme.example.com"]\nroot = "/srv/www"\nacme = true\n' \
    >>"$rootfs/etc/ruchy-serve/ruchy-serve.toml"
inside systemctl daemon-reload
inside systemctl stop ruchy-serve
inside systemctl start ruchy-serve-https.socket ruchy-serve
got_cert=""
for _ in $(seq 1 300); do
    if [ "$(journal | grep -c "ACME: certificate obtained")" -ge 1 ]; then got_cert=yes; break; fi
    sleep 0.1
done
if [ -n "$got_cert" ]; then ok "ACME certificate obtained under the shipped units (HTTP-01 over the socket unit)"; else bad "no ACME certificate: $(journal | tail -5)"; fi
inside sh -c 'curl -sSk https://127.0.0.1:15000/roots/0 >/root/pebble-root.pem'
body=$(inside curl -sS --max-time 10 --cacert /root/pebble-root.pem --resolve acme.example.com:443:127.0.0.1 https://acme.example.com/ || true)
if [ "$body" = "hello from the container" ]; then ok "HTTPS with the ACME certificate, verified against the CA"; else bad "HTTPS with the ACME certificate: '$body'"; fi
modes=$(inside sh -c 'stat -c %a /var/lib/private/ruchy-serve; stat -c %a /var/lib/private/ruchy-serve/acme/*/acme.example.com/key.pem' | tr '\n' ' ')
if [ "$modes" = "700 600 " ]; then ok "state directory 0700, key 0600"; else bad "state modes: '$modes'"; fi
inside systemctl restart ruchy-serve
inside curl -s -o /dev/null --cacert /root/pebble-root.pem --resolve acme.example.com:443:127.0.0.1 https://acme.example.com/ || true
sleep 1
orders=$(journal | grep -c "ACME: ordering" || true)
issued=$(inside grep -c "Issued certificate serial" /root/pebble.log || true)
if [ "$orders" = 1 ] && [ "$issued" = 1 ]; then ok "restart reused the stored certificate (1 order, 1 issued)"; else bad "after restart: $orders orders, $issued issued"; fi
if [ "$(prop ruchy-serve.service PrivateNetwork)" = no ] && [ "$(prop ruchy-serve.service ProtectSystem)" = strict ] && [ "$(prop ruchy-serve.service DynamicUser)" = yes ]; then
    ok "hardening kept with the ACME drop-in (only the network lifted)"
else
    bad "hardening: PrivateNetwork=$(prop ruchy-serve.service PrivateNetwork) ProtectSystem=$(prop ruchy-serve.service ProtectSystem)"
fi
inside pkill -f /usr/local/bin/pebble || true
rm -rf "$rootfs/usr/local/bin/pebble" "$rootfs/usr/local/bin/pebble-challtestsrv"

rm -f "$log.load"

echo "run-container: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
