"""landjail without the shim's help: statically linked programs (glibc and musl) and raw connect syscalls.
Every TCP connect goes through boundary (to its transparent listener, the proxy decides), DNS over UDP port
53 of any address gets boundary's fake answers whatever the resolver's style, every other UDP is refused, and
a server bound on the wildcard address is reachable on loopback only. Canaries sit on this machine's own
non-loopback address, on the proxy's port and on another: they must hear nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CA, Upstream, boundary_run, own_address, wait_for

HERE = Path(__file__).resolve().parent.parent / "static"
LJ = ("--jail-type", "landjail", "--allow-private", "--host-map", "secure.test=127.0.0.1",
      "--host-map", "other.test=127.0.0.1")  # fmt: skip


@pytest.fixture(scope="session")
def here_ip() -> str:
    ip = own_address()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to put a canary on")
    return ip


def _build(out: Path, compiler: str, src: str, *libs: str) -> Path:
    subprocess.run([compiler, "-static", "-O", "-o", str(out), str(HERE / src), *libs], check=True, timeout=180,
                   capture_output=True)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """netprobe built with glibc and with musl; tlsget (glibc + OpenSSL): all static."""
    d = tmp_path_factory.mktemp("static")
    return {
        "glibc": _build(d / "netprobe-glibc", "gcc", "netprobe.c"),
        "musl": _build(d / "netprobe-musl", "musl-gcc", "netprobe.c"),
        "tlsget": _build(d / "tlsget", "gcc", "tlsget.c", "-lssl", "-lcrypto", "-lpthread"),
        "fdswap": _build(d / "fdswap", "gcc", "fdswap.c", "-pthread"),
    }


class Listener:
    """A TCP canary on (ip, port) that records whatever connects and sends."""

    def __init__(self, ip: str, port: int = 0) -> None:
        self.sock = socket.create_server((ip, port))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def heard(self) -> list[bytes]:
        out = []
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return out
            conn.settimeout(2)
            try:
                out.append(conn.recv(100))
            except OSError:
                out.append(b"")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canaries(here_ip: str) -> Iterator[tuple[Listener, Listener]]:
    """Two canaries on this machine's own address: one on a port boundary then takes for its proxy."""
    a, b = Listener(here_ip), Listener(here_ip)
    yield a, b
    a.close()
    b.close()


def test_raw_connects_reach_nothing_but_boundary(
    tmp_path: Path, probes: dict[str, Path], canaries: tuple[Listener, Listener], here_ip: str
) -> None:
    on_proxy_port, other = canaries
    np = probes["musl"]
    script = f"{np} connect {here_ip} {on_proxy_port.port} secret-1; {np} connect {here_ip} {other.port} secret-2"
    r = boundary_run(tmp_path, "--jail-type", "landjail", "--", "sh", "-c", script,
                     env={"BOUNDARY_PROXY_PORT": str(on_proxy_port.port)})  # fmt: skip
    assert on_proxy_port.heard() == [], r.stdout
    assert other.heard() == [], r.stdout
    denied = {(rec.get("host"), rec.get("port")) for rec in r.audit_records() if rec.get("decision") == "deny"}
    assert (here_ip, on_proxy_port.port) in denied, r.audit_records()
    assert (here_ip, other.port) in denied, r.audit_records()


@pytest.mark.parametrize("libc", ["glibc", "musl"])
def test_a_static_binary_reaches_allowed_hosts_by_name(
    tmp_path: Path, probes: dict[str, Path], plain: Upstream, libc: str
) -> None:
    np = probes[libc]
    script = f"{np} resolve secure.test; {np} get secure.test {plain.port} /static; {np} get other.test {plain.port} /x"
    r = boundary_run(tmp_path, *LJ, "--allow", f"domain=secure.test port={plain.port}", "--", "sh", "-c", script)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("A 198.18."), (r.stdout, r.stderr)  # boundary's fake address, from its own answer
    assert "hello from /static" in lines[1], (r.stdout, r.stderr)
    assert "hello from /x" not in r.stdout
    hosts = {(rec.get("host"), rec.get("decision")) for rec in r.audit_records() if rec.get("event") != "dns"}
    assert ("secure.test", "allow") in hosts, r.audit_records()
    assert ("other.test", "deny") in hosts, r.audit_records()


def test_a_static_https_client_is_allowed_and_denied_by_name(
    tmp_path: Path, probes: dict[str, Path], ca: CA, tls: Upstream
) -> None:
    tg = probes["tlsget"]
    script = f"{tg} secure.test {tls.port} /tls {ca.ca_pem}; {tg} other.test {tls.port} /no {ca.ca_pem}"
    r = boundary_run(tmp_path, *LJ, "--allow", f"domain=secure.test port={tls.port}", "--", "sh", "-c", script)
    assert "hello from /tls" in r.stdout, (r.stdout, r.stderr)
    assert "hello from /no" not in r.stdout
    records = [(rec.get("host"), rec.get("decision")) for rec in r.audit_records() if rec.get("event") == "connection"]
    assert ("secure.test", "allow") in records, r.audit_records()
    assert ("other.test", "deny") in records, r.audit_records()


