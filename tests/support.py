"""Test support: a private CA, loopback HTTP/HTTPS upstream servers (small, SSE,
big bodies, echo, WebSocket) and a `boundary proxy` subprocess with a readiness
line. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import os
import pty
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TEST_NAMES = ("secure.test", "other.test", "plain.test", "sse.test", "big.test", "ws.test")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READY_TIMEOUT = 60.0
T = TypeVar("T")


@dataclass
class CA:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    other_cert_pem: Path  # a certificate for other.test alone
    other_key_pem: Path


def make_ca(dirpath: Path) -> CA:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "boundary test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(names: tuple[str, ...], cert_path: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    dirpath.mkdir(parents=True, exist_ok=True)
    out = CA(dirpath / "ca.pem", dirpath / "server.pem", dirpath / "server.key", dirpath / "other.pem",
             dirpath / "other.key")  # fmt: skip
    out.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf(TEST_NAMES, out.cert_pem, out.key_pem)
    leaf(("other.test",), out.other_cert_pem, out.other_key_pem)
    return out


@dataclass
class Upstream:
    """One threaded HTTP/1.1 server (optionally TLS) with test routes."""

    tls: ssl.SSLContext | None = None
    port: int = 0
    sse_gate: threading.Event = field(default_factory=threading.Event)
    connections: int = 0
    last_request_path: str = ""
    hosts_seen: list[str] = field(default_factory=list)  # each request's Host header, in order
    ws_messages: list[bytes] = field(default_factory=list)
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Upstream:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(60)
        conn: socket.socket = raw
        f = None
        try:
            conn = self.tls.wrap_socket(raw, server_side=True) if self.tls else raw
            f = conn.makefile("rb")
            while True:
                line = f.readline(65536)
                if not line:
                    return
                method, path, version = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = f.readline(65536)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                self.last_request_path = path
                self.hosts_seen.append(headers.get("host", ""))
                if not self._route(conn, f, method, path, headers):
                    return
                if version.strip() == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
                    return  # HTTP/1.0 without keep-alive: the answer ends with the connection
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            if f is not None:
                f.close()
            conn.close()
            raw.close()

    def _route(self, conn: socket.socket, f: object, method: str, path: str, headers: dict[str, str]) -> bool:
        """Answer one request; return False to close the connection."""
        if path.startswith("/sse-hold"):  # chunked: one event, then the stream stays open until the gate opens
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(b"b\r\ndata: one\n\n\r\n")
            self.sse_gate.wait(READY_TIMEOUT)
            conn.sendall(b"0\r\n\r\n")
            return False
        if path.startswith("/sse"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            conn.sendall(b"data: one\n\n")
            self.sse_gate.wait(READY_TIMEOUT)
            conn.sendall(b"data: two\n\n")
            return False
        if path.startswith("/big/"):
            n = int(path.split("/")[2])
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n".encode())
            chunk = b"x" * (1 << 20)
            while n > 0:
                k = min(n, len(chunk))
                conn.sendall(chunk[:k] if k < len(chunk) else chunk)
                n -= k
            return True
        if path.startswith("/ws") and headers.get("upgrade", "").lower() == "websocket":
            accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            payload = read_ws_frame(f)
            self.ws_messages.append(payload)
            conn.sendall(ws_frame(b"echo:" + payload, mask=False))
            return False
        if method == "POST":
            n = int(headers.get("content-length", "0"))
            got = 0
            while got < n:
                data = f.read(min(1 << 16, n - got))  # type: ignore[attr-defined]
                if not data:
                    return False
                got += len(data)
            body = f"received {got}\n".encode()
        else:
            body = f"hello from {path}\n".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return headers.get("connection", "").lower() != "close"


def ws_frame(payload: bytes, *, mask: bool) -> bytes:
    assert len(payload) < 126
    head = bytes([0x81, (0x80 if mask else 0) | len(payload)])
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_ws_frame(f: object) -> bytes:
    _b0, b1 = f.read(2)  # type: ignore[attr-defined]
    n = b1 & 0x7F
    key = f.read(4) if b1 & 0x80 else b""  # type: ignore[attr-defined]
    data = f.read(n)  # type: ignore[attr-defined]
    return bytes(b ^ key[i % 4] for i, b in enumerate(data)) if key else data


def server_tls(ca: CA, *, other_only: bool = False) -> ssl.SSLContext:
    """A server context with the certificate for every test name (``other_only``: for other.test alone)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*((ca.other_cert_pem, ca.other_key_pem) if other_only else (ca.cert_pem, ca.key_pem)))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass
class ProxyProc:
    proc: subprocess.Popen[str]
    port: int
    audit: Path
    state: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mitm_ca(self) -> Path:
        return self.state / "boundary" / "ca" / "mitmproxy-ca-cert.pem"

    def peak_rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def audit_records(self) -> list[dict[str, object]]:
        import json

        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]

    def wait_audit(self, pred: Callable[[dict[str, object]], bool]) -> list[dict[str, object]]:
        """Records matching pred, waiting (bounded) for the audit writer thread to write them."""
        return wait_for(lambda: [r for r in self.audit_records() if pred(r)])


def wait_for(check: Callable[[], T], timeout: float = READY_TIMEOUT) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        threading.Event().wait(delay)
        delay = min(delay * 2, 0.1)


