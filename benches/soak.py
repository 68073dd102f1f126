#!/usr/bin/env python3
"""Soak: mixed load for a long time, with reloads and certificate rotations,
watching errors, RSS and open file descriptors. Not a CI test: a bench.

Load (all at once, for --duration seconds, default 600):
  wrk  keep-alive 1 KiB, 20 connections
  wrk  Connection: close 1 KiB, 10 connections
  wrk  Range: bytes=100-2099 on a 64 KiB file (206), 5 connections
  wrk  If-None-Match with the current ETag (304), 5 connections
  wrk  404s, 5 connections
  wrk  4 MiB file, 2 connections
  wrk  TLS keep-alive 1 KiB, 5 connections
  h2load HTTP/2 1 KiB, 4 connections x 10 streams
  a Python client that fetches every fixture once a second and compares
  status and bytes (a wrong byte is an error)
Events: SIGHUP every 10 s (the config alternates a header value, so each
reload really changes something), a new certificate every 30 s (written
atomically over the configured files). Every 5 s: RSS and open fds.

Writes benches/results/soak.md and prints it. Exit status 1 if any request
failed, a reload failed, or RSS/fds grew without bound (the last third of the
run more than 20% above the first third).
"""

import argparse
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_cert(work: Path, serial: int):
    """A fresh self-signed P-256 certificate, swapped in by rename."""
    tmpc, tmpk = work / "cert.pem.new", work / "key.pem.new"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", tmpk, "-out", tmpc, "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-set_serial", str(serial)],
                   check=True, capture_output=True)
    os.replace(tmpk, work / "key.pem")
    os.replace(tmpc, work / "cert.pem")


def config(work: Path, http_port, tls_port, metrics_port, generation):
    return f"""root = "{work / 'www'}"
allow_root = true
[[listen]]
address = "127.0.0.1:{http_port}"
[[listen]]
address = "127.0.0.1:{tls_port}"
tls = true
[[tls.certificates]]
cert = "{work / 'cert.pem'}"
key = "{work / 'key.pem'}"
[tls]
watch_interval = "5s"
[log]
access_log = "off"
level = "warn"
[metrics]
address = "127.0.0.1:{metrics_port}"
[[headers.rules]]
glob = "**"
set = {{ "x-soak-generation" = "{generation % 2}" }}
"""


def proc_stat(pid):
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def metric(port, name, labels=""):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class Verifier(threading.Thread):
    """Fetches each fixture once a second over a new connection and checks
    status and bytes."""

    def __init__(self, port, files):
        super().__init__(daemon=True)
        self.port, self.files = port, files
        self.ok = self.bad = 0
        self.failures = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            for path, (status, want, headers) in self.files.items():
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    c.request("GET", path, headers=headers)
                    r = c.getresponse()
                    body = r.read()
                    c.close()
                    if r.status == status and (want is None or body == want):
                        self.ok += 1
                    else:
                        self.bad += 1
                        self.failures.append(f"{time.strftime('%H:%M:%S')} {path}: {r.status}, {len(body)} bytes")
                except OSError as e:
                    self.bad += 1
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {path}: {e}")


