"""nsjail mode for real: rootless namespaces, transparent redirect, fake DNS, exit status, signals,
the terminal, concurrency and clean-up after SIGKILL. Upstreams are on host loopback, reached
only through the proxy (--host-map + --allow-private)."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    CA,
    UNIX_CONNECT,
    BannerEcho,
    Upstream,
    boundary_cmd,
    boundary_env,
    boundary_run,
    own_address,
    processes_with,
    pty_run,
    unix_listener,
    wait_for,
)

NS = ("--jail-type", "nsjail")
MAP = ("--allow-private", "--host-map", "secure.test=127.0.0.1", "--host-map", "plain.test=127.0.0.1")
PY = sys.executable


def curl(*args: str) -> list[str]:
    return ["curl", "-sS", "--max-time", "30", *args]


def test_allowed_https_passes_and_keeps_the_upstream_certificate(tmp_path: Path, ca: CA, tls: Upstream) -> None:
    r = boundary_run(
        tmp_path, *NS, *MAP, "--allow", f"domain=secure.test port={tls.port}",
        "--", *curl("--cacert", str(ca.ca_pem), f"https://secure.test:{tls.port}/inside"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from /inside\n"
    recs = [x for x in r.audit_records() if x["event"] == "connection"]
    assert recs
    assert recs[-1]["decision"] == "allow"
    assert recs[-1]["host"] == "secure.test"
    assert recs[-1]["mode"] == "nsjail"


def test_denied_http_gets_403_and_denied_tls_is_reset(tmp_path: Path, ca: CA, tls: Upstream, plain: Upstream) -> None:
    script = (
        f"curl -sS --max-time 30 -w '%{{http_code}}' http://plain.test:{plain.port}/x; echo; "
        f"curl -sS --max-time 30 --cacert {ca.ca_pem} https://secure.test:{tls.port}/y; echo tls=$?"
    )
    r = boundary_run(tmp_path, *NS, *MAP, "--allow", "domain=other.test", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert "403" in r.stdout
    assert "--allow domain=plain.test" in r.stdout
    assert re.search(r"tls=(35|56)", r.stdout), r.stdout  # reset after the ClientHello
    assert "denied tls secure.test" in r.stderr
    denied = {(x["host"], x["scheme"]) for x in r.audit_records() if x["decision"] == "deny"}
    assert {("plain.test", "http"), ("secure.test", "tls")} <= denied
    assert plain.last_request_path != "/x"  # nothing reached the upstream


def test_dns_answers_locally_with_fake_addresses(tmp_path: Path) -> None:
    script = (
        "getent hosts name-that-cannot-exist.invalid; "
        "dig +short +time=5 +tries=1 another.invalid; "
        "echo aaaa=$(dig +short +time=5 +tries=1 AAAA another.invalid); "
        "echo txt=$(dig +short +time=5 +tries=1 TXT exfil.example); "
        "echo repeat=$(dig +short +time=5 +tries=1 another.invalid)"
    )
    r = boundary_run(tmp_path, *NS, "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    first = lines[0].split()
    assert first[1] == "name-that-cannot-exist.invalid"
    assert first[0].startswith("198.1")
    fake = lines[1].strip()
    assert re.fullmatch(r"198\.(18|19)\.\d+\.\d+", fake), r.stdout
    assert "aaaa=" in lines
    assert "txt=" in lines
    assert f"repeat={fake}" in lines  # stable 1:1 mapping
    dns = [x for x in r.audit_records() if x["event"] == "dns"]
    assert {"name-that-cannot-exist.invalid", "another.invalid", "exfil.example"} <= {x["host"] for x in dns}
    assert all("no upstream query" in str(x["reason"]) for x in dns)


def test_raw_tcp_to_an_allowed_name_works_even_when_the_server_speaks_first(tmp_path: Path) -> None:
    echo = BannerEcho()
    try:
        code = (
            f"import socket; s = socket.create_connection(('echo.test', {echo.port}), timeout=20); "
            "f = s.makefile('rwb'); print(f.readline().decode().strip()); f.write(b'ping\\n'); f.flush(); "
            "print(f.readline().decode().strip())"
        )
        r = boundary_run(
            tmp_path, *NS, "--allow-private", "--host-map", "echo.test=127.0.0.1",
            "--allow", f"domain=echo.test port={echo.port}", "--", PY, "-c", code,
        )  # fmt: skip
    finally:
        echo.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello from echo", "ping"]


def test_a_proxy_aware_client_using_some_proxy_address_is_served_too(tmp_path: Path, ca: CA, tls: Upstream) -> None:
    """HTTPS_PROXY inherited from the host points somewhere: the redirect brings its CONNECT to us."""
    r = boundary_run(
        tmp_path, *NS, *MAP, "--allow", f"domain=secure.test port={tls.port}",
        "--", *curl("--proxy", "http://192.0.2.10:3128", "--cacert", str(ca.ca_pem),
                    f"https://secure.test:{tls.port}/via-connect"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from /via-connect\n"


@pytest.mark.parametrize(
    ("command", "status"),
    [
        (["true"], 0),
        (["sh", "-c", "exit 7"], 7),
        (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
        (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
        (["/nonexistent/command"], 127),
        (["no-such-command-boundary"], 127),
        (["/etc/hostname"], 126),
    ],
)
def test_exit_status_passes_through(tmp_path: Path, command: list[str], status: int) -> None:
    r = boundary_run(tmp_path, *NS, "--", *command)
    assert r.returncode == status, r.stderr
    if status in (126, 127):
        assert "boundary: cannot execute" in r.stderr


def test_pid_1_is_the_init_and_the_command_has_no_capabilities(tmp_path: Path) -> None:
    script = "echo pid=$$; cat /proc/1/comm; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; id -u"
    r = boundary_run(tmp_path, *NS, "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert "pid=2" in r.stdout  # pid 1 is boundary's init, the command its first child
    assert re.search(r"CapEff:\s+0+\n", r.stdout)
    assert re.search(r"CapBnd:\s+0+\n", r.stdout)
    assert re.search(r"NoNewPrivs:\s+1", r.stdout)
    assert r.stdout.strip().splitlines()[-1] == str(os.getuid())  # the caller's own uid inside


def test_orphans_are_reaped_and_killed_with_the_command(tmp_path: Path) -> None:
    token = str(random.randint(10**8, 10**9))
    script = f"(sleep {token} &) ; (true &) ; wait; echo done"
    r = boundary_run(tmp_path, *NS, "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "done\n"
    assert not processes_with(token)  # the orphaned sleep died with the pid namespace


def _ns_inodes() -> set[str]:
    seen = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            for kind in ("net", "user", "mnt", "pid_for_children"):
                try:
                    seen.add(os.readlink(p / "ns" / kind))
                except OSError:
                    continue
    return seen


@pytest.fixture
def started(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`boundary run -- <a command that records its namespaces, says ready and waits>`."""
    token = str(random.randint(10**8, 10**9))
    (tmp_path / "token").write_text(token)
    script = (
        f"for n in net user mnt; do readlink /proc/self/ns/$n; done > {tmp_path}/ns.tmp; "
        f"mv {tmp_path}/ns.tmp {tmp_path}/ns; trap 'echo got-term; exit 42' TERM; "
        f"sleep {token} & wait"
    )
    proc = subprocess.Popen(
        boundary_cmd(tmp_path, *NS, "--", "sh", "-c", script),
        env=boundary_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (tmp_path / "ns").exists() and processes_with(token))
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_sigterm_to_boundary_reaches_the_command(tmp_path: Path, started: subprocess.Popen[str]) -> None:
    started.send_signal(signal.SIGTERM)
    out, err = started.communicate(timeout=60)
    assert started.returncode == 42, err
    assert "got-term" in out


