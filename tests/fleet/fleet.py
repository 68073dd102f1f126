#!/usr/bin/env python3
"""Fleet test: the real nginx (and HAProxy, when installed) from Debian in
front of three ruchy-serve instances on loopback, using the shipped configs
in deploy/nginx and deploy/haproxy with only their addresses rewritten.

Checks, for each front end:
  - every response through the balancer is correct, byte for byte;
  - each file has the same ETag and Last-Modified from every instance (the
    three trees are separate copies made with preserved modification times);
  - a conditional request revalidates to 304 whichever instance answers;
  - under steady load from 4 clients, one instance is drained (SIGTERM) and
    later restarted: no client request fails, and the restarted instance
    takes traffic again;
  - the client address the instances log is the real client's (127.0.0.2,
    a loopback alias the clients bind to), through X-Forwarded-For from nginx
    and through PROXY protocol v2 from HAProxy, while the balancer itself
    connects from 127.0.0.1.
Exit status 0 only if all of that holds. Every loop is bounded in time.
Usage: tests/fleet/fleet.py [path to ruchy-serve] (default target/debug).
"""

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT_IP = "127.0.0.2"
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port=None, path=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if path:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
            else:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Instance:
    def __init__(self, binary, work, name, root, address, proxy_protocol):
        self.name, self.binary, self.work = name, binary, work
        self.address, self.root, self.proxy_protocol = address, root, proxy_protocol
        self.proc, self.logs = None, []

    def start(self):
        cfg = self.work / f"{self.name}.toml"
        cfg.write_text(f"""root = "{self.root}"
allow_root = true
shutdown_timeout = "10s"
trusted_proxies = ["127.0.0.1", "unix:"]
[[listen]]
address = "{self.address}"
proxy_protocol = {str(self.proxy_protocol).lower()}
[log]
access_log = "json"
format = "json"
target = "stderr"
[metrics]
address = ""
main_health_paths = true
""")
        log = self.work / f"{self.name}.{len(self.logs)}.log"
        self.logs.append(log)
        self.proc = subprocess.Popen([str(self.binary), "--config", str(cfg)], stderr=open(log, "w"),
                                     stdout=subprocess.DEVNULL)
        if self.address.startswith("unix:"):
            ok = wait_port(path=self.address[5:])
        else:
            ok = wait_port(int(self.address.rsplit(":", 1)[1]))
        check(ok, f"{self.name} started")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return None
        return self.proc.returncode if self.proc else None

    def access_entries(self, log_index=None):
        out = []
        logs = self.logs if log_index is None else [self.logs[log_index]]
        for log in logs:
            for line in log.read_text().splitlines():
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                fields = j.get("fields", j)
                if "http_status" in fields:
                    out.append(fields)
        return out

    def direct(self, method, path, headers=None):
        """A request to this instance directly (bypassing the balancer)."""
        if self.address.startswith("unix:"):
            c = http.client.HTTPConnection("localhost", timeout=10)
            c.sock = socket.socket(socket.AF_UNIX)
            c.sock.connect(self.address[5:])
        else:
            host, port = self.address.rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.connect()
        if self.proxy_protocol:
            # Speak as a trusted balancer would: a PROXY v1 line first.
            c.sock.sendall(b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 80\r\n")
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body


def tree(dst, files):
    dst.mkdir()
    for name, data in files.items():
        (dst / name).write_bytes(data)


def get(port, path, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT_IP, 0))
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return c, r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()


def nginx_retries(log):
    """Requests nginx sent to more than one upstream ($upstream_addr lists
    each one tried, comma-separated)."""
    try:
        return sum(1 for line in Path(log).read_text().splitlines() if "," in line)
    except FileNotFoundError:
        return 0