def parse_wrk(out):
    req = int(re.search(r"(\d+) requests in", out).group(1))
    errs = 0
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if se:
        errs += sum(int(x) for x in se.groups())
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return req, errs, int(non.group(1)) if non else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=600)
    ap.add_argument("--binary")
    args = ap.parse_args()
    for tool in ("wrk", "h2load", "openssl"):
        if not shutil.which(tool):
            subprocess.run(["apt-get", "install", "-y", "-qq", {"h2load": "nghttp2-client"}.get(tool, tool)],
                           check=True)
    if args.binary:
        binary = Path(args.binary).resolve()
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = ROOT / "target/release/ruchy-serve"
    work = Path(tempfile.mkdtemp(prefix="ruchy-soak-"))
    www = work / "www"
    www.mkdir()
    one_k = (b"<p>soak</p>\n" * 100)[:1024]
    js = bytes((i * 7) % 251 for i in range(64 * 1024))
    big = os.urandom(4 << 20)
    (www / "1k.html").write_bytes(one_k)
    (www / "64k.js").write_bytes(js)
    (www / "4m.bin").write_bytes(big)
    serial = 1
    new_cert(work, serial)
    http_port, tls_port, metrics_port = free_port(), free_port(), free_port()
    cfg = work / "soak.toml"
    generation = 0
    cfg.write_text(config(work, http_port, tls_port, metrics_port, generation))
    log = open(work / "server.log", "w")
    server = subprocess.Popen(["taskset", "-c", "0", str(binary), "--config", str(cfg)], stderr=log)
    base = f"http://127.0.0.1:{http_port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    c = http.client.HTTPConnection("127.0.0.1", http_port)
    c.request("HEAD", "/1k.html")
    etag = c.getresponse().getheader("etag")
    c.close()

    d = str(args.duration)
    loads = {
        "keep-alive 1 KiB": ["wrk", "-t1", "-c20", f"-d{d}s", f"{base}/1k.html"],
        "Connection: close": ["wrk", "-t1", "-c10", f"-d{d}s", "-H", "Connection: close", f"{base}/1k.html"],
        "range (206)": ["wrk", "-t1", "-c5", f"-d{d}s", "-H", "Range: bytes=100-2099", f"{base}/64k.js"],
        "If-None-Match (304)": ["wrk", "-t1", "-c5", f"-d{d}s", "-H", f"If-None-Match: {etag}", f"{base}/1k.html"],
        "404": ["wrk", "-t1", "-c5", f"-d{d}s", f"{base}/missing.html"],
        "4 MiB": ["wrk", "-t1", "-c2", f"-d{d}s", f"{base}/4m.bin"],
        "TLS keep-alive": ["wrk", "-t1", "-c5", f"-d{d}s", f"https://localhost:{tls_port}/1k.html"],
        "HTTP/2": ["h2load", "-c4", "-m10", "-t1", "-D", d, f"{base}/1k.html"],
    }
    procs = {name: subprocess.Popen(["taskset", "-c", "1"] + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, cmd in loads.items()}
    verifier = Verifier(http_port, {
        "/1k.html": (200, one_k, {}),
        "/64k.js": (206, js[100:2100], {"Range": "bytes=100-2099"}),
        "/4m.bin": (200, big, {}),
        "/missing.html": (404, None, {}),
    })
    verifier.start()
    samples = []
    reloads = rotations = 0
    start = time.time()
    next_reload, next_rotate, next_sample = start + 10, start + 30, start
    while time.time() < start + args.duration:
        now = time.time()
        if now >= next_sample:
            rss, fds = proc_stat(server.pid)
            samples.append((round(now - start), rss, fds))
            next_sample += 5
        if now >= next_reload:
            generation += 1
            cfg.write_text(config(work, http_port, tls_port, metrics_port, generation))
            server.send_signal(signal.SIGHUP)
            reloads += 1
            next_reload += 10
        if now >= next_rotate:
            serial += 1
            new_cert(work, serial)
            rotations += 1
            next_rotate += 30
        time.sleep(0.2)
    outputs = {name: p.communicate(timeout=120)[0] for name, p in procs.items()}
    verifier.stop.set()
    verifier.join()
    time.sleep(1)
    ok_reloads = metric(metrics_port, "ruchy_serve_config_reloads_total", 'result="success"')
    failed_reloads = metric(metrics_port, "ruchy_serve_config_reloads_total", 'result="failure"')
    # The certificate the server hands out now: the last one written?
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", tls_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as t:
            der = t.getpeercert(binary_form=True)
    served = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                            capture_output=True).stdout.decode().strip()
    rss_end, fds_end = proc_stat(server.pid)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    log.close()

    rows = []
    total_req = total_err = 0
    for name, out in outputs.items():
        if name == "HTTP/2":
            st = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                           r"(\d+) errored", out)
            req, errs = int(st.group(4)), int(st.group(5)) + int(st.group(6))
            rows.append((name, req, errs, "-"))
        else:
            req, errs, non = parse_wrk(out)
            expected_non = name == "404"
            if not expected_non:
                errs += non
            rows.append((name, req, errs, f"{non} (all 404, expected)" if expected_non else str(non)))
        total_req += req
        total_err += errs
    total_req += verifier.ok + verifier.bad
    total_err += verifier.bad
    third = max(1, len(samples) // 3)
    first_rss = statistics.median(s[1] for s in samples[:third])
    last_rss = statistics.median(s[1] for s in samples[-third:])
    first_fds = statistics.median(s[2] for s in samples[:third])
    last_fds = statistics.median(s[2] for s in samples[-third:])
    grew = last_rss > first_rss * 1.2 or last_fds > first_fds * 1.2 + 10
    lines = [f"# Soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"`benches/soak.py --duration {args.duration}`: server on core 0 (default workers), all load "
             f"generators on core 1. {reloads} reloads (SIGHUP every 10 s, config changed each time), "
             f"{rotations} certificate rotations (every 30 s).", "",
             "| load | requests | errors | non-2xx/3xx |", "|---|---:|---:|---|"]
    lines += [f"| {n} | {r} | {e} | {x} |" for n, r, e, x in rows]
    lines += [f"| verifier (status and bytes, new connection each) | {verifier.ok + verifier.bad} | "
              f"{verifier.bad} | - |", "",
              f"- requests: {total_req}, errors: {total_err}",
              f"- reloads: sent {reloads}, succeeded {ok_reloads:.0f}, failed {failed_reloads:.0f}",
              f"- certificate served at the end: {served} (last written: serial={serial:02X})",
              f"- RSS KiB: first sample {samples[0][1]}, end {rss_end}, max {max(s[1] for s in samples)}; "
              f"median first third {first_rss:.0f}, last third {last_rss:.0f}",
              f"- open fds: first sample {samples[0][2]}, end {fds_end}, max {max(s[2] for s in samples)}; "
              f"median first third {first_fds:.0f}, last third {last_fds:.0f}",
              f"- verdict: {'FAIL' if total_err or failed_reloads or grew else 'pass'}", "",
              "RSS and fds over time (every 60 s):", "", "| t (s) | RSS KiB | fds |", "|---:|---:|---:|"]
    lines += [f"| {t} | {r} | {f} |" for t, r, f in samples if t % 60 < 5]
    if verifier.failures:
        lines += ["", "Verifier failures (first 20):", ""] + [f"- {f}" for f in verifier.failures[:20]]
    text = "\n".join(lines) + "\n"
    (ROOT / "benches/results").mkdir(exist_ok=True)
    (ROOT / "benches/results/soak.md").write_text(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if total_err or failed_reloads or grew else 0)


if __name__ == "__main__":
    main()
