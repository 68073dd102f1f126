#!/usr/bin/env python3
"""ruchy-serve against nginx, lighttpd and python3 -m http.server, in one run.

Method (the same for every server):
  - all servers started at once, measured in turn, repetitions interleaved
    (A B C D A B C D ...) so that machine drift hits all of them alike;
  - each server on core 0 with one worker (ruchy-serve: workers = 1; nginx:
    worker_processes 1; lighttpd: one process; python: one process), the load
    generator on core 1 with one thread (taskset);
  - REPS repetitions of DURATION seconds per workload, medians reported;
  - before any load, every fixture is fetched from every server and compared
    byte for byte: a wrong byte fails the run.

Usage: benches/run.py [--quick] [--duration S] [--reps N] [--only w1,w4] [--servers ruchy,nginx]
                      [--binary B] [--label L] [--compare B2] [--compare-label L2]
Writes benches/results/latest.md (table + commands + configs) and
benches/results/chart.svg (ratios against nginx), and prints the table.
--quick (1 run of 2 s per workload, under 3 minutes) writes quick.md and
quick.svg instead, so a quick look never replaces the full run's numbers.
Installs wrk, h2load (nghttp2-client), nginx, lighttpd and brotli from
Debian's packages when missing.
"""

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = "0"
LOAD_CORE = "1"
# --workers N (N > 1): every server with N workers and the load generator
# with N threads, all sharing every core (issue 24's "many cores": compare
# ratios, not rates, since the load generator takes its share).
WORKERS = 1

WORKLOADS = {
    # name: (description, tool, path, connections, extra)
    "w1": ("1 KiB keep-alive, 100 connections", "wrk", "/1k.html", 100, []),
    "w2": ("1 KiB, 1 connection (sequential)", "wrk", "/1k.html", 1, []),
    "w3": ("1 KiB, Connection: close, 50 connections", "wrk", "/1k.html", 50, ["-H", "Connection: close"]),
    "w4": ("1 MiB keep-alive, 10 connections", "wrk", "/1m.bin", 10, []),
    "w5": ("32 MiB, 4 connections", "wrk", "/32m.bin", 4, []),
    "w6": ("404, 100 connections", "wrk", "/missing.html", 100, []),
    "w7": ("HTTP/2 1 KiB, h2load -c 10 -m 10", "h2load", "/1k.html", 10, []),
    "w8": ("TLS 1 KiB keep-alive, 100 connections", "wrk-tls", "/1k.html", 100, []),
    "w9": ("TLS new connection per request (full handshakes), 50 connections", "wrk-tls", "/1k.html", 50,
           ["-H", "Connection: close"]),
    "w10": ("HTTP/2 over TLS (ALPN h2) 1 KiB, h2load -c 10 -m 10", "h2load-tls", "/1k.html", 10, []),
    "w11": ("64 KiB JavaScript, no precompressed twin, Accept-Encoding: br, gzip, 50 connections", "wrk",
            "/64k-plain.js", 50, ["-H", "Accept-Encoding: br, gzip"]),
    # A site, not a file (issue 24): 10,000 files of a static site's size mix
    # with .gz/.br twins beside CSS and JS, requests replayed from a list
    # drawn by Zipf popularity (s = 1.0), a third of them revalidations
    # (If-Modified-Since equal to every file's Last-Modified), every one
    # with a browser's Accept-Encoding. The list and script: site().
    "w12": ("site: 10,000 files, Zipf, 1/3 revalidations, browser Accept-Encoding, 50 connections",
            "wrk-site", "/site/", 50, []),
    # The same traffic with the page cache dropped before every timed run
    # (`echo 3 > /proc/sys/vm/drop_caches`): what a restart of the machine,
    # or a site far larger than its memory, costs. Servers keep their own
    # caches (ruchy-serve's file cache, nginx's open_file_cache).
    "w12c": ("site, cold page cache before each run", "wrk-site", "/site/", 50, []),
    # The same list over HTTP/2 with TLS (h2load -i, ALPN h2, 10 connections
    # x 10 streams, a browser's Accept-Encoding): h2load sends one set of
    # headers for every URI, so this one has no revalidations.
    "w12h": ("site over HTTP/2 with TLS, no revalidations, h2load c10 m10", "h2load-site", "/site/", 10, []),
}

# Site workloads: their list is generated (site()), and each server gets
# one untimed pass over it first (so "warm" is warm: compressed variants
# made, caches filled), except the cold one.
SITE_WORKLOADS = ("w12", "w12c", "w12h")

