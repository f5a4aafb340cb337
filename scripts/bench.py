#!/usr/bin/env python3
"""Benchmarks, reported as ratios within one run (DESIGN.md section 9).

- startup: median wall time of `boundary run --jail-type nsjail|landjail -- true` vs bare `true` and
  `bwrap --unshare-all --dev-bind / / true` (when bwrap is installed)
- bulk: N MiB from a loopback server, direct vs through the proxy (CONNECT fast path, mitmproxy-streamed)
  and from inside an nsjail (transparent redirect, fast path)
- connections: new proxied connections per second (CONNECT + one request each) vs direct
- memory: the proxy process's peak RSS after the bulk runs
- connect latency: p50/p99 of one connect() call, outside any jail vs inside landjail (without the shim),
  where boundary's socket supervisor does each connect: to the proxy's own port (the supervisor alone) and
  to another loopback address (sent to the transparent listener, destination recorded)
- bulk inside landjail: a proxy-unaware curl (no shim), routed by the supervisor to the transparent listener

Usage: python scripts/bench.py [--mib 1024] [--conns 500] [--runs 21]
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import Upstream, boundary_proxy


def curl_get(url: str, proxy: str | None, tunnel: bool) -> float:
    args = ["curl", "-sS", "--noproxy", "", "-o", "/dev/null", "-w", "%{time_total}"]
    if proxy:
        args += ["-x", proxy] + (["-p"] if tunnel else [])
    r = subprocess.run([*args, url], capture_output=True, text=True, check=True, timeout=900)
    return float(r.stdout)


def conns_per_s(n: int, port: int, proxy_port: int | None) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        if proxy_port is None:
            s = socket.create_connection(("127.0.0.1", port))
        else:
            s = socket.create_connection(("127.0.0.1", proxy_port))
            s.sendall(f"CONNECT big.test:{port} HTTP/1.1\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(4096)
        s.sendall(b"GET /c HTTP/1.1\r\nHost: big.test\r\n\r\n")
        buf = b""
        while b"hello" not in buf:
            buf += s.recv(4096)
        s.close()
    return n / (time.perf_counter() - t0)


CONNECT_PROBE = r"""
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ts = []
for _ in range(n):
    s = socket.socket()
    t0 = time.perf_counter_ns()
    s.connect((host, port))
    ts.append(time.perf_counter_ns() - t0)
    s.close()
