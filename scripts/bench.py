#!/usr/bin/env python3
"""Benchmarks, reported as ratios within one run (DESIGN.md section 9). Groups (--only):

- startup: wall time of `boundary run --jail-type nsjail|landjail -- true` vs bare `true`, and vs
  `bwrap --unshare-all` and Anthropic's sandbox-runtime (`srt true`) when installed
- firstbyte: launch to answer, `boundary run -- curl https://...` (one GET, a fresh jail each time), on the
  fast path and intercepted (a path rule), both modes, vs the same curl bare
- https: through the explicit proxy vs direct and Squid: bulk (one GET of --mib MiB) and new connections per
  second (CONNECT + TLS + GET, 16 in parallel), boundary on the fast path (spliced) and intercepted (mitmproxy);
  the proxy's peak RSS
- http: plain HTTP, `ab -n N -c 16`, direct, through the explicit proxy (`-X`), Squid (`-X`) and from inside
  nsjail (transparent)
- connect: p50/p99 of one connect() call, outside any jail vs inside landjail (without the shim), where
  boundary's socket supervisor does each connect: to the proxy's own port and to another loopback address
  (sent to the transparent listener, destination recorded)
- bulk: plain-HTTP bulk direct, through the proxy (fast path, mitmproxy streamed) and from inside each jail
  (transparent); sequential new L4 connections (CONNECT + one request) vs direct

Squid, bwrap and srt rows are skipped when those are not installed, with the command that installs them.
Compared commands run interleaved, round by round (--rounds, --runs), and each row prints the median and the
range. --json PATH writes every row. Run it as a non-root user (the numbers should be a user's).

Usage: python scripts/bench.py [--only startup,firstbyte,https,http,connect,bulk] [--mib 1024] [--urls 1000]
       [--conns 500] [--runs 21] [--rounds 5] [--requests 5000] [--connects 2000] [--json PATH]
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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import Upstream, boundary_proxy, make_ca, server_tls


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
            times[name].append(timed_run(argv, ws))
    shutil.rmtree(ws, ignore_errors=True)
    bare = statistics.median(times["bare true"])
    return [(f"startup {k}", _spread(v, "ms"), f"{statistics.median(v) / bare:.1f}") for k, v in times.items()]


SKIPPED: list[str] = []


def timed_run(argv: list[str], cwd: Path | str, env: dict[str, str] | None = None, limit: float = 120) -> float:
    """Wall milliseconds of one run. Not subprocess.run(timeout=...): its wait polls with sleeps of up to 50 ms,
    which rounds every time up to the next poll; a watchdog kills a run that outlives ``limit`` instead."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=cwd, env=env)
    watchdog = threading.Timer(limit, proc.kill)
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    ms = (time.perf_counter() - t0) * 1000
    if code != 0:
        raise subprocess.CalledProcessError(code, argv)
    return ms


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


def curl_parallel(urls: int, url: str, proxy: str | None, cafile: Path) -> float:
    """New connections per second: ``urls`` GETs, 16 at a time, each on a connection of its own (the server
    closes after each answer: through a proxy, every GET is a new CONNECT + TLS handshake)."""
    with tempfile.NamedTemporaryFile("w", suffix=".curlrc") as cfg:
        cfg.write(f'url = "{url}"\noutput = "/dev/null"\n' * urls)
        cfg.flush()
        argv = ["curl", "-sS", "--no-progress-meter", "--fail", "-Z", "--parallel-max", "16", "--noproxy", "",
                "--cacert", str(cafile), "-H", "Connection: close", "-K", cfg.name]  # fmt: skip
        argv += _via(proxy, url)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, timeout=900, stdout=subprocess.DEVNULL)
        return urls / (time.perf_counter() - t0)


def curl_mib_s(url: str, mib: int, proxy: str | None, cafile: Path) -> float:
    args = ["curl", "-sS", "--fail", "--noproxy", "", "--cacert", str(cafile), "-o", "/dev/null", "-w",
            "%{time_total}"]  # fmt: skip
    r = subprocess.run([*args, *_via(proxy, url), url], capture_output=True, text=True, check=True, timeout=900)
    return mib / float(r.stdout)


def _via(proxy: str | None, url: str) -> list[str]:
    """curl's options to go through ``proxy``, or straight to 127.0.0.1 under the URL's name when None."""
    if proxy:
        return ["-x", proxy]
    authority = url.split("/")[2]
    return ["--resolve", f"{authority}:127.0.0.1"]