# Every site file's modification time, and so the If-Modified-Since of the
# list's revalidations: Mon, 01 Dec 2025 00:00:00 GMT.
SITE_MTIME = 1764547200
SITE_IMS = "Mon, 01 Dec 2025 00:00:00 GMT"
SITE_FILES = 10_000
SITE_REQUESTS = 200_000
# Set by site(): the wrk script and the request list.
SITE_ARGS = []


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def ensure_tools():
    need = []
    for tool, pkg in [("wrk", "wrk"), ("h2load", "nghttp2-client"), ("nginx", "nginx"),
                      ("lighttpd", "lighttpd"), ("brotli", "brotli"), ("openssl", "openssl"),
                      ("/usr/lib/lighttpd/mod_openssl.so", "lighttpd-mod-openssl"), ("caddy", "caddy")]:
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists() and not Path(tool).exists():
            need.append(pkg)
    if need:
        print(f"installing {' '.join(need)} from Debian's packages", file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + need, check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def fixtures(www: Path):
    www.mkdir(parents=True)
    rnd = lambda n: os.urandom(n)
    head = b"<!DOCTYPE html><title>1k</title><p>"
    (www / "1k.html").write_bytes(head + b"x" * (1024 - len(head)))
    js = (b"console.log('ruchy-serve benchmark');\n" * 500)[: 16 * 1024]
    (www / "16k.js").write_bytes(js)
    sh(["gzip", "-9", "-k", "-n", str(www / "16k.js")])
    sh(["brotli", "-k", "-q", "11", str(www / "16k.js")])
    (www / "64k-plain.js").write_bytes(plain_js(64 * 1024))
    (www / "1m.bin").write_bytes(rnd(1 << 20))
    (www / "32m.bin").write_bytes(rnd(32 << 20))
    (www / "app.wasm").write_bytes(b"\0asm\x01\0\0\0" + rnd((2 << 20) - 8))
    assert (www / "1k.html").stat().st_size == 1024


def site(www: Path, work: Path):
    """w12's site under www/site (seeded, so every run has the same one):
    HTML 2-50 KiB, CSS/JS 5-300 KiB each with .gz and .br twins as a build
    step makes them, images 5 KiB-2 MiB, fonts, and a few downloads of
    5-20 MiB (the total is printed). Then the request list and the wrk
    script that replays it."""
    import gzip
    import math
    import random
    r = random.Random(24)
    root = www / "site"
    kinds = [("html", 0.40, 2 << 10, 50 << 10), ("css", 0.08, 5 << 10, 300 << 10),
             ("js", 0.12, 5 << 10, 300 << 10), ("jpg", 0.35, 5 << 10, 2 << 20),
             ("woff2", 0.0490, 20 << 10, 100 << 10), ("zip", 0.0010, 5 << 20, 20 << 20)]
    paths = []
    text = plain_js(400 << 10)
    for i in range(SITE_FILES):
        x, acc = r.random(), 0.0
        for ext, share, lo, hi in kinds:
            acc += share
            if x < acc:
                break
        # Skewed to the small end (u cubed), as a site's images and pages
        # are: the mean image is about 130 KiB, the largest 2 MiB.
        size = int(lo * (hi / lo) ** (r.random() ** 3))
        rel = f"site/s{i % 50}/f{i}.{ext}"
        p = www / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if ext in ("html", "css", "js"):
            start = r.randrange(0, len(text) - 1)
            data = (text[start:] + text)[:size]
            p.write_bytes(data)
            if ext != "html":
                (p.parent / (p.name + ".gz")).write_bytes(gzip.compress(data, 6, mtime=0))
                sh(["brotli", "-k", "-q", "5", str(p)])
        else:
            p.write_bytes(os.urandom(size))
        paths.append("/" + rel)
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (SITE_MTIME, SITE_MTIME))
            total += os.path.getsize(os.path.join(dirpath, f))
    print(f"w12 site: {SITE_FILES} files and their twins, {total / 2**20:.0f} MiB", flush=True)
    # Popularity: rank k is asked with weight 1/k, ranks shuffled over files.
    order = list(range(SITE_FILES))
    r.shuffle(order)
    weights = [1.0 / (k + 1) for k in range(SITE_FILES)]
    picks = r.choices(order, weights=weights, k=SITE_REQUESTS)
    listing = work / "site-requests.txt"
    with open(listing, "w") as out:
        for f in picks:
            out.write(f"{paths[f]}\t{1 if r.random() < 1 / 3 else 0}\n")
    script = work / "site.lua"
    script.write_text(f"""-- benches/run.py w12: replays the request list, in order, per thread.
local reqs = {{}}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do
    local path, c = line:match("([^\\t]+)\\t(%d)")
    reqs[#reqs + 1] = {{path, c == "1"}}
  end
end
request = function()
  i = i % #reqs + 1
  local r = reqs[i]
  local h = {{["Accept-Encoding"] = "gzip, deflate, br, zstd"}}
  if r[2] then h["If-Modified-Since"] = "{SITE_IMS}" end
  return wrk.format("GET", r[1], h)
end
""")
    SITE_ARGS[:] = [str(script), str(listing)]