def haproxy_retries(sock):
    """HAProxy's own count of retries and redispatches on the backend
    (`show stat`: wretr + wredis)."""
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(sock))
        c.sendall(b"show stat\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(head, line.split(",")))
        if row.get("pxname") == "ruchy_serve" and row.get("svname") == "BACKEND":
            return int(row.get("wretr") or 0) + int(row.get("wredis") or 0)
    return 0


def run_front(label, front_port, instances, files, retries=None):
    print(f"--- {label}", flush=True)
    # 1. Correct bytes through the balancer, many times (round robin).
    for i in range(60):
        name = list(files)[i % len(files)]
        c, status, _, body = get(front_port, f"/{name}")
        c.close()
        check(status == 200 and body == files[name], f"{label}: GET /{name} -> {status}, {len(body)} bytes")
    # 2. Same validators from every instance.
    for name in files:
        seen = set()
        for inst in instances:
            status, h, _ = inst.direct("HEAD", f"/{name}")
            check(status == 200, f"{label}: HEAD /{name} on {inst.name} -> {status}")
            seen.add((h.get("etag"), h.get("last-modified")))
        check(len(seen) == 1, f"{label}: /{name} validators differ between instances: {seen}")
    # 3. Revalidation to 304 whichever instance answers.
    c, _, h, _ = get(front_port, "/app.js")
    c.close()
    etag, lm = h.get("etag"), h.get("last-modified")
    for _ in range(30):
        c, status, _, body = get(front_port, "/app.js", {"If-None-Match": etag})
        c.close()
        check(status == 304 and body == b"", f"{label}: If-None-Match -> {status}")
        c, status, _, _ = get(front_port, "/app.js", {"If-Modified-Since": lm})
        c.close()
        check(status == 304, f"{label}: If-Modified-Since -> {status}")
    # 4. Drain one instance under steady load, then bring it back.
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    errors = []
    lock = threading.Lock()

    def client():
        conn = None
        while not stop.is_set():
            name = random.choice(list(files))
            try:
                conn, status, _, body = get(front_port, f"/{name}", conn=conn)
                good = status == 200 and body == files[name]
            except (OSError, http.client.HTTPException) as e:
                good, status = False, repr(e)
                conn = None
            with lock:
                if good:
                    counts["ok"] += 1
                else:
                    counts["failed"] += 1
                    errors.append(f"/{name}: {status}")
            if conn is not None and not good:
                conn.close()
                conn = None

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    drained = instances[1]
    before = dict(counts)
    code = drained.stop(signal.SIGTERM)
    check(code == 0, f"{label}: drained instance exited with {code}")
    during = {k: counts[k] - before[k] for k in counts}
    time.sleep(1.5)
    drained.start()
    restarted_log = len(drained.logs) - 1
    time.sleep(9)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    taken = len(drained.access_entries(restarted_log))
    print(f"{label}: drain under load: {counts['ok']} requests ok, {counts['failed']} failed "
          f"({during['ok']} ok / {during['failed']} failed while {drained.name} drained); "
          f"{drained.name} served {taken} requests after its restart", flush=True)
    if retries is not None:
        # What the balancer's retry on an empty response or a refused
        # connection saved: requests that crossed a backend's close (a
        # drain, where HTTP/1 cannot announce it) and were sent again.
        print(f"{label}: {retries()} requests needed the balancer's retry", flush=True)
    check(counts["failed"] == 0, f"{label}: {counts['failed']} client requests failed: {errors[:5]}")
    check(counts["ok"] > 200, f"{label}: too little load ({counts['ok']})")
    check(taken > 0, f"{label}: restarted {drained.name} took no traffic")
    # 5. The logged client address is the real client's.
    addrs = {}
    for inst in instances:
        for e in inst.access_entries():
            addrs[e.get("remote_addr")] = addrs.get(e.get("remote_addr"), 0) + 1
    print(f"{label}: client addresses logged by the instances: {addrs}", flush=True)
    check(addrs.get(CLIENT_IP, 0) >= counts["ok"], f"{label}: logged addresses {addrs}")
    return counts


def main():
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/debug/ruchy-serve").resolve()
    work = Path(tempfile.mkdtemp(prefix="ruchy-fleet-"))
    work.chmod(0o755)
    files = {
        "index.html": b"<!doctype html><title>fleet</title><p>fleet test</p>\n",
        "app.js": bytes(random.Random(1).randrange(256) for _ in range(20_000)),
        "data.bin": bytes(random.Random(2).randrange(256) for _ in range(300_000)),
    }
    tree(work / "src", files)
    roots = []
    for n in "abc":
        shutil.copytree(work / "src", work / f"www-{n}")  # copy2: modification times kept
        roots.append(work / f"www-{n}")
    pb, pc, front = free_port(), free_port(), free_port()
    results = {}
    procs = []
    try:
        # nginx, X-Forwarded-For.
        def fleet(prefix, proxy_protocol):
            """Three instances: a on a unix socket, b and c on TCP."""
            insts = [Instance(binary, work, f"{prefix}{n}", root, addr, proxy_protocol)
                     for n, root, addr in zip("abc", roots, [f"unix:{work}/a.sock", f"127.0.0.1:{pb}",
                                                              f"127.0.0.1:{pc}"])]
            for i in insts:
                i.start()
            return insts

        insts = fleet("", False)
        site = (ROOT / "deploy/nginx/ruchy-serve.conf").read_text()
        site = (site.replace("unix:/run/ruchy-serve/a.sock", f"unix:{work}/a.sock")
                .replace("127.0.0.1:8081", f"127.0.0.1:{pb}").replace("127.0.0.1:8082", f"127.0.0.1:{pc}")
                .replace("listen 80;", f"listen 127.0.0.1:{front};").replace("listen [::]:80;", ""))
        (work / "site.conf").write_text(site)
        nd = work / "nginx"
        nd.mkdir()
        (work / "nginx.conf").write_text(f"""worker_processes 1;
daemon off;
pid {nd}/nginx.pid;
error_log {nd}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$upstream_addr $status';
    access_log {nd}/upstreams.log upstreams;
    client_body_temp_path {nd}; proxy_temp_path {nd}; fastcgi_temp_path {nd};
    uwsgi_temp_path {nd}; scgi_temp_path {nd};
    include {work}/site.conf;
}}
""")
        nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(nd)])
        procs.append(nginx)
        check(wait_port(front), "nginx started")
        results["nginx"] = run_front("nginx", front, insts, files,
                                     retries=lambda: nginx_retries(nd / "upstreams.log"))
        nginx.terminate()
        nginx.wait(timeout=10)
        for i in insts:
            i.stop()

        # HAProxy, PROXY protocol v2 and active health checks.
        if shutil.which("haproxy"):
            insts = fleet("h", True)
            cfg = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
            cfg = (cfg.replace("unix@/run/ruchy-serve/a.sock", f"unix@{work}/a.sock")
                   .replace("127.0.0.1:8081", f"127.0.0.1:{pb}").replace("127.0.0.1:8082", f"127.0.0.1:{pc}")
                   .replace("bind :80", f"bind 127.0.0.1:{front}")
                   .replace("global\n", f"global\n    stats socket {work}/haproxy.sock level user\n", 1))
            (work / "haproxy.cfg").write_text(cfg)
            check(subprocess.run(["haproxy", "-c", "-q", "-f", str(work / "haproxy.cfg")]).returncode == 0,
                  "haproxy -c")
            ha = subprocess.Popen(["haproxy", "-f", str(work / "haproxy.cfg")])
            procs.append(ha)
            check(wait_port(front), "haproxy started")
            time.sleep(1.5)  # health checks rise
            results["haproxy"] = run_front("haproxy", front, insts, files,
                                           retries=lambda: haproxy_retries(work / "haproxy.sock"))
            ha.terminate()
            ha.wait(timeout=10)
            for i in insts:
                i.stop()
        else:
            print("haproxy not installed: the PROXY protocol run is skipped", flush=True)
            FAILURES.append("haproxy missing (tests/run installs it)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if FAILURES:
        print(f"fleet: {len(FAILURES)} failures; logs kept in {work}", flush=True)
        sys.exit(1)
    print("fleet: passed " + ", ".join(f"{k}: {v['ok']} ok / {v['failed']} failed" for k, v in results.items()),
          flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
