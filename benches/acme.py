#!/usr/bin/env python3
"""Time to a first ACME certificate, and behaviour with the CA down:
ruchy-serve against Caddy (Debian's `caddy`), both against the same Pebble
(Debian's `pebble`, -strict, PEBBLE_VA_NOSLEEP=1, pebble-challtestsrv as its
DNS so validation really connects back to the server under test).

    benches/acme.py [--runs 5] [--down-seconds 30] [--bin target/release/ruchy-serve]

Each run starts the server on a fresh state directory, on the same two
ports Pebble validates (HTTP-01 on one, TLS-ALPN-01 on the other), and
measures from the process start to the server's own "certificate obtained"
log line; runs alternate between the servers; medians are reported. Then
each server is started with the CA's address closed for --down-seconds:
how many orders it attempted, when, and what it logged. Writes a Markdown
report to stdout. Needs: pebble, caddy, openssl (apt-get install pebble
caddy openssl).
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proc:
    """A child whose stdout+stderr lines are kept with their arrival time."""

    def __init__(self, argv, env=None, cwd=None):
        self.start = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})}, cwd=cwd, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append((time.monotonic() - self.start, line.rstrip("\n")))

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, l in list(self.lines):
                if re.search(pattern, l):
                    return t, l
            time.sleep(0.01)
        return None

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def pki(d):
    def run(*a):
        subprocess.run(a, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2", "-subj", "/CN=bench CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{d}/pebble.key", "-out", f"{d}/pebble.csr", "-subj", "/CN=localhost")
    with open(f"{d}/ext.cnf", "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", f"{d}/pebble.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
        "-CAcreateserial", "-out", f"{d}/pebble.pem", "-days", "2", "-extfile", f"{d}/ext.cnf")


def ruchy_config(d, state, http, https, directory, name):
    path = f"{d}/ruchy-{name}.toml"
    with open(path, "w") as f:
        f.write(f'''root = "{d}/www"
allow_root = true
[[listen]]
address = "127.0.0.1:{http}"
[[listen]]
address = "127.0.0.1:{https}"
tls = true
[metrics]
address = ""
[log]
access_log = "off"
[acme]
directory = "{directory}"
agree_to_terms = true
ca_root = "{d}/ca.pem"
state_dir = "{state}"
contact = ["mailto:ops@example.com"]
[[sites]]
names = ["{name}"]
root = "{d}/www"
acme = true
''')
    return path


def caddy_config(d, state, http, https, directory, name):
    path = f"{d}/Caddyfile-{name}"
    with open(path, "w") as f:
        f.write(f'''{{
    acme_ca {directory}
    acme_ca_root {d}/ca.pem
    email ops@example.com
    http_port {http}
    https_port {https}
    storage file_system {state}
    admin off
}}
{name} {{
    root * {d}/www
    file_server
}}
''')
    return path


def start(server, binary, d, http, https, directory, name):
    state = tempfile.mkdtemp(dir=d)
    if server == "ruchy-serve":
        cfg = ruchy_config(d, state, http, https, directory, name)
        return Proc([binary, "--config", cfg])
    cfg = caddy_config(d, state, http, https, directory, name)
    return Proc(["caddy", "run", "--adapter", "caddyfile", "--config", cfg],
                env={"XDG_DATA_HOME": state, "XDG_CONFIG_HOME": state, "HOME": state})


OBTAINED = {"ruchy-serve": r"ACME: certificate obtained", "caddy": r"certificate obtained successfully"}
ATTEMPT = {"ruchy-serve": r"ACME: ordering", "caddy": r"\"msg\":\"obtaining certificate\""}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--down-seconds", type=int, default=30)
    ap.add_argument("--bin", default="target/release/ruchy-serve")
    a = ap.parse_args()
    for tool in ("pebble", "pebble-challtestsrv", "caddy", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing: apt-get install pebble caddy openssl")
    d = tempfile.mkdtemp(prefix="acme-bench-")
    os.makedirs(f"{d}/www")
    with open(f"{d}/www/index.html", "w") as f:
        f.write("hello\n")
    pki(d)
    http, https, acme, mgmt, dns = (free_port() for _ in range(5))
    with open(f"{d}/pebble.json", "w") as f:
        f.write(f'{{"pebble": {{"listenAddress": "127.0.0.1:{acme}", "managementListenAddress": "127.0.0.1:{mgmt}",'
                f' "certificate": "{d}/pebble.pem", "privateKey": "{d}/pebble.key", "httpPort": {http},'
                f' "tlsPort": {https}, "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}')
    chall = Proc(["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01",
                  f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                  "-management", f"127.0.0.1:{free_port()}"])
    pebble = Proc(["pebble", "-strict", "-config", f"{d}/pebble.json", "-dnsserver", f"127.0.0.1:{dns}"],
                  env={"PEBBLE_VA_NOSLEEP": "1"})
    if not pebble.wait_for("ACME directory available", 10):
        sys.exit("pebble did not start")
    directory = f"https://127.0.0.1:{acme}/dir"
    times = {"ruchy-serve": [], "caddy": []}
    versions = {"ruchy-serve": subprocess.run([a.bin, "--version"], capture_output=True, text=True).stdout.strip(),
                "caddy": "caddy " + subprocess.run(["caddy", "version"], capture_output=True, text=True).stdout.strip()}
    for i in range(a.runs):
        for server in ("ruchy-serve", "caddy"):
            p = start(server, a.bin, d, http, https, directory, f"run{i}-{server.replace('-', '')}.example.com")
            got = p.wait_for(OBTAINED[server], 60)
            p.stop()
            if not got:
                sys.exit(f"{server}: no certificate in 60 s:\n" + "\n".join(l for _, l in p.lines[-20:]))
            times[server].append(got[0])
            time.sleep(0.5)
    print("# ACME: time to first certificate, and the CA down\n")
    print(f"`benches/acme.py --runs {a.runs} --down-seconds {a.down_seconds}`; Pebble 2.4 (-strict,"
          " PEBBLE_VA_NOSLEEP=1, its default 5% nonce rejection), HTTP-01 and TLS-ALPN-01 both offered to each"
          f" server; {versions['ruchy-serve']}, {versions['caddy']}; machine: {os.cpu_count()} cores.\n")
    print("| server | runs | median s | min s | max s |\n|---|--:|--:|--:|--:|")
    for s, t in times.items():
        print(f"| {s} | {len(t)} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} |")
    print("\nFrom process start to the server's own \"certificate obtained\" line (account creation, order,"
          " validation, finalization, download and storing included).\n")
    closed = free_port()
    print(f"## CA unreachable for {a.down_seconds} s (directory on a closed port)\n")
    for server in ("ruchy-serve", "caddy"):
        p = start(server, a.bin, d, http, https, f"https://127.0.0.1:{closed}/dir", f"down-{server.replace('-', '')}.example.com")
        time.sleep(a.down_seconds)
        p.stop()
        attempts = [t for t, l in p.lines if re.search(ATTEMPT[server], l)]
        print(f"### {server}: {len(attempts)} attempts, at " + ", ".join(f"{t:.1f}" for t in attempts) + " s\n")
        print("```")
        shown = 0
        for _, l in p.lines:
            if re.search(r"ERROR|error|WARN|warn|ordering|obtain|retry|backoff", l):
                print(l[:400])
                shown += 1
            if shown >= 8:
                break
        print("```\n")
    pebble.stop()
    chall.stop()
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
