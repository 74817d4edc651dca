#!/usr/bin/env python3
"""Measures the hostile-input findings of issue 14 against a built binary: RSS while abusive
clients are connected and after they leave (findings 1 and 4), and probe latency while bodies
of many empty gzip members arrive (finding 3). Python stdlib only; all traffic to 127.0.0.1;
every scenario bounded in count and time.

    cargo build --release
    scripts/hostile-measure.py target/release/event-ingest [findings: 1 3 4]

Needs ClickHouse at CLICKHOUSE_HOST:CLICKHOUSE_PORT (the binary's start-up reaches it).
"""

import gzip
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start(binary, extra):
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "APP_ENV": "test",
        "HTTP_HOST": HOST,
        "HTTP_PORT": str(port),
        "HTTP_WORKERS": "2",
        "CLICKHOUSE_HOST": os.environ.get("CLICKHOUSE_HOST", "127.0.0.1"),
        "CLICKHOUSE_PORT": os.environ.get("CLICKHOUSE_PORT", "8123"),
        "CLICKHOUSE_NAME": "hostile_measure",
        "INGEST_API_KEYS": "k",
        "RUST_LOG": "error",
    }
    # glibc allocator settings pass through, to compare the allocator's part in a figure.
    env.update({k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))})
    env.update(extra)
    proc = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=2)
            c.request("GET", "/v1/ready")
            c.getresponse().read()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the binary did not answer")


def request_head(length, extra=""):
    return (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        f"Content-Type: application/json\r\n{extra}Content-Length: {length}\r\n\r\n"
    ).encode()


def sample_peak(pid, seconds):
    peak = 0.0
    end = time.time() + seconds
    while time.time() < end:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.25)
    return peak


def settle(pid, seconds=(5, 15, 30)):
    """RSS at each of `seconds` after the clients closed, as text."""
    start, out = time.time(), []
    for at in seconds:
        time.sleep(max(0, start + at - time.time()))
        out.append(f"{rss_mb(pid):.0f} MB at {at} s")
    return ", ".join(out)


def finding_1(binary, connections=150):
    """Connections sending a 10 KB gzip envelope whose `events` is a 9.9 MB string, never
    reading the answer."""
    proc, port = start(binary, {})
    base = rss_mb(proc.pid)
    body = gzip.compress(b'{"events": "' + b"x" * (9_900_000) + b'"}')
    socks = []
    for _ in range(connections):
        s = socket.create_connection((HOST, port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(request_head(len(body), "Content-Encoding: gzip\r\n") + body)
        socks.append(s)
    held = sample_peak(proc.pid, 10)
    for s in socks:
        s.close()
    after = settle(proc.pid)
    proc.kill()
    proc.wait()
    print(
        f"finding 1: {connections} non-reading clients, 10 KB gzip each ({len(body)} B): "
        f"RSS {base:.0f} MB before, peak {held:.0f} MB during 10 s; after they closed: {after}"
    )


def finding_3(binary, clients=4, seconds=8):
    """Clients sending 10 MB bodies of empty gzip members then `[]`, while /v1/ready is
    probed every 100 ms."""
    proc, port = start(binary, {})
    member = gzip.compress(b"")
    body = member * ((10_000_000 - 30) // len(member)) + gzip.compress(b"[]")
    stop = time.time() + seconds
    statuses = []

    def abuse():
        while time.time() < stop:
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=30)
                c.request(
                    "POST",
                    "/v1/events",
                    body,
                    {
                        "Authorization": "Bearer k",
                        "Content-Type": "application/json",
                        "Content-Encoding": "gzip",
                    },
                )
                statuses.append(c.getresponse().status)
                c.close()
            except OSError:
                statuses.append("error")

    threads = [threading.Thread(target=abuse) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    latencies, probe_codes = [], []
    while time.time() < stop:
        t0 = time.time()
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=10)
            c.request("GET", "/v1/ready")
            r = c.getresponse()
            r.read()
            probe_codes.append(r.status)
        except OSError:
            probe_codes.append("error")
        latencies.append((time.time() - t0) * 1000)
        time.sleep(0.1)
    for t in threads:
        t.join()
    proc.kill()
    proc.wait()
    latencies.sort()
    print(
        f"finding 3: {clients} clients x {len(body)} B of {len(body) // len(member)} empty gzip members: "
        f"answers {sorted(set(map(str, statuses)))} ({len(statuses)} requests); /v1/ready "
        f"median {statistics.median(latencies):.0f} ms, p95 {latencies[int(len(latencies) * 0.95)]:.0f} ms, "
        f"max {latencies[-1]:.0f} ms, codes {sorted(set(map(str, probe_codes)))}"
    )


def finding_4(binary, connections=200):
    """Keyed connections each sending 9.99 MB of a 10 MB body, then waiting."""
    proc, port = start(binary, {"CLIENT_TIMEOUT_MS": "30000"})
    base = rss_mb(proc.pid)
    length = 10 * 1024 * 1024 - 1024
    chunk = b"[" + b" " * (length - 1024 - 1)
    socks, refused = [], 0
    for _ in range(connections):
        s = socket.create_connection((HOST, port))
        s.settimeout(5)
        try:
            s.sendall(request_head(length) + chunk)
        except OSError:
            refused += 1
        socks.append(s)
    held = sample_peak(proc.pid, 5)
    answered = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(12).startswith(b"HTTP/1.1 503"):
                answered += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    after = settle(proc.pid)
    proc.kill()
    proc.wait()
    print(
        f"finding 4: {connections} connections x 9.99 MB of a 10 MB body: RSS {base:.0f} MB before, "
        f"peak {held:.0f} MB while held; after they closed: {after}; "
        f"{answered} got 503 early, {refused} could not send"
    )


if __name__ == "__main__":
    binary = sys.argv[1]
    which = sys.argv[2:] or ["1", "3", "4"]
    for f in which:
        {"1": finding_1, "3": finding_3, "4": finding_4}[f](binary)