def test_sigkill_of_boundary_leaves_no_process_and_no_namespace(tmp_path: Path, started: subprocess.Popen[str]) -> None:
    token = (tmp_path / "token").read_text()
    inodes = set((tmp_path / "ns").read_text().split())
    assert len(inodes) == 3
    assert inodes <= _ns_inodes()
    started.kill()
    started.wait(timeout=60)
    wait_for(lambda: not processes_with(token))
    wait_for(lambda: not (inodes & _ns_inodes()))


def test_two_jails_run_concurrently(tmp_path: Path, ca: CA, tls: Upstream) -> None:
    procs = []
    for i in range(2):
        d = tmp_path / f"j{i}"
        d.mkdir()
        script = f"curl -sS --max-time 30 --cacert {ca.ca_pem} https://secure.test:{tls.port}/c{i} && ip -4 -o addr"
        argv = boundary_cmd(d, *NS, *MAP, "--allow", "domain=secure.test", "--", "sh", "-c", script)
        pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        procs.append(subprocess.Popen(argv, env=boundary_env(d), text=True, **pipes))
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert f"hello from /c{i}" in out
        assert "10.199.0.2" in out


def test_terminal_works_interactively_with_job_control(tmp_path: Path) -> None:
    # the prompt is set: a root shell's default one (under `unshare -r`) would end in "# "
    argv = boundary_cmd(tmp_path, *NS, "--", "env", "PS1=ready> ", "bash", "--norc", "--noprofile", "-i")
    status, out = pty_run(
        tmp_path,
        argv,
        # markers are computed ($((...))), so the terminal's echo of what we type never matches them
        [
            ("ready> ", b"tty; echo A$((1+1))\n"),
            ("A2", b"sleep 987654321 & jobs; echo B$((1+1))\n"),
            # a job's process group signalled by the shell (boundary does a group kill on the jail's behalf, so
            # that it reaches none but the jail's own processes): the job dies of it, status 128+15
            ("B2", b"kill %1; wait %1; echo K$((1))=$?\n"),
            ("K1=", b"read -r line; echo G$((1)):$line\n"),
            ("G$((1))", b"typed-by-hand\n"),
            ("G1:typed-by-hand", b"exit 3\n"),
        ],
    )
    assert status == 3, out
    assert re.search(r"/dev/pts/\d+", out), out
    assert "Running" in out, repr(out)
    assert "K1=143" in out, repr(out)