@pytest.mark.parametrize("style", ["connected", "unconnected"])
def test_dns_to_any_address_gets_a_fake_answer(
    tmp_path: Path, probes: dict[str, Path], here_ip: str, style: str
) -> None:
    """Go asks over a connected socket; musl and glibc check that the answer comes from the server they asked."""
    np = probes["musl"]
    r = boundary_run(tmp_path, "--jail-type", "landjail", "--",
                     str(np), "dns", style, here_ip, "anything.example")  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith("A 198.18."), r.stdout
    queries = [rec for rec in r.audit_records() if rec.get("event") == "dns"]
    assert queries, r.audit_records()
    assert queries[0].get("host") == "anything.example", r.audit_records()


def test_other_udp_is_refused(tmp_path: Path, here_ip: str) -> None:
    canary = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    canary.bind((here_ip, 0))
    canary.setblocking(False)
    code = (
        "import socket, sys\n"
        "for fam, ip in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET, '127.0.0.1')):\n"
        "    s = socket.socket(fam, socket.SOCK_DGRAM)\n"
        "    try:\n        s.sendto(b'secret', (ip, int(sys.argv[2]))); print('sent')\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
        "    try:\n        s.connect((ip, int(sys.argv[2]))); print('connected')\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
    )
    try:
        port = canary.getsockname()[1]
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, "-c", code, here_ip, str(port))
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["refused", "13"] * 4, r.stdout
        with pytest.raises(BlockingIOError):
            canary.recvfrom(100)
    finally:
        canary.close()


SERVER = (
    "import socket, sys, os\n"
    "fam = socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET\n"
    "s = socket.socket(fam, socket.SOCK_STREAM)\n"
    "s.bind((sys.argv[2], int(sys.argv[3])))\n"
    "s.listen()\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(s.getsockname()[1]))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "c, _ = s.accept(); c.sendall(b'served'); c.close()\n"
)


def _serve_in_jail(tmp_path: Path, bind: str, port: int, *extra: str) -> tuple[subprocess.Popen[str], int]:
    from tests.support import boundary_cmd, boundary_env

    port_file = tmp_path / "port"
    argv = boundary_cmd(tmp_path, "--jail-type", "landjail", *extra, "--",
                        sys.executable, "-c", SERVER, str(port_file), bind, str(port))  # fmt: skip
    proc = subprocess.Popen(argv, env=boundary_env(tmp_path), cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: port_file.exists() or proc.poll() is not None)
    assert port_file.exists(), proc.communicate()
    return proc, int(port_file.read_text())