@contextmanager
def boundary_proxy(tmp: Path, *args: str) -> Iterator[ProxyProc]:
    """Run `boundary proxy ARGS` and wait for its readiness line."""
    audit = tmp / "audit.jsonl"
    state = tmp / "state"
    env = {**os.environ, "XDG_STATE_HOME": str(state), "XDG_CONFIG_HOME": str(tmp / "config")}
    cmd = [sys.executable, "-m", "jail", "proxy", "--audit-log", str(audit), *args]
    err = open(tmp / "proxy.stderr", "w")  # noqa: SIM115 (a file: a full pipe would block the proxy)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert proc.stdout is not None
        ready: list[str] = []
        t = threading.Thread(target=lambda: ready.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(READY_TIMEOUT)
        line = ready[0] if ready else ""
        if "listening on" not in line:
            proc.kill()
            raise AssertionError(f"proxy did not start: {line!r} {(tmp / 'proxy.stderr').read_text()}")
        port = int(line.rsplit(":", 1)[1])
        yield ProxyProc(proc, port, audit, state, tmp / "proxy.stderr")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    audit: Path

    def audit_records(self) -> list[dict[str, object]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]


def boundary_env(tmp: Path) -> dict[str, str]:
    """The test's env for boundary: its own state and config dirs beside ``tmp``, not in it: boundary hides its
    state dir, and landjail cannot create entries directly in a directory that holds a hidden path."""
    side = tmp.parent / f"{tmp.name}.boundary"
    return {**os.environ, "XDG_STATE_HOME": str(side / "state"), "XDG_CONFIG_HOME": str(side / "config")}


# the test run's temp root (pytest's basetemp: the session's CA, scripts, servers' files), kept visible and
# writable inside jails, whose /tmp is private; set by tests/conftest.py
VISIBLE_ROOT: Path | None = None


def audit_path(tmp: Path) -> Path:
    """Where a test's `boundary run` writes its audit log: in its state dir, which the jail cannot see (a log
    in a path the jail can write is refused)."""
    return Path(boundary_env(tmp)["XDG_STATE_HOME"]) / "boundary" / "audit.jsonl"


def boundary_cmd(tmp: Path, *args: str) -> list[str]:
    """`boundary run` with the audit log in its state dir and the test run's temp root visible."""
    root = VISIBLE_ROOT or tmp.parent
    return [sys.executable, "-m", "jail", "run", "--audit-log", str(audit_path(tmp)), "--rw", str(root), *args]


def boundary_run(
    tmp: Path,
    *args: str,
    timeout: float = 120,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> RunResult:
    """`boundary run ARGS` (ARGS includes '--' and the command); waits for it to exit."""
    r = subprocess.run(
        boundary_cmd(tmp, *args),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env={**boundary_env(tmp), **(env or {})},
        timeout=timeout,
        check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return RunResult(r.returncode, r.stdout, r.stderr, audit_path(tmp))


def serve_loopback(serve: Callable[[socket.socket], None]) -> socket.socket:
    """A listener on 127.0.0.1 (random port) serving each connection in a thread of its own until it is closed."""
    sock = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return sock


class BannerEcho:
    """TCP on 127.0.0.1: says ``banner`` first (server speaks first), then echoes each line."""

    def __init__(self, banner: bytes = b"hello from echo\n") -> None:
        self.banner = banner
        self._sock = serve_loopback(self._serve)
        self.port: int = self._sock.getsockname()[1]

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                conn.sendall(self.banner)
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._sock.close()


def own_address() -> str | None:
    """This machine's first non-loopback IPv4 address (traffic to it stays on the machine): the kernel's local
    routes, where each address of the host is listed before "/32 host LOCAL"."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    for prev, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            addr = prev.split()[-1]
            if not addr.startswith("127."):
                return addr
    return None


class Canary:
    """A TCP listener and a UDP socket on host loopback that must never hear from a jail."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.tcp.setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.tcp_port: int = self.tcp.getsockname()[1]
        self.udp_port: int = self.udp.getsockname()[1]

    def heard(self) -> list[str]:
        """What reached the canary (the caller first makes sure the attempts are over)."""
        out = []
        try:
            conn, peer = self.tcp.accept()
            conn.close()
            out.append(f"tcp connection from {peer}")
        except BlockingIOError:
            pass
        try:
            data, peer = self.udp.recvfrom(65536)
            out.append(f"udp datagram {data!r} from {peer}")
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def pty_run(tmp_path: Path, argv: list[str], script: list[tuple[str, bytes]], timeout: float = 60) -> tuple[int, str]:
    """Run ARGV on a new pseudo-terminal; for each (expect, send): wait for ``expect`` then write ``send``."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once (no Python state of the test runner is used)
        os.execve(argv[0], argv, boundary_env(tmp_path))
    out = b""
    try:
        for expect, send in script:
            out = read_until(fd, out, expect.encode(), timeout)
            os.write(fd, send)
        out = read_until(fd, out, None, timeout)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def read_until(fd: int, out: bytes, expect: bytes | None, timeout: float) -> bytes:
    """Read the pty until ``expect`` appears (None: until EOF), within a bounded time."""
    end = time.monotonic() + timeout
    while expect is None or expect not in out:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {expect!r}; got {out!r}")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            chunk = b""
        if not chunk:
            if expect is None:
                return out
            raise AssertionError(f"EOF before {expect!r}; got {out!r}")
        out += chunk
    return out


def processes_with(token: str) -> list[int]:
    """PIDs whose command line contains ``token``."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if token.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                continue
    return out


def unix_listener(path: Path) -> socket.socket:
    """A listening pathname unix socket that must hear nothing (accept() raises BlockingIOError)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen()
    s.setblocking(False)
    return s


# run inside a jail as `python3 -c UNIX_CONNECT PATH`: prints "connected" or "refused ERRNO"
UNIX_CONNECT = (
    "import socket, sys\n"
    "try:\n    socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')\n"
    "except OSError as e:\n    print('refused', e.errno)\n"
)
