#!/usr/bin/env bash
# Builds the Debian package, installs it on this machine with dpkg -i, and
# checks what an operator would: the binary runs, the shipped configuration
# passes `ruchy-serve check`, the config file is a conffile, the units, man
# page and completions are where Debian looks for them, the system user
# exists. Then removes the package again (purge).
set -euo pipefail
cd "$(dirname "$0")/../.."
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
deb=$(tests/package/build.sh | tail -n 1)
echo "tests/package/check.sh: built $deb" >&2
pass=0
fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1" >&2; fail=$((fail + 1)); }
$sudo dpkg -i "$deb" >/dev/null
trap '$sudo dpkg --purge ruchy-serve >/dev/null 2>&1 || true' EXIT
/usr/bin/ruchy-serve --version | grep -q '^ruchy-serve ' && ok "ruchy-serve --version" || bad "--version"
if out=$(/usr/bin/ruchy-serve check --config /etc/ruchy-serve/ruchy-serve.toml 2>&1); then
    ok "check passes: $out"
else
    bad "check --config /etc/ruchy-serve/ruchy-serve.toml: $out"
fi
grep -qx /etc/ruchy-serve/ruchy-serve.toml /var/lib/dpkg/info/ruchy-serve.conffiles && ok "config is a conffile" || bad "conffile"
for f in /lib/systemd/system/ruchy-serve.service /lib/systemd/system/ruchy-serve.socket \
    /lib/systemd/system/ruchy-serve-metrics.socket /usr/share/man/man1/ruchy-serve.1.gz \
    /usr/share/bash-completion/completions/ruchy-serve /usr/share/zsh/vendor-completions/_ruchy-serve \
    /usr/share/fish/vendor_completions.d/ruchy-serve.fish /usr/share/doc/ruchy-serve/README.md; do
    [ -s "$f" ] && ok "$f" || bad "missing $f"
done
zcat /usr/share/man/man1/ruchy-serve.1.gz | grep -q '^\.TH' && ok "man page is roff" || bad "man page"
zcat /usr/share/man/man5/ruchy-serve.toml.5.gz | grep -q 'files.settle_time' && ok "ruchy-serve.toml(5) documents the keys" || bad "ruchy-serve.toml(5)"
grep -q 'ruchy-serve' /usr/share/bash-completion/completions/ruchy-serve && ok "bash completion" || bad "bash completion"
getent passwd ruchy-serve >/dev/null && ok "system user ruchy-serve" || bad "system user"
[ -f /srv/www/index.html ] && ok "/srv/www exists" || bad "/srv/www"
[ "$(stat -c '%U:%G %a' /var/log/ruchy-serve)" = "ruchy-serve:adm 2750" ] && ok "/var/log/ruchy-serve for the access log" || bad "/var/log/ruchy-serve: $(stat -c '%U:%G %a' /var/log/ruchy-serve 2>&1)"
grep -qx /etc/logrotate.d/ruchy-serve /var/lib/dpkg/info/ruchy-serve.conffiles && ok "logrotate config is a conffile" || bad "logrotate conffile"
if command -v logrotate >/dev/null; then
    out=$(logrotate -d /etc/logrotate.d/ruchy-serve 2>&1) && ! grep -qi error <<<"$out" && ok "logrotate accepts /etc/logrotate.d/ruchy-serve" || bad "logrotate -d: $out"
fi
version=$(systemctl --version | awk 'NR == 1 { print $2 }')
dropin=/etc/systemd/system/ruchy-serve.service.d/10-before-systemd-253.conf
if [ "$version" -lt 253 ]; then
    grep -qx 'Type=notify' "$dropin" && grep -q '^ExecReload=/bin/kill -HUP' "$dropin" &&
        ok "systemd $version: drop-in with Type=notify and ExecReload" || bad "no drop-in for systemd $version"
    out=$(systemd-analyze verify /lib/systemd/system/ruchy-serve.service 2>&1 | grep -v 'notify-reload' || true)
    [ -z "$out" ] && ok "systemd-analyze verify with the drop-in" || bad "verify: $out"
else
    [ ! -e "$dropin" ] && ok "systemd $version: no drop-in needed" || bad "drop-in written for systemd $version"
fi
echo "package: $pass passed, $fail failed"
[ "$fail" = 0 ]