def _fetch(ip: str, port: int) -> bytes:
    with socket.create_connection((ip, port), timeout=10) as c:
        return c.recv(100)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_a_wildcard_bind_is_reachable_on_loopback_only(tmp_path: Path, here_ip: str, bind: str) -> None:
    proc, port = _serve_in_jail(tmp_path, bind, 0)
    try:
        with pytest.raises(ConnectionRefusedError):
            _fetch(here_ip, port)
        assert _fetch("::1" if bind == "::" else "127.0.0.1", port) == b"served"
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_publish_keeps_the_wildcard(tmp_path: Path, here_ip: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, got = _serve_in_jail(tmp_path, "0.0.0.0", port, "--publish", str(port))
    try:
        assert got == port
        assert _fetch(here_ip, port) == b"served"
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


NONBLOCKING = (
    "import errno, select, socket, sys\n"
    "s = socket.socket()\n"
    "s.setblocking(False)\n"
    "r = s.connect_ex((socket.gethostbyname('secure.test'), int(sys.argv[1])))\n"
    "print('started', r in (0, errno.EINPROGRESS))\n"
    "_, w, _ = select.select([], [s], [], 30)\n"
    "print('writable', bool(w), s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))\n"
    "s.setblocking(True)\n"
    "s.sendall(b'GET /nb HTTP/1.0\\r\\nHost: secure.test\\r\\nConnection: close\\r\\n\\r\\n')\n"
    "print(s.makefile('rb').read().decode().splitlines()[-1])\n"
)


def test_a_non_blocking_connect_keeps_its_semantics(tmp_path: Path, plain: Upstream) -> None:
    """EINPROGRESS (or done at once), then writable with no error, then the allowed upstream answers."""
    r = boundary_run(tmp_path, *LJ, "--no-shim", "--allow", f"domain=secure.test port={plain.port}", "--",
                     sys.executable, "-c", NONBLOCKING, str(plain.port))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["started True", "writable True 0", "hello from /nb"], (r.stdout, r.stderr)


CONTAINER_PROFILE = (
    "import errno, os, sys\n"
    "import pyseccomp as sc\n"
    "f = sc.SyscallFilter(defaction=sc.ALLOW)\n"
    "f.add_rule(sc.ERRNO(errno.EINVAL), 'seccomp', sc.Arg(1, sc.MASKED_EQ, 8, 8))  # no NEW_LISTENER\n"
    "f.load()\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


def test_without_user_notification_landjail_falls_back_and_says_so(
    tmp_path: Path, ca: CA, tls: Upstream, probes: dict[str, Path], here_ip: str
) -> None:
    """As under a container's seccomp profile that forbids notification listeners: the port-only Landlock rule,
    a warning naming the gap, and programs using the proxy still work; doctor names the missing piece."""
    from tests.support import boundary_cmd, boundary_env

    wrapper = tmp_path / "profile.py"
    wrapper.write_text(CONTAINER_PROFILE)
    script = (f"curl -sS --max-time 30 --cacert {ca.ca_pem} https://secure.test:{tls.port}/fallback; echo; "
              f"{probes['musl']} connect {here_ip} 9 x")  # fmt: skip
    argv = boundary_cmd(tmp_path, *LJ, "--allow", f"domain=secure.test port={tls.port}", "--", "sh", "-c", script)
    r = subprocess.run([sys.executable, str(wrapper), *argv[1:]], env=boundary_env(tmp_path), capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert "hello from /fallback" in r.stdout, (r.stdout, r.stderr)
    assert "port-only Landlock rule" in r.stderr, r.stderr
    assert "connect: Permission denied" in r.stdout  # Landlock: the proxy's port only (not 9)
    doctor = subprocess.run([sys.executable, str(wrapper), "-m", "jail", "doctor"], capture_output=True, text=True,
                            timeout=60, env=boundary_env(tmp_path))  # fmt: skip
    assert "user notification" in doctor.stdout, doctor.stdout


@pytest.mark.parametrize("attempt", ["listen", "bind tcp", "bind udp"])
def test_swapping_the_fd_under_a_call_binds_nothing_outside(
    tmp_path: Path, probes: dict[str, Path], attempt: str
) -> None:
    """boundary checks the socket behind fd N, then another thread puts a different socket there: whatever the
    kernel then runs must still keep every listener on loopback (an outside review found it did not)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = attempt.split() + ([str(port)] if attempt.startswith("bind") else [])
    r = boundary_run(tmp_path, "--jail-type", "landjail", "--", str(probes["fdswap"]), *args, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "loopback only", r.stdout


def test_swapping_the_fd_under_sendmsg_sends_no_datagram_out(
    tmp_path: Path, probes: dict[str, Path], here_ip: str
) -> None:
    canary = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    canary.bind((here_ip, 0))
    canary.setblocking(False)
    try:
        port = canary.getsockname()[1]
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", str(probes["fdswap"]), "sendmsg", here_ip,
                         str(port), timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "sent 0", r.stdout
        with pytest.raises(BlockingIOError):
            canary.recvfrom(100)
    finally:
        canary.close()


OWN_SERVER = (
    "import socket, sys, threading\n"
    "srv = socket.create_server(('127.0.0.1', 0))\n"
    "threading.Thread(target=lambda: srv.accept()[0].sendall(b'own'), daemon=True).start()\n"
    "c = socket.create_connection(('127.0.0.1', srv.getsockname()[1]), timeout=10)\n"
    "print('own server:', c.recv(10).decode())\n"
    "try:\n"
    "    o = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
    "    print('outside server:', o.recv(10) or b'closed')\n"
    "except OSError as e:\n"
    "    print('outside server:', e)\n"
)


@pytest.mark.parametrize("shim", [True, False], ids=["shim", "no shim"])
def test_the_jails_own_loopback_server_is_reachable_and_no_other(tmp_path: Path, shim: bool) -> None:
    """A test suite that starts a dev server and connects to it works; a server of the user's on loopback stays
    out of reach (the connection goes to the proxy, which refuses a private address)."""
    outside = Listener("127.0.0.1")
    try:
        r = boundary_run(tmp_path, "--jail-type", "landjail", *(() if shim else ("--no-shim",)), "--",
                         sys.executable, "-c", OWN_SERVER, str(outside.port))  # fmt: skip
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "own server: own", r.stdout
        assert lines[1] in ("outside server: b'closed'", "outside server: [Errno 104] Connection reset by peer"), (
            r.stdout
        )
        assert outside.heard() == []
    finally:
        outside.close()