def plain_js(n):
    """n bytes of script-like text that compresses about as real JavaScript
    does (identifiers, numbers and punctuation from a seeded generator), for
    w11: nobody precompressed it, so the server compresses it or sends it
    whole."""
    import random
    r = random.Random(11)
    names = ["render", "state", "props", "value", "index", "items", "config", "handler", "result", "node",
             "element", "options", "callback", "response", "request", "buffer", "length", "module", "export"]
    out = []
    size = 0
    while size < n:
        a, b, c = r.choice(names), r.choice(names), r.choice(names)
        line = r.choice([
            f"function {a}{r.randint(0, 999)}({b}, {c}) {{ return {b}.{c} + {r.randint(0, 99999)}; }}\n",
            f"const {a}_{r.randint(0, 9999)} = {b}.map(({c}) => {c}.{a} * {r.random():.4f});\n",
            f"if ({a}.{b} !== undefined) {{ {c}.push({a}[{r.randint(0, 255)}]); }}\n",
            f"export {{ {a} as {b}{r.randint(0, 99)} }};\n",
        ])
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def cert(dir: Path):
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-days", "2",
        "-keyout", str(dir / "key.pem"), "-out", str(dir / "cert.pem")])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, cmd, http, h2=None, tls=None, config_text="", cwd=None, stderr=None, log=None):
        self.name, self.cmd, self.http, self.h2, self.tls = name, cmd, http, h2, tls
        self.config_text, self.cwd, self.proc = config_text, cwd, None
        # stderr: a file for the server's stderr (the stderr access-log
        # target writes there); log: the access-log file it writes, if any.
        self.stderr, self.log = stderr, log

    def start(self):
        err = open(self.stderr, "ab") if self.stderr else subprocess.DEVNULL
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + self.cmd, cwd=self.cwd,
                                     stdout=subprocess.DEVNULL, stderr=err,
                                     start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.http), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"{self.name} did not start: {' '.join(self.cmd)}")

    def pids(self):
        """The server's processes (nginx forks a worker)."""
        out = subprocess.run(["pgrep", "-s", str(self.proc.pid)], text=True, capture_output=True).stdout
        return [int(p) for p in out.split()]

    def cpu_seconds(self):
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (FileNotFoundError, IndexError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total

    def stop(self):
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def servers(work: Path, www: Path, binary: Path, wanted, metrics_on=False, tag="ruchy", log="off"):
    """The servers in `wanted`, configured alike. `log`: the access log each
    writes: "off" (every other workload), "file" (ruchy-serve's
    log.access_log_path with nginx's defaults, buffer 64 KiB flush 1 s;
    nginx `access_log ... buffer=64k flush=1s`; lighttpd mod_accesslog),
    or, for ruchy-serve only, "stderr" (to a file) and "journal"."""
    out = []
    certp, keyp = work / "cert.pem", work / "key.pem"
    suffix = "" if log == "off" else f"+log-{log}"
    if "ruchy" in wanted:
        http, tls = free_port(), free_port()
        metrics = f'"127.0.0.1:{free_port()}"' if metrics_on else '""'
        logfile = work / f"{tag}-{log}-access.log"
        logconf = {
            "off": 'access_log = "off"',
            "file": f'access_log = "combined"\naccess_log_path = "{logfile}"\n'
                    f'access_log_buffer = "64KiB"\naccess_log_flush = "1s"',
            "stderr": 'access_log = "combined"\ntarget = "stderr"',
            "journal": 'access_log = "combined"\ntarget = "journald"',
        }[log]
        conf = f"""root = "{www}"
workers = {WORKERS}
allow_root = true
[[listen]]
address = "127.0.0.1:{http}"
[[listen]]
address = "127.0.0.1:{tls}"
tls = true
[[tls.certificates]]
cert = "{certp}"
key = "{keyp}"
[log]
{logconf}
level = "warn"
[metrics]
address = {metrics}
"""
        path = work / (f"{tag}-metrics.toml" if metrics_on else f"{tag}-{log}.toml")
        path.write_text(conf)
        name = "ruchy-serve+metrics" if metrics_on else "ruchy-serve" + suffix
        out.append(Server(name, [str(binary), "--config", str(path)], http, h2=http, tls=tls, config_text=conf,
                          stderr=work / f"{tag}-{log}.stderr" if log == "stderr" else None,
                          log={"file": logfile, "stderr": work / f"{tag}-{log}.stderr"}.get(log)))
    if log in ("stderr", "journal"):
        return out
    if "nginx" in wanted and not metrics_on:
        http, h2, tls = free_port(), free_port(), free_port()
        ndir = work / ("nginx" if log == "off" else f"nginx-{log}")
        ndir.mkdir(exist_ok=True)
        nlog = "access_log off;" if log == "off" else f"access_log {ndir}/access.log combined buffer=64k flush=1s;"
        conf = f"""worker_processes {WORKERS};
daemon off;
pid {ndir}/nginx.pid;
error_log {ndir}/error.log crit;
events {{ worker_connections 20000; }}
worker_rlimit_nofile 40000;
http {{
    include /etc/nginx/mime.types;
    {nlog}
    sendfile on;
    tcp_nopush on;
    open_file_cache max=10000 inactive=60s;
    gzip_static on;
    keepalive_requests 1000000;
    gzip on; gzip_comp_level 6; gzip_min_length 256;
    gzip_types application/javascript text/javascript text/css application/json image/svg+xml;
    client_body_temp_path {ndir}; proxy_temp_path {ndir}; fastcgi_temp_path {ndir};
    uwsgi_temp_path {ndir}; scgi_temp_path {ndir};
    server {{ listen 127.0.0.1:{http}; root {www}; }}
    server {{ listen 127.0.0.1:{h2} http2; root {www}; }}
    server {{ listen 127.0.0.1:{tls} ssl http2; ssl_certificate {certp}; ssl_certificate_key {keyp};
             ssl_protocols TLSv1.2 TLSv1.3; root {www}; }}
}}
"""
        (ndir / "nginx.conf").write_text(conf)
        out.append(Server("nginx" + suffix, ["nginx", "-c", str(ndir / "nginx.conf"), "-p", str(ndir)], http, h2=h2,
                          tls=tls, config_text=conf, log=ndir / "access.log" if log != "off" else None))
    if "lighttpd" in wanted and not metrics_on:
        http, tls = free_port(), free_port()
        (work / "lighttpd-deflate-cache").mkdir(exist_ok=True)
        llog = work / f"lighttpd-{log}-access.log"
        lconf = "" if log == "off" else f'server.modules += ("mod_accesslog")\naccesslog.filename = "{llog}"\n'
        conf = f"""server.document-root = "{www}"
server.port = {http}
server.bind = "127.0.0.1"
server.max-worker = {0 if WORKERS == 1 else WORKERS}
server.max-keep-alive-requests = 1000000
server.max-fds = 40000
server.max-connections = 20000
server.feature-flags += ("server.h2proto" => "enable", "server.h2c" => "enable")
server.modules += ("mod_openssl", "mod_deflate")
deflate.mimetypes = ("application/javascript", "text/javascript", "text/css", "application/json")
deflate.allowed-encodings = ("br", "gzip")
deflate.cache-dir = "{work}/lighttpd-deflate-cache"
$SERVER["socket"] == "127.0.0.1:{tls}" {{
    ssl.engine = "enable"
    ssl.pemfile = "{certp}"
    ssl.privkey = "{keyp}"
}}
mimetype.assign = (".html" => "text/html", ".js" => "text/javascript", ".css" => "text/css", ".bin" => "application/octet-stream", ".wasm" => "application/wasm", ".jpg" => "image/jpeg", ".woff2" => "font/woff2", ".zip" => "application/zip")
{lconf}"""
        lpath = work / ("lighttpd.conf" if log == "off" else f"lighttpd-{log}.conf")
        lpath.write_text(conf)
        out.append(Server("lighttpd" + suffix, ["lighttpd", "-D", "-f", str(lpath)], http, h2=http, tls=tls,
                          config_text=conf, log=llog if log != "off" else None))
    if "ceiling" in wanted and not metrics_on and log == "off":
        http, tls = free_port(), free_port()
        out.append(Server(CEILING, [str(ceiling_binary()), str(www), f"127.0.0.1:{http}",
                                    f"127.0.0.1:{tls}", str(certp), str(keyp)], http, h2=http, tls=tls,
                          config_text="benches/ceiling.rs: hyper 1.x, current-thread runtime, hyper-util auto "
                                      "builder, every file from memory, one content-type header; TLS: "
                                      "tokio-rustls (aws-lc-rs), ALPN h2 and http/1.1"))
    if "caddy" in wanted and not metrics_on and log == "off":
        http = free_port()
        cdir = work / "caddy"
        cdir.mkdir(exist_ok=True)
        conf = f"""{{
    admin off
    auto_https off
}}
http://127.0.0.1:{http} {{
    root * {www}
    encode zstd gzip
    file_server
}}
"""
        (cdir / "Caddyfile").write_text(conf)
        # One core, like the others: GOMAXPROCS=1 under the same taskset.
        out.append(Server("caddy", ["env", "GOMAXPROCS=1", f"HOME={cdir}", f"XDG_DATA_HOME={cdir}",
                                    f"XDG_CONFIG_HOME={cdir}", "caddy", "run", "--config", str(cdir / "Caddyfile"),
                                    "--adapter", "caddyfile"], http, config_text=conf))
    if "python" in wanted and not metrics_on and log == "off":
        http = free_port()
        out.append(Server("python-http.server",
                          [sys.executable, "-m", "http.server", str(http), "--bind", "127.0.0.1",
                           "--directory", str(www)], http))
    return out


def verify(server, www):
    """Every fixture, byte for byte, over a real request."""
    for f in ["1k.html", "16k.js", "1m.bin", "32m.bin", "app.wasm"]:
        got = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{server.http}/{f}"], capture_output=True).stdout
        if hashlib.sha256(got).digest() != hashlib.sha256((www / f).read_bytes()).digest():
            raise SystemExit(f"WRONG BYTES: {server.name} /{f} ({len(got)} bytes)")


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNIT[m.group(2)] if m else float("nan")


def run_wrk(server, wl, duration):
    desc, tool, path, conns, extra = WORKLOADS[wl]
    if tool == "wrk-tls":
        if not server.tls:
            return None
        url = f"https://localhost:{server.tls}{path}"
    else:
        url = f"http://127.0.0.1:{server.http}{path}"
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", f"-t{WORKERS}", f"-c{conns}", f"-d{duration}s", "--latency"] + extra + [url]
    if tool == "wrk-site":
        cmd = (["taskset", "-c", LOAD_CORE, "wrk", f"-t{WORKERS}", f"-c{conns}", f"-d{duration}s", "--latency",
                "-s", SITE_ARGS[0], f"http://127.0.0.1:{server.http}/", "--", SITE_ARGS[1]])
    cpu0 = server.cpu_seconds()
    out = subprocess.run(cmd, text=True, capture_output=True, timeout=duration + 60).stdout
    cpu = server.cpu_seconds() - cpu0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    mult = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024 ** 2 / 1e6, "GB": 1024 ** 3 / 1e6}
    mbs = float(tr.group(1)) * mult.get(tr.group(2), 1)
    p50 = ms(re.search(r"50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"99%\s+(\S+)", out).group(1))
    errors = 0
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if se:
        errors += sum(int(x) for x in se.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx and wl != "w6":
        errors += int(non2xx.group(1))
    return dict(rps=rps, mbs=mbs, p50=p50, p99=p99, errors=errors, cpu=cpu, cmd=" ".join(cmd[3:]))


def run_h2load(server, wl, duration):
    desc, tool, path, conns, extra = WORKLOADS[wl]
    # h2c with prior knowledge, or h2 negotiated by ALPN over TLS.
    port, scheme = (server.tls, "https") if tool in ("h2load-tls", "h2load-site") else (server.h2, "http")
    if not port:
        return None
    cmd = ["taskset", "-c", LOAD_CORE, "h2load", "-c10", "-m10", f"-t{WORKERS}", "-D", str(duration),
           f"{scheme}://127.0.0.1:{port}{path}"]
    if tool == "h2load-site":
        uris = Path(SITE_ARGS[1]).parent / f"site-uris-{port}.txt"
        if not uris.exists():
            with open(SITE_ARGS[1]) as src, open(uris, "w") as out:
                for line in src:
                    out.write(f"https://127.0.0.1:{port}{line.split(chr(9))[0]}\n")
        cmd = cmd[:-1] + ["-H", "Accept-Encoding: gzip, deflate, br, zstd", "-i", str(uris)]
    cpu0 = server.cpu_seconds()
    out = subprocess.run(cmd, text=True, capture_output=True, timeout=duration + 60).stdout
    cpu = server.cpu_seconds() - cpu0
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s, ([\d.]+)(\w+)/s", out)
    if not m:
        return dict(rps=0.0, mbs=0.0, p50=float("nan"), p99=float("nan"), errors=-1, cpu=cpu, cmd=" ".join(cmd[3:]))
    mult = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024 ** 2 / 1e6, "GB": 1024 ** 3 / 1e6}
    st = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    errors = int(st.group(5)) + int(st.group(6)) if st else -1
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p50 = ms(lat.group(3)) if lat else float("nan")  # h2load prints min/max/mean: mean stands in for p50
    return dict(rps=float(m.group(1)), mbs=float(m.group(2)) * mult.get(m.group(3), 1), p50=p50,
                p99=float("nan"), errors=errors, cpu=cpu, cmd=" ".join(cmd[3:]))


def idle_memory(server, count=10000, wave=200):
    """KiB of RSS per idle keep-alive connection, three ways, each on a
    freshly started server (RSS does not shrink, so one way would carry over
    into the next): `silent`, connections that never send a request;
    `after-one`, every connection sends one request and reads its answer, all
    at once, then idles; `waves`, the same request sent by `wave`
    connections at a time, each wave answered before the next starts (memory
    an idle connection gives back is reused by the next wave, which is what
    a server that frees buffers between requests gains)."""
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 1000, count + 1000))
    req = b"GET /1k.html HTTP/1.1\r\nHost: x\r\n\r\n"
    out = {}
    for mode in ("silent", "after-one", "waves"):
        server.stop()
        server.start()
        time.sleep(0.5)
        base = server.rss_kib()
        socks = []
        try:
            for _ in range(count):
                socks.append(socket.create_connection(("127.0.0.1", server.http), timeout=10))
            if mode == "after-one":
                for s in socks:
                    s.sendall(req)
                for s in socks:
                    s.recv(65536)
            elif mode == "waves":
                for i in range(0, count, wave):
                    for s in socks[i:i + wave]:
                        s.sendall(req)
                    for s in socks[i:i + wave]:
                        s.recv(65536)
            time.sleep(1)
            out[mode] = (server.rss_kib() - base) / count
        except OSError as e:
            out[mode] = f"failed after {len(socks)} connections: {e}"
        finally:
            for s in socks:
                s.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="1 run of 2 s per workload (under 3 minutes); writes results/quick.*")
    ap.add_argument("--out", help="results file name without extension (default: latest, or quick)")
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--servers", default="ruchy,ceiling,nginx,lighttpd,python",
                    # caddy (Debian's 2.6, `encode zstd gzip`) on request: --servers ...,caddy
                    help="ceiling: bare hyper from benches/ceiling.rs, the most ruchy-serve's own work can reach")
    ap.add_argument("--metrics-overhead", action="store_true", help="also run w1 with metrics on")
    ap.add_argument("--workers", type=int, default=1,
                    help="workers per server and load-generator threads; above 1 all share every core")
    ap.add_argument("--syscalls", action="store_true",
                    help="after the timed runs, a pass under strace -c per server and workload: "
                         "system calls per request")
    ap.add_argument("--idle", action="store_true",
                    help="also measure KiB per idle connection (10,000: silent, after one request, in waves of 200)")
    ap.add_argument("--binary", help="ruchy-serve binary to measure (default: build target/release)")
    ap.add_argument("--label", default="ruchy-serve", help="name of that binary in the results")
    ap.add_argument("--compare", metavar="BINARY",
                    help="a second ruchy-serve build in the same interleaved run (A/B against --binary)")
    ap.add_argument("--compare-label", default="ruchy-serve-before", help="name of the --compare build")
    ap.add_argument("--access-log", action="store_true",
                    help="only w1, every server with its access log off and on (file; ruchy-serve also "
                         "stderr and journal), interleaved; writes results/<date>-access-log.md")
    ap.add_argument("--metrics-ab", type=int, metavar="ROUNDS",
                    help="only compare w1 with metrics off and on, alternating ROUNDS times")
    args = ap.parse_args()
    if args.workers > 1:
        global SERVER_CORE, LOAD_CORE, WORKERS
        WORKERS = args.workers
        SERVER_CORE = LOAD_CORE = ",".join(str(c) for c in range(os.cpu_count()))
    if args.quick:
        args.reps, args.duration = 1, 2
    if not args.out:
        args.out = "quick" if args.quick else "latest"
    if args.metrics_ab:
        return metrics_ab(args)
    if args.access_log:
        return access_log_run(args)
    ensure_tools()
    binary = the_binary(args)
    wanted = args.servers.split(",")
    work = Path(tempfile.mkdtemp(prefix="ruchy-bench-"))
    work.chmod(0o755)  # nginx's workers run as www-data
    www = work / "www"
    fixtures(www)
    if any(w in SITE_WORKLOADS for w in args.only.split(",")):
        site(www, work)
    cert(work)
    srv = servers(work, www, binary, wanted)
    for s in srv:
        if s.name == "ruchy-serve":
            s.name = args.label
    if args.compare:
        other = servers(work, www, Path(args.compare).resolve(), ["ruchy"], tag="compare")
        other[0].name = args.compare_label
        srv[1:1] = other
    if args.metrics_overhead:
        srv += servers(work, www, binary, ["ruchy"], metrics_on=True)
    results = {}
    configs = {}
    try:
        # Every server runs for the whole suite (the idle ones cost nothing),
        # and the repetitions interleave the servers: ruchy, nginx, lighttpd,
        # python, ruchy, ... so that drift on a shared machine hits every
        # server alike instead of whichever happened to run last.
        for s in srv:
            s.start()
            time.sleep(0.5)
            results[("idle", s.name)] = {"rss": s.rss_kib()}
            verify(s, www)
            configs[s.name] = s.config_text
        for wl in [w for w in args.only.split(",") if w]:
            runs = {s.name: [] for s in srv}
            if wl in ("w12", "w12h"):
                for s in srv:
                    if not s.name.startswith("python") and not s.name.endswith("+metrics"):
                        (run_h2load if wl == "w12h" else run_wrk)(s, wl, args.duration)
            for _ in range(args.reps):
                for s in srv:
                    if wl == "w12c":
                        subprocess.run(["sync"], check=True)
                        Path("/proc/sys/vm/drop_caches").write_text("3\n")
                    if s.name.endswith("+metrics") and wl != "w1":
                        continue
                    if s.name.startswith("python") and wl in ("w7", "w8", "w9", "w10") + SITE_WORKLOADS:
                        continue
                    r = (run_h2load(s, wl, args.duration) if WORKLOADS[wl][1].startswith("h2load")
                         else run_wrk(s, wl, args.duration))
                    if r is not None:
                        runs[s.name].append(r)
            for s in srv:
                rs = runs[s.name]
                if not rs:
                    continue
                med = {k: statistics.median([r[k] for r in rs]) for k in ("rps", "mbs", "p50", "p99", "cpu")}
                med["errors"] = sum(r["errors"] for r in rs)
                med["rps_per_cpu"] = med["rps"] / (med["cpu"] / args.duration) if med["cpu"] > 0 else float("nan")
                med["cmd"] = rs[0]["cmd"]
                med["peak_rss"] = s.rss_kib()
                results[(wl, s.name)] = med
                print(f"{wl} {s.name:22} {med['rps']:>10.0f} req/s {med['mbs']:>9.1f} MB/s "
                      f"p50 {med['p50']:.2f} ms p99 {med['p99']:.2f} ms errors {med['errors']}", flush=True)
                if med["errors"] != 0 and not s.name.startswith("python"):
                    print(f"ERRORS from {s.name} on {wl}", file=sys.stderr)
        if args.syscalls:
            for wl in [w for w in args.only.split(",") if w]:
                for s in srv:
                    if s.name.startswith("python") or s.name.endswith("+metrics"):
                        continue
                    n = syscalls_per_request(s, wl, work)
                    if n is not None:
                        results[(wl, s.name)]["syscalls"] = n
                        print(f"{wl} {s.name:22} {n[0]:.2f} system calls per request "
                              f"({', '.join(f'{k} {v:.2f}' for k, v in n[1])})", flush=True)
        if args.idle:
            for s in srv:
                if not s.name.startswith("python"):
                    results[("idle10k", s.name)] = idle_memory(s)
                    print(f"idle {s.name:22} KiB per connection: {results[('idle10k', s.name)]}", flush=True)
    finally:
        for s in srv:
            s.stop()
    report(results, configs, args, work)
    shutil.rmtree(work, ignore_errors=True)


