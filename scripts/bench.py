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

- plain HTTP through the explicit proxy (`ab -n N -c 16 -X`) and from inside nsjail (transparent), against Squid
  on the same upstream when Squid is installed; startup also against bwrap and Anthropic's sandbox-runtime (srt)
  when installed (skipped otherwise, with the command that installs them)

Compared commands run interleaved, round by round (--rounds), and each row prints the median and the range.
--json PATH writes every row. Run it as a non-root user (the jail refuses nothing as root, but the numbers would
not be a user's).

Usage: python scripts/bench.py [--mib 1024] [--conns 500] [--runs 21] [--rounds 5] [--requests 5000] [--json PATH]
       [--only startup,http,connect,bulk]
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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


def startup_rows(runs: int, audit: str) -> list[tuple[str, str, str]]:
    """Wall time of `true` bare, under bwrap and srt when installed, and under boundary in both modes: the
    commands interleaved, one of each per round."""
    cases: dict[str, list[str]] = {"bare true": ["true"]}
    if shutil.which("bwrap"):
        cases["bwrap --unshare-all true"] = ["bwrap", "--unshare-all", "--dev-bind", "/", "/", "true"]
    else:
        SKIPPED.append("bwrap (apt-get install bubblewrap)")
    if shutil.which("srt"):
        cases["srt true (sandbox-runtime)"] = ["srt", "true"]
    else:
        SKIPPED.append("sandbox-runtime (npm install -g @anthropic-ai/sandbox-runtime)")
    for mode in ("nsjail", "landjail"):
        cases[f"boundary {mode} true"] = boundary_run("--audit-log", audit, "--jail-type", mode, "--", "true")
    times: dict[str, list[float]] = {k: [] for k in cases}
    # an empty workspace: boundary looks for git repositories in it (bounded), which a big tree makes slower
    ws = tempfile.mkdtemp(prefix=".boundary-bench-ws-", dir=Path.home())
    for _ in range(runs):
        for name, argv in cases.items():
            t0 = time.perf_counter()
            subprocess.run(
                argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=120, cwd=ws
            )  # fmt: skip
            times[name].append((time.perf_counter() - t0) * 1000)
    shutil.rmtree(ws, ignore_errors=True)
    bare = statistics.median(times["bare true"])
    return [(f"startup {k}", _spread(v, "ms"), f"{statistics.median(v) / bare:.1f}") for k, v in times.items()]


SKIPPED: list[str] = []


def _spread(values: list[float], unit: str) -> str:
    """median [min-max]"""
    return f"{statistics.median(values):.0f} {unit} [{min(values):.0f}-{max(values):.0f}]"


@contextlib.contextmanager
def squid(tmp: Path, names: list[str]) -> Iterator[int | None]:
    """Squid on a loopback port with an allowlist of ``names`` (all mapped to 127.0.0.1), no cache, no log."""
    exe = shutil.which("squid") or ("/usr/sbin/squid" if os.path.exists("/usr/sbin/squid") else None)
    if exe is None:
        SKIPPED.append("Squid (apt-get install squid)")
        yield None
        return
    port = _free_port()
    (tmp / "hosts").write_text("127.0.0.1 " + " ".join(names) + "\n")
    (tmp / "squid.conf").write_text(
        f"http_port 127.0.0.1:{port}\nacl allowed dstdomain {' '.join(names)}\nhttp_access allow allowed\n"
        f"http_access deny all\ncache deny all\nhosts_file {tmp}/hosts\npid_filename {tmp}/squid.pid\n"
        f"cache_log {tmp}/cache.log\naccess_log none\ncoredump_dir {tmp}\nshutdown_lifetime 0 seconds\n"
    )
    err = open(tmp / "squid.err", "w")  # noqa: SIM115
    proc = subprocess.Popen([exe, "-N", "-f", str(tmp / "squid.conf")], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    SKIPPED.append(f"Squid (did not start: {(tmp / 'squid.err').read_text()[-200:]!r})")
                    yield None
                    return
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        err.close()


def ab(url: str, n: int, proxy_port: int | None, prefix: Sequence[str] = ()) -> tuple[float, float]:
    """(requests/s, p99 ms) of `ab -n N -c 16`, through ``proxy_port`` when given."""
    argv = [*prefix, "ab", "-q", "-n", str(n), "-c", "16"]
    if proxy_port is not None:
        argv += ["-X", f"127.0.0.1:{proxy_port}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True, timeout=900).stdout
    rps = float(next(line.split()[3] for line in out.splitlines() if line.startswith("Requests per second")))
    p99 = float(next(line.split()[1] for line in out.splitlines() if line.strip().startswith("99%")))
    return rps, p99


def http_rows(n: int, rounds: int, port: int) -> list[tuple[str, str, str]]:
    """Plain HTTP, 16 concurrent clients: direct, through boundary's explicit proxy, through Squid, and from
    inside nsjail (transparent), interleaved by round."""
    if not shutil.which("ab"):
        SKIPPED.append("plain-HTTP rows (apt-get install apache2-utils)")
        return []
    url = f"http://plain.test:{port}/small"
    results: dict[str, list[tuple[float, float]]] = {}
    with (
        _state_dir() as tmp,
        boundary_proxy(Path(tmp), "--allow", "domain=plain.test", "--allow-private", "--host-map",
                       "plain.test=127.0.0.1") as p,
        squid(Path(tmp), ["plain.test"]) as squid_port,
    ):  # fmt: skip
        jail = boundary_run(
            "--audit-log", str(Path(tmp) / "jail-audit.jsonl"), "--jail-type", "nsjail", "--allow",
            "domain=plain.test", "--allow-private", "--host-map", "plain.test=127.0.0.1", "--",
        )  # fmt: skip
        cases: dict[str, Callable[[], tuple[float, float]]] = {
            "direct": lambda: ab(f"http://127.0.0.1:{port}/small", n, None),
            "boundary explicit (-X)": lambda: ab(url, n, p.port),
            "boundary transparent (inside nsjail)": lambda: ab(url, n, None, jail),
        }
        if squid_port is not None:
            cases["Squid (-X)"] = lambda: ab(url, n, squid_port)
        for _ in range(rounds):
            for name, run in cases.items():
                results.setdefault(name, []).append(run())
    direct = statistics.median(r for r, _ in results["direct"])
    rows = []
    for name, vals in results.items():
        rps = [r for r, _ in vals]
        p99 = statistics.median(q for _, q in vals)
        rows.append((f"plain HTTP ab -c 16, {name}", _spread(rps, "req/s") + f", p99 {p99:.0f} ms",
                     f"{statistics.median(rps) / direct:.2f}"))  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--runs", type=int, default=21, help="startup runs (median)")
    ap.add_argument("--connects", type=int, default=2000, help="connect() calls timed per case")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the throughput comparisons")
    ap.add_argument("--requests", type=int, default=5000, help="ab requests per plain-HTTP case and round")
    ap.add_argument("--only", default="startup,http,connect,bulk", help="comma-separated groups to run")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args()
    groups = set(a.only.split(","))
    up = Upstream().start()
    url = f"http://big.test:{up.port}/big/{a.mib << 20}"
    direct_url = f"http://127.0.0.1:{up.port}/big/{a.mib << 20}"
    rows: list[tuple[str, str, str]] = []
    if "startup" in groups:
        with _state_dir() as tmp:
            rows += startup_rows(a.runs, str(Path(tmp) / "audit.jsonl"))
    if "http" in groups:
        rows += http_rows(a.requests, a.rounds, up.port)
    if "connect" in groups:
        with _state_dir() as tmp:
            rows += connect_rows(a.connects, up.port, str(Path(tmp) / "audit.jsonl"))
    if "bulk" not in groups:
        return _print(rows, a.json)
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
    return _print(rows, a.json)


def _print(rows: list[tuple[str, str, str]], json_path: Path | None = None) -> int:
    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{w}}  {'value (median [range])':>30}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{w}}  {value:>30}  {ratio}")
    for what in SKIPPED:
        print(f"skipped: {what}")
    if json_path is not None:
        machine = {"cpus": os.cpu_count(), "kernel": os.uname().release, "python": sys.version.split()[0]}
        json_path.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "rows": [{"name": n, "value": v, "ratio": r} for n, v, r in rows],
                    "skipped": SKIPPED,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