def https_rows(mib: int, urls: int, rounds: int) -> list[tuple[str, str, str]]:
    """HTTPS through the explicit proxy, against direct and Squid, interleaved by round: bulk (one GET of
    ``mib`` MiB) and new connections (CONNECT + TLS + GET, 16 in parallel); boundary on the fast path (domain
    rule: bytes spliced) and intercepted (a path rule: mitmproxy terminates TLS)."""
    rows: list[tuple[str, str, str]] = []
    with _state_dir() as tmp_s:
        tmp = Path(tmp_s)
        ca = make_ca(tmp / "ca")
        up = Upstream(tls=server_tls(ca)).start()
        common = ("--allow-private", "--host-map", "big.test=127.0.0.1", "--upstream-ca", str(ca.ca_pem))
        (tmp / "fast").mkdir()
        (tmp / "mitm").mkdir()
        with (
            boundary_proxy(tmp / "fast", "--allow", "domain=big.test", *common) as fast,
            boundary_proxy(tmp / "mitm", "--allow", "domain=big.test path=/*", *common) as mitm,
            squid(tmp, ["big.test"]) as squid_port,
        ):
            base = f"https://big.test:{up.port}"
            # the intercepting proxy's CA exists once mitmproxy has started: one request first
            curl_mib_s(f"{base}/c", 1, mitm.url, mitm.mitm_ca)
            proxies: dict[str, tuple[str | None, Path]] = {
                "direct": (None, ca.ca_pem),
                "boundary (fast path)": (fast.url, ca.ca_pem),
                "boundary intercepted (mitmproxy)": (mitm.url, mitm.mitm_ca),
            }
            if squid_port is not None:
                proxies["Squid"] = (f"http://127.0.0.1:{squid_port}", ca.ca_pem)
            bulk: dict[str, list[float]] = {k: [] for k in proxies}
            conns: dict[str, list[float]] = {k: [] for k in proxies}
            for _ in range(rounds):
                for name, (proxy, cafile) in proxies.items():
                    bulk[name].append(curl_mib_s(f"{base}/big/{mib << 20}", mib, proxy, cafile))
                    conns[name].append(curl_parallel(urls, f"{base}/c", proxy, cafile))
            rss = {name: p.peak_rss_kb() / 1024 for name, p in (("fast path", fast), ("intercepted", mitm))}
        up.stop()
    for what, table, unit in ((f"HTTPS bulk {mib} MiB", bulk, "MiB/s"), ("HTTPS new conn/s, 16 parallel", conns,
                                                                          "conn/s")):  # fmt: skip
        direct = statistics.median(table["direct"])
        for name, vals in table.items():
            rows.append((f"{what}, {name}", _spread(vals, unit), f"{statistics.median(vals) / direct:.2f}"))
    rows += [(f"  proxy peak RSS, {k}", f"{v:.1f} MiB", "") for k, v in rss.items()]
    return rows