CEILING = "bare-hyper"


def syscalls_per_request(server, wl, work):
    """System calls per request on `server` for `wl`, from `strace -c -f`
    attached to every process of the server for a 3 s load in a pass of its
    own (strace slows the server several times over, so rates from this
    pass mean nothing; the counts per request do). Returns the total and the
    five most frequent calls, each per request; None for workloads without a
    request count."""
    desc, tool, path, conns, extra = WORKLOADS[wl]
    out_file = work / f"strace-{server.name}-{wl}.txt"
    pids = server.pids()
    if not pids:
        return None
    strace = subprocess.Popen(["strace", "-c", "-f", "-o", str(out_file)]
                              + [a for p in pids for a in ("-p", str(p))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        if tool.startswith("h2load"):
            port, scheme = (server.tls, "https") if tool == "h2load-tls" else (server.h2, "http")
            if not port:
                return None
            out = subprocess.run(["taskset", "-c", LOAD_CORE, "h2load", "-c10", "-m10", f"-t{WORKERS}", "-D", "3",
                                  f"{scheme}://127.0.0.1:{port}{path}"],
                                 text=True, capture_output=True, timeout=60).stdout
            m = re.search(r"requests: (\d+) total", out)
        else:
            if tool == "wrk-tls" and not server.tls:
                return None
            url = (f"https://localhost:{server.tls}{path}" if tool == "wrk-tls"
                   else f"http://127.0.0.1:{server.http}{path}")
            cmd = ["taskset", "-c", LOAD_CORE, "wrk", f"-t{WORKERS}", f"-c{conns}", "-d3s"] + extra + [url]
            if tool == "wrk-site":
                cmd = (["taskset", "-c", LOAD_CORE, "wrk", f"-t{WORKERS}", f"-c{conns}", "-d3s", "-s", SITE_ARGS[0],
                        f"http://127.0.0.1:{server.http}/", "--", SITE_ARGS[1]])
            out = subprocess.run(cmd, text=True, capture_output=True, timeout=60).stdout
            m = re.search(r"(\d+) requests in", out)
    finally:
        time.sleep(0.5)
        strace.send_signal(signal.SIGINT)
        strace.wait(timeout=30)
    if not m or int(m.group(1)) == 0:
        return None
    reqs = int(m.group(1))
    calls = {}
    for line in out_file.read_text().splitlines():
        f = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    total = sum(calls.values())
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return total / reqs, [(k, v / reqs) for k, v in top]


def ceiling_binary():
    """benches/ceiling.rs, built for the run (a bench-only target)."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "bench-ceiling", "--bin", "hyper-ceiling"],
                   cwd=ROOT, check=True)
    return ROOT / "target/release/hyper-ceiling"


def the_binary(args):
    """--binary, or a release build of this checkout."""
    if args.binary:
        return Path(args.binary).resolve()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return ROOT / "target/release/ruchy-serve"


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def start_journald():
    """A journald for the journal target where none runs (a container
    without systemd as PID 1): started on the server's core, since its work
    is the server's logging, with rate limiting off so that every line is
    stored rather than dropped by the limiter. Returns a function that stops
    it and removes what it made, or None."""
    if Path("/run/systemd/journal/socket").exists() or not Path("/lib/systemd/systemd-journald").exists():
        return None
    conf = Path("/run/systemd/journald.conf.d")
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "ruchy-bench.conf").write_text("[Journal]\nRateLimitIntervalSec=0\nStorage=volatile\n")
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, "/lib/systemd/systemd-journald"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if Path("/run/systemd/journal/socket").exists():
            break
        time.sleep(0.1)

    def stop():
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree("/run/systemd/journal", ignore_errors=True)
        shutil.rmtree("/run/log/journal", ignore_errors=True)
        (conf / "ruchy-bench.conf").unlink()
    return stop


def access_log_run(args):
    """w1 (or w12 with --only w12) with every server's access log off and on, interleaved: what
    logging costs each server, and ruchy-serve's file target against
    nginx's buffered log in the same run. Each logged run's lines are
    counted against wrk's request count (a logger that drops lines would
    look fast)."""
    # w1, or the site workload when it is asked for.
    wl = "w12" if "w12" in args.only.split(",") else "w1"
    ensure_tools()
    binary = the_binary(args)
    wanted = [w for w in args.servers.split(",") if w != "python"]
    work = Path(tempfile.mkdtemp(prefix="ruchy-bench-"))
    work.chmod(0o755)  # nginx's workers run as www-data
    www = work / "www"
    fixtures(www)
    if any(w in SITE_WORKLOADS for w in args.only.split(",")):
        site(www, work)
    cert(work)
    srv = servers(work, www, binary, wanted) + servers(work, www, binary, wanted, log="file")
    journald = None
    if "ruchy" in wanted:
        srv += servers(work, www, binary, ["ruchy"], log="stderr")
        journald = start_journald()
        if Path("/run/systemd/journal/socket").exists():
            srv += servers(work, www, binary, ["ruchy"], log="journal")
        else:
            print("no journald on this machine (/run/systemd/journal/socket): journal target not measured")
    for s in srv:
        if s.log:
            s.log.parent.mkdir(parents=True, exist_ok=True)
            s.log.touch()
            os.chmod(s.log, 0o666)  # nginx's workers run as www-data
    rps = {s.name: [] for s in srv}
    lines_ok = {s.name: [] for s in srv}

    def measure(s):
        before = count_lines(s.log) if s.log else 0
        r = run_wrk(s, wl, args.duration)
        rps[s.name].append(r["rps"])
        if s.log:
            time.sleep(1.5)  # flush=1s
            logged = count_lines(s.log) - before
            lines_ok[s.name].append(logged / (r["rps"] * args.duration))
            os.sync()  # the page cache's writeback must not run into the next server's run
        print(f"{wl} {s.name:26} {r['rps']:>10.0f} req/s", flush=True)

    try:
        for s in srv:
            s.start()
            time.sleep(0.3)
            verify(s, www)
        if wl == "w12":
            for s in srv:
                run_wrk(s, wl, args.duration)  # untimed: compress once, fill caches
        # Files and no log, every server, interleaved. The stderr and journal
        # targets afterwards: journald works through its backlog for a while
        # after a flood, on the server's core, and would slow whoever ran next.
        first = [s for s in srv if "+log-stderr" not in s.name and "+log-journal" not in s.name]
        for _ in range(args.reps):
            for s in first:
                measure(s)
        for _ in range(args.reps):
            for s in srv:
                if s not in first:
                    measure(s)
                    time.sleep(2)
    finally:
        for s in srv:
            s.stop()
        if journald:
            journald()
    med = {n: statistics.median(v) for n, v in rps.items()}
    when = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    out = [f"# Access logging at {wl} ({when})", "",
           f"Command: `benches/run.py --access-log --only {wl} --reps {args.reps} --duration {args.duration}`. "
           f"{wl} ({WORKLOADS[wl][0]}, wrk -t1"
           + ("; one untimed pass per server first" if wl == "w12" else "") + f"); every server on core {SERVER_CORE} with one "
           f"worker, wrk on core {LOAD_CORE}; all servers running at once, {args.reps} interleaved runs of "
           f"{args.duration} s, medians; the stderr and journal targets are measured after the others (journald, "
           f"on the server's core, works through its backlog after a flood). Between runs, logged lines are "
           f"counted and the page cache synced. Machine: {os.cpu_count()} cores, `{os.uname().release}`. "
           "Logged runs: ruchy-serve `access_log_path` (64 KiB buffer, 1 s flush), nginx "
           "`access_log ... combined buffer=64k flush=1s`, lighttpd mod_accesslog; ruchy-serve's stderr "
           "target writes to a file through stderr. 'lines/request' is lines written over requests "
           "answered (wrk's count), median of the runs.", "",
           "| server | log | req/s (median) | runs | logged / unlogged | lines/request |",
           "|---|---|--:|---|--:|--:|"]
    for s in srv:
        base = s.name.split("+log-")[0]
        kind = s.name.split("+log-")[1] if "+log-" in s.name else "off"
        ratio = med[s.name] / med[base] if base in med else float("nan")
        lpr = f"{statistics.median(lines_ok[s.name]):.3f}" if lines_ok[s.name] else "-"
        out.append(f"| {base} | {kind} | {med[s.name]:,.0f} | {', '.join(f'{x:,.0f}' for x in rps[s.name])} | "
                   f"{ratio:.3f} | {lpr} |")
    if "ruchy-serve+log-file" in med and "nginx+log-file" in med:
        out += ["", f"ruchy-serve with its file log / nginx with its buffered log: "
                    f"{med['ruchy-serve+log-file'] / med['nginx+log-file']:.3f}"]
    text = "\n".join(out) + "\n"
    (ROOT / "benches/results").mkdir(exist_ok=True)
    name = args.out if args.out not in ("latest", "quick") else time.strftime("%Y-%m-%d") + "-access-log"
    (ROOT / f"benches/results/{name}.md").write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    print(text)


def metrics_ab(args):
    """Metrics recording on vs off at w1, alternating runs so that drift on a
    shared machine hits both sides alike."""
    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = ROOT / "target/release/ruchy-serve"
    work = Path(tempfile.mkdtemp(prefix="ruchy-bench-"))
    www = work / "www"
    fixtures(www)
    if any(w in SITE_WORKLOADS for w in args.only.split(",")):
        site(www, work)
    cert(work)
    off = servers(work, www, binary, ["ruchy"])[0]
    on = servers(work, www, binary, ["ruchy"], metrics_on=True)[0]
    rps = {off.name: [], on.name: []}
    per_cpu = {off.name: [], on.name: []}
    try:
        for s in (off, on):
            s.start()
            verify(s, www)
        for _ in range(args.metrics_ab):
            for s in (off, on):
                r = run_wrk(s, "w1", args.duration)
                rps[s.name].append(r["rps"])
                per_cpu[s.name].append(r["rps"] / (r["cpu"] / args.duration))
    finally:
        off.stop()
        on.stop()
        shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(rps[off.name]), statistics.median(rps[on.name])
    text = (f"# Metrics overhead at w1 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
            f"{args.metrics_ab} alternating rounds of {args.duration} s, server on core {SERVER_CORE}, wrk on core {LOAD_CORE}.\n\n"
            f"- metrics off: median {a:.0f} req/s (runs: {', '.join(f'{x:.0f}' for x in rps[off.name])})\n"
            f"- metrics on:  median {b:.0f} req/s (runs: {', '.join(f'{x:.0f}' for x in rps[on.name])})\n"
            f"- on / off: {b / a:.3f} ({(1 - b / a) * 100:+.1f}% cost)\n"
            f"- requests per server CPU-second, medians: off {statistics.median(per_cpu[off.name]):.0f}, "
            f"on {statistics.median(per_cpu[on.name]):.0f} "
            f"(on / off {statistics.median(per_cpu[on.name]) / statistics.median(per_cpu[off.name]):.3f})\n")
    (ROOT / "benches/results").mkdir(exist_ok=True)
    (ROOT / "benches/results/metrics-overhead.md").write_text(text)
    print(text)


def report(results, configs, args, work):
    names = []
    for (_, n) in results:
        if n not in names:
            names.append(n)
    lines = [f"# Benchmark results ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Method: servers pinned to core {SERVER_CORE} with {WORKERS} worker(s), load generator pinned to "
             f"core {LOAD_CORE} with {WORKERS} thread(s); {args.reps} runs of {args.duration} s each, interleaved across "
             f"servers, medians. "
             + ("w12, w12h: one untimed pass per server first. " if {"w12", "w12h"} & set(args.only.split(",")) else "")
             + ("w12c: page cache dropped before every timed run. " if "w12c" in args.only.split(",") else "")
             + f"Machine: {os.cpu_count()} cores, `{os.uname().release}`. "
             "req/core-s is requests per second of server CPU time (utime+stime from /proc).", "",
             "| workload | server | req/s | MB/s | p50 ms | p99 ms | errors | req/core-s | vs ceiling | vs nginx | vs python | RSS after KiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for wl in WORKLOADS:
        ng = results.get((wl, "nginx"))
        py = results.get((wl, "python-http.server"))
        ce = results.get((wl, CEILING))
        for n in names:
            r = results.get((wl, n))
            if not r:
                continue
            key = "mbs" if wl in ("w4", "w5") else "rps"
            vs_ng = f"{r[key] / ng[key]:.2f}x" if ng and ng[key] else "-"
            vs_py = f"{r[key] / py[key]:.1f}x" if py and py[key] else "-"
            vs_ce = f"{r[key] / ce[key]:.2f}x" if ce and ce[key] else "-"
            lines.append(f"| {wl} {WORKLOADS[wl][0]} | {n} | {r['rps']:.0f} | {r['mbs']:.1f} | {r['p50']:.2f} | "
                         f"{r['p99']:.2f} | {r['errors']} | {r['rps_per_cpu']:.0f} | {vs_ce} | {vs_ng} | {vs_py} | "
                         f"{r['peak_rss']} |")
    counted = [(wl, n) for wl in WORKLOADS for n in names if "syscalls" in results.get((wl, n), {})]
    if counted:
        lines += ["", "System calls per request (`strace -c -f` on the server in a 3 s pass of its own, "
                  "after the timed runs; the five most frequent):", ""]
        for wl, n in counted:
            total, top = results[(wl, n)]["syscalls"]
            lines.append(f"- {wl} {n}: {total:.2f} ({', '.join(f'{k} {v:.2f}' for k, v in top)})")
    lines += ["", "Idle RSS (KiB) right after start, before any request:", ""]
    for n in names:
        if ("idle", n) in results:
            extra = ""
            if ("idle10k", n) in results:
                per = results[("idle10k", n)]
                fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)
                extra = ("; KiB per idle connection (10,000): " +
                         ", ".join(f"{k} {fmt(v)}" for k, v in per.items()))
            lines.append(f"- {n}: {results[('idle', n)]['rss']}{extra}")
    lines += ["", "Load commands (URL ports vary per run):", ""]
    seen = set()
    for (wl, n), r in results.items():
        if "cmd" in r and wl not in seen:
            seen.add(wl)
            lines.append(f"- {wl}: `taskset -c {LOAD_CORE} {r['cmd']}`")
    lines += ["", "Server configurations:", ""]
    for n, c in configs.items():
        if c:
            lines += [f"{n}:", "```", c.strip(), "```", ""]
    text = "\n".join(lines) + "\n"
    out = ROOT / f"benches/results/{args.out}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    chart = out.with_name("chart.svg" if args.out == "latest" else f"{args.out}.svg")
    chart.write_text(svg_chart(results, names))
    print(text)
    print(f"wrote {out} and {chart}")


def svg_chart(results, names):
    """Grouped bars: each server's throughput on each workload as a multiple
    of nginx's in the same run (MB/s for w4 and w5, req/s otherwise). A plain
    SVG written by hand, so the suite needs no plotting library."""
    peers = [n for n in names if n != "nginx"]
    wls = [w for w in WORKLOADS if (w, "nginx") in results]
    colors = ["#d9480f", "#1971c2", "#2f9e44", "#868e96", "#7048e8"]
    ratios = {}
    for w in wls:
        key = "mbs" if w in ("w4", "w5") else "rps"
        base = results[(w, "nginx")][key]
        for n in peers:
            r = results.get((w, n))
            if r and base:
                ratios[(w, n)] = r[key] / base
    top = max([2.0] + [v for v in ratios.values()])
    top = float(int(top + 0.999))
    width, height, left, bottom, plot_h = 760, 340, 50, 60, 240
    group_w = (width - left - 20) / max(1, len(wls))
    bar_w = group_w * 0.8 / max(1, len(peers))
    y = lambda v: 20 + plot_h * (1 - v / top)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="14" font-size="12">Throughput as a multiple of nginx in the same run '
           f'(1.0x = nginx; one worker each, pinned cores; {time.strftime("%Y-%m-%d")})</text>']
    step = 0.5 if top <= 4 else 1.0
    v = 0.0
    while v <= top + 1e-9:
        out.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="{"#000" if abs(v - 1) < 1e-9 else "#ddd"}"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}x</text>')
        v += step
    for i, w in enumerate(wls):
        gx = left + i * group_w + group_w * 0.1
        for j, n in enumerate(peers):
            r = ratios.get((w, n))
            if r is None:
                continue
            x = gx + j * bar_w
            out.append(f'<rect x="{x:.1f}" y="{y(r):.1f}" width="{bar_w - 1:.1f}" height="{y(0) - y(r):.1f}" '
                       f'fill="{colors[j % len(colors)]}"><title>{n} {w}: {r:.2f}x</title></rect>')
        out.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{y(0) + 14:.1f}" text-anchor="middle">{w}</text>')
    for j, n in enumerate(peers):
        x = left + j * 170
        out.append(f'<rect x="{x}" y="{height - 22}" width="10" height="10" fill="{colors[j % len(colors)]}"/>')
        out.append(f'<text x="{x + 14}" y="{height - 13}">{n}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
