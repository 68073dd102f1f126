#!/usr/bin/env python3
"""HTTP/2 control-frame floods against a server: the CPU it spends and
whether it closes the connection.

For each frame kind (WINDOW_UPDATE, PRIORITY, SETTINGS, PING, empty DATA),
one connection sends the client preface, an empty SETTINGS, and then that
frame in batches of 100 for at most SECONDS seconds or until the server
closes. Reported: frames sent, whether and when the server closed, and the
server process's CPU time (user + system, from /proc) over the flood.

Usage: benches/h2_flood.py --pid PID --port PORT [--seconds 5]
Start the server first (ruchy-serve with an h2c-capable plain listener, or
nginx with `listen ... http2`), on loopback, pinned with taskset if you
compare.
"""
import argparse
import os
import select
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TICK = os.sysconf("SC_CLK_TCK")


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def flood(port, prelude, one, seconds):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    batch = one * 100
    out = PREFACE + frame(4, 0, 0) + prelude
    sent, closed_at, start = 0, None, time.monotonic()
    while time.monotonic() - start < seconds:
        r, w, _ = select.select([s], [s], [], 0.05)
        if r:
            try:
                if not s.recv(65536):
                    closed_at = time.monotonic() - start
                    break
            except (ConnectionResetError, BrokenPipeError):
                closed_at = time.monotonic() - start
                break
        if w:
            if not out:
                out = batch
                sent += 100
            try:
                n = s.send(out)
                out = out[n:]
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed_at = time.monotonic() - start
                break
    s.close()
    return sent, closed_at


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    # HEADERS for GET / on stream 1 without END_STREAM (its body may follow):
    # :method GET, :scheme http, :path /, :authority x (HPACK literals).
    open_stream = frame(1, 0x4, 1, b"\x82\x86\x84\x41\x01x")
    cases = [
        ("WINDOW_UPDATE", b"", frame(8, 0, 0, struct.pack(">I", 1))),
        ("PRIORITY", b"", frame(2, 0, 3, b"\x00\x00\x00\x01\x10")),
        ("SETTINGS", b"", frame(4, 0, 0)),
        ("PING", b"", frame(6, 0, 0, b"\x00" * 8)),
        ("empty DATA", open_stream, frame(0, 0, 1)),
    ]
    print(f"| frames | sent | closed after | server CPU over the flood |")
    print(f"|---|--:|--:|--:|")
    for name, prelude, one in cases:
        before = cpu_seconds(a.pid)
        t0 = time.monotonic()
        sent, closed = flood(a.port, prelude, one, a.seconds)
        wall = time.monotonic() - t0
        used = cpu_seconds(a.pid) - before
        shown = f"{closed:.2f} s" if closed is not None else f"open at {a.seconds:.0f} s"
        print(f"| {name} | {sent} | {shown} | {used:.2f} s in {wall:.1f} s |")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