def test_ctrl_c_interrupts_the_command_not_boundary(tmp_path: Path) -> None:
    argv = boundary_cmd(tmp_path, *NS, "--", "sh", "-c", "echo ready; exec sleep 987654322")
    status, out = pty_run(tmp_path, argv, [("ready", b"\x03")])
    assert status == 128 + signal.SIGINT, out


@pytest.mark.parametrize("backend", ["netlink", "nft", "iptables-nft", "iptables-legacy"])
def test_every_firewall_backend_redirects(tmp_path: Path, backend: str, plain: Upstream) -> None:
    canary = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    canary.bind((own_address() or "127.0.0.1", 0))  # the host's own address: what a leak would reach
    canary.setblocking(False)
    ip, port = canary.getsockname()
    udp = (
        "import errno, socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n    s.sendto(b'leaked', (sys.argv[1], int(sys.argv[2])))\n"
        "    print('udp sent')\nexcept OSError as e:\n    print('udp', errno.errorcode[e.errno])\n"
    )
    script = (
        f"getent hosts some.invalid && curl -sS --max-time 30 http://plain.test:{plain.port}/fw; "
        f'python3 -c "$0" {ip} {port}'
    )
    env = {"BOUNDARY_FIREWALL": backend}
    shm_before = set(os.listdir("/dev/shm"))
    try:
        r = boundary_run(tmp_path, *NS, *MAP, "--allow", "domain=plain.test", "--", "sh", "-c", script, udp, env=env)
        assert set(os.listdir("/dev/shm")) <= shm_before  # iptables-legacy's lock file stayed inside the jail
        assert r.returncode == 0, r.stderr
        assert "198.18." in r.stdout
        assert "hello from /fw" in r.stdout, r.stderr
        assert r.stdout.rstrip().endswith("udp EPERM"), r.stdout  # the jail's firewall refuses it at once
        with pytest.raises(BlockingIOError):
            canary.recvfrom(100)
    finally:
        canary.close()


def test_hidden_paths_and_unix_sockets_are_out_of_reach(tmp_path: Path) -> None:
    """Network namespaces do not isolate pathname unix sockets: --hide (and the defaults) must."""
    secret = tmp_path / "secrets"
    secret.mkdir()
    (secret / "token").write_text("s3cret")
    sock_path = tmp_path / "agent.sock"
    listener = unix_listener(sock_path)
    try:
        script = f'ls -A {secret}; cat {secret}/token; {PY} -c "$0" {sock_path}; touch {secret}/new'
        args = ("--hide", str(secret), "--hide", str(sock_path), "--", "sh", "-c", script, UNIX_CONNECT)
        r = boundary_run(tmp_path, *NS, *args)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert "s3cret" not in r.stdout
    assert "refused" in r.stdout
    assert "Read-only file system" in r.stderr
    assert not (secret / "new").exists()