ts.sort()
print(json.dumps([ts[n // 2] / 1000, ts[min(n - 1, n * 99 // 100)] / 1000]))
"""


def connect_latency(prefix: list[str], host: str, port: str, n: int, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(
        [*prefix, sys.executable, "-c", CONNECT_PROBE, host, port, str(n)],
        capture_output=True, text=True, check=True, timeout=600, env=env,
    )  # fmt: skip
    p50, p99 = json.loads(r.stdout.strip().splitlines()[-1])
    return f"{p50:.0f} / {p99:.0f} us"


def connect_rows(n: int, port: int, audit: str) -> list[tuple[str, str, str]]:
    jail = boundary_run("--audit-log", audit, "--jail-type", "landjail", "--no-shim", "--")
    proxy_port = str(_free_port())
    env = {**os.environ, "BOUNDARY_PROXY_PORT": proxy_port}
    return [
        ("connect p50/p99, no jail", connect_latency([], "127.0.0.1", str(port), n), ""),
        ("connect p50/p99, landjail to the proxy", connect_latency(jail, "127.0.0.1", proxy_port, n, env), ""),
        ("connect p50/p99, landjail redirected", connect_latency(jail, "127.0.0.1", str(port), n, env), ""),
    ]


def _state_dir() -> tempfile.TemporaryDirectory[str]:
    """For audit logs and proxy state: not in /tmp or the workspace, which jails may write (boundary refuses)."""
    return tempfile.TemporaryDirectory(prefix=".boundary-bench-", dir=Path.home())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def boundary_run(*args: str) -> list[str]:
    return [sys.executable, "-m", "jail", "run", "-q", *args]


def median_wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=120)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def startup_rows(runs: int, audit: str) -> list[tuple[str, str, str]]:
    bare = median_wall(["true"], runs)
    rows = [("startup bare true", f"{bare * 1000:.1f} ms", "1.00")]
    if shutil.which("bwrap"):
        t = median_wall(["bwrap", "--unshare-all", "--dev-bind", "/", "/", "true"], runs)
        rows.append(("startup bwrap --unshare-all true", f"{t * 1000:.1f} ms", f"{t / bare:.1f}"))
    for mode in ("nsjail", "landjail"):
        t = median_wall(boundary_run("--audit-log", audit, "--jail-type", mode, "--", "true"), runs)
        rows.append((f"startup boundary {mode} true", f"{t * 1000:.1f} ms", f"{t / bare:.1f}"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--runs", type=int, default=21, help="startup runs (median)")
    ap.add_argument("--connects", type=int, default=2000, help="connect() calls timed per case")
    ap.add_argument("--only", choices=["connect"], help="run one group only")
    a = ap.parse_args()
    up = Upstream().start()
    url = f"http://big.test:{up.port}/big/{a.mib << 20}"
    direct_url = f"http://127.0.0.1:{up.port}/big/{a.mib << 20}"
    rows = []
    with _state_dir() as tmp:
        rows += connect_rows(a.connects, up.port, str(Path(tmp) / "audit.jsonl"))
    if a.only == "connect":
        return _print(rows)
    with _state_dir() as tmp:
        rows += startup_rows(a.runs, str(Path(tmp) / "audit.jsonl"))
    t_direct = curl_get(direct_url, None, False)
    rows.append(("bulk direct", f"{a.mib / t_direct:.0f} MiB/s", "1.00"))
    for label, rule, tunnel in (
        ("bulk fast path (CONNECT)", "domain=big.test", True),
        ("bulk mitmproxy (streamed)", "domain=big.test path=/big/*", False),
    ):
        with (
            _state_dir() as tmp,
            boundary_proxy(Path(tmp), "--allow", rule, "--allow-private", "--host-map", "big.test=127.0.0.1") as p,
        ):
            t = curl_get(url, p.url, tunnel)
            rows.append((label, f"{a.mib / t:.0f} MiB/s", f"{t_direct / t:.2f}"))
            rows.append((f"  peak RSS, {label}", f"{p.peak_rss_kb() / 1024:.1f} MiB", ""))
            if tunnel:
                direct = conns_per_s(a.conns, up.port, None)
                via = conns_per_s(a.conns, up.port, p.port)
                rows.append(("new connections direct", f"{direct:.0f}/s", "1.00"))
                rows.append(("new connections via proxy", f"{via:.0f}/s", f"{via / direct:.2f}"))
    with _state_dir() as tmp:
        r = subprocess.run(
            boundary_run(
                "--audit-log", str(Path(tmp) / "audit.jsonl"), "--jail-type", "nsjail", "--allow", "domain=big.test",
                "--allow-private", "--host-map", "big.test=127.0.0.1",
                "--", "curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}", url,
            ),
            capture_output=True, text=True, check=True, timeout=900,
        )  # fmt: skip
        t = float(r.stdout)
        rows.append(("bulk inside nsjail (transparent)", f"{a.mib / t:.0f} MiB/s", f"{t_direct / t:.2f}"))
        r = subprocess.run(
            boundary_run(
                "--audit-log", str(Path(tmp) / "audit.jsonl"), "--jail-type", "landjail", "--no-shim",
                "--allow", "domain=big.test", "--allow-private", "--host-map", "big.test=127.0.0.1",
                "--", "curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{time_total}", url,
            ),
            capture_output=True, text=True, check=True, timeout=900,
        )  # fmt: skip
        t = float(r.stdout)
        rows.append(("bulk inside landjail (supervisor, transparent)", f"{a.mib / t:.0f} MiB/s", f"{t_direct / t:.2f}"))
    up.stop()
    return _print(rows)


def _print(rows: list[tuple[str, str, str]]) -> int:
    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{w}}  {'value':>14}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{w}}  {value:>14}  {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