def first_byte_rows(runs: int) -> list[tuple[str, str, str]]:
    """Launch to answer: the wall time of `boundary run -- curl https://...` (one GET, a fresh jail each time),
    fast path and intercepted, both modes, against the same curl run bare; interleaved by round."""
    with _state_dir() as tmp_s:
        tmp = Path(tmp_s)
        ws = tmp / "ws"  # the workspace: the jail's curl reads the test CA from here
        ca = make_ca(ws)
        up = Upstream(tls=server_tls(ca)).start()
        url = f"https://big.test:{up.port}/c"
        curl = ["curl", "-sS", "--fail", "-o", "/dev/null", url]
        common = ("--allow-private", "--host-map", "big.test=127.0.0.1", "--upstream-ca", str(ca.ca_pem))
        resolve = ["--resolve", f"big.test:{up.port}:127.0.0.1"]
        cases: dict[str, list[str]] = {"bare curl": [*curl[:-1], "--cacert", str(ca.ca_pem), *resolve, url]}
        for mode in ("nsjail", "landjail"):
            run = boundary_run("--audit-log", str(tmp / f"{mode}.jsonl"), "--jail-type", mode, *common)
            cases[f"boundary {mode}, fast path"] = [*run, "--allow", "domain=big.test", "--", *curl[:-1],
                                                    "--cacert", str(ca.ca_pem), url]  # fmt: skip
            # intercepted: the jail's curl trusts boundary's CA by default (the merged bundle)
            cases[f"boundary {mode}, intercepted"] = [*run, "--allow", "domain=big.test path=/*", "--", *curl]
        times: dict[str, list[float]] = {k: [] for k in cases}
        env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}
        for _ in range(runs):
            for name, argv in cases.items():
                times[name].append(timed_run(argv, ws, env))
        up.stop()
    bare = statistics.median(times["bare curl"])
    return [(f"launch to answer, one HTTPS GET, {k}", _spread(v, "ms"), f"{statistics.median(v) / bare:.1f}")
            for k, v in times.items()]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--conns", type=int, default=500, help="sequential new connections per L4 case")
    ap.add_argument("--urls", type=int, default=1000, help="HTTPS GETs, each on a new connection, per case and round")
    ap.add_argument("--runs", type=int, default=21, help="startup runs (median)")
    ap.add_argument("--connects", type=int, default=2000, help="connect() calls timed per case")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the throughput comparisons")
    ap.add_argument("--requests", type=int, default=5000, help="ab requests per plain-HTTP case and round")
    ap.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {','.join(GROUPS)}")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args()
    groups = set(a.only.split(","))
    if groups - set(GROUPS):
        ap.error(f"unknown group(s) {','.join(sorted(groups - set(GROUPS)))}; known: {','.join(GROUPS)}")
    rows: list[tuple[str, str, str]] = []
    if "startup" in groups:
        with _state_dir() as tmp:
            rows += startup_rows(a.runs, str(Path(tmp) / "audit.jsonl"))
    if "firstbyte" in groups:
        rows += first_byte_rows(max(3, a.runs // 2))
    if "https" in groups:
        rows += https_rows(a.mib, a.urls, a.rounds)
    up = Upstream().start()
    if "http" in groups:
        rows += http_rows(a.requests, a.rounds, up.port)
    if "connect" in groups:
        with _state_dir() as tmp:
            rows += connect_rows(a.connects, up.port, str(Path(tmp) / "audit.jsonl"))
    if "bulk" in groups:
        rows += bulk_rows(a.mib, a.conns, up.port)
    up.stop()
    return _print(rows, a.json)


GROUPS = ("startup", "firstbyte", "https", "http", "connect", "bulk")


def bulk_rows(mib: int, conns: int, port: int) -> list[tuple[str, str, str]]:
    """Plain-HTTP bulk: direct, through the explicit proxy (plain-HTTP fast path; mitmproxy under a path rule),
    and from inside each jail (transparent); sequential new L4 connections (CONNECT, then one request)."""
    url = f"http://big.test:{port}/big/{mib << 20}"
    t_direct = curl_get(f"http://127.0.0.1:{port}/big/{mib << 20}", None, False)
    rows = [("plain bulk direct", f"{mib / t_direct:.0f} MiB/s", "1.00")]
    for label, rule in (("plain bulk via proxy (fast path)", "domain=big.test"),
                        ("plain bulk via proxy (mitmproxy, streamed)", "domain=big.test path=/big/*")):  # fmt: skip
        with (
            _state_dir() as tmp,
            boundary_proxy(Path(tmp), "--allow", rule, "--allow-private", "--host-map", "big.test=127.0.0.1") as p,
        ):
            t = curl_get(url, p.url, False)
            rows.append((label, f"{mib / t:.0f} MiB/s", f"{t_direct / t:.2f}"))
            rows.append((f"  peak RSS, {label}", f"{p.peak_rss_kb() / 1024:.1f} MiB", ""))
            if rule == "domain=big.test":
                direct = conns_per_s(conns, port, None)
                via = conns_per_s(conns, port, p.port)
                rows.append(("new L4 connections direct, sequential", f"{direct:.0f}/s", "1.00"))
                rows.append(("new L4 connections via CONNECT, sequential", f"{via:.0f}/s", f"{via / direct:.2f}"))
    with _state_dir() as tmp:
        for mode, extra, noproxy in (("nsjail", [], []), ("landjail", ["--no-shim"], ["--noproxy", "*"])):
            r = subprocess.run(
                boundary_run(
                    "--audit-log", str(Path(tmp) / "audit.jsonl"), "--jail-type", mode, *extra, "--allow",
                    "domain=big.test", "--allow-private", "--host-map", "big.test=127.0.0.1",
                    "--", "curl", "-sS", *noproxy, "-o", "/dev/null", "-w", "%{time_total}", url,
                ),
                capture_output=True, text=True, check=True, timeout=900,
            )  # fmt: skip
            t = float(r.stdout)
            rows.append((f"plain bulk inside {mode} (transparent)", f"{mib / t:.0f} MiB/s", f"{t_direct / t:.2f}"))
    return rows


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
