"""The `boundary proxy` subprocess against loopback upstreams, driven by curl and raw sockets."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CA, Upstream, boundary_proxy, read_ws_frame, server_tls, ws_frame

CURL_TIMEOUT = 120


@pytest.fixture(scope="module")
def plain() -> Iterator[Upstream]:
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def tls(ca: CA) -> Iterator[Upstream]:
    u = Upstream(tls=server_tls(ca)).start()
    yield u
    u.stop()


MAP = [f"--host-map={n}=127.0.0.1" for n in ("secure.test", "other.test", "plain.test", "sse.test", "big.test")]


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--noproxy", "", "--max-time", "60", *args],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT,
        check=False,
    )


def fetch(*args: str) -> tuple[int, str]:
    """(HTTP status, body) of a curl call; status 0 when no response arrived."""
    r = curl("-w", "\n%{http_code}", *args)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, ca: CA) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("proxy")
    with boundary_proxy(
        tmp,
        "--allow", "domain=secure.test",
        "--allow", "domain=plain.test",
        "--allow", "domain=sse.test",
        "--allow", "domain=big.test",
        "--allow", "domain=other.test method=GET path=/ok/*",
        "--deny", "domain=other.test path=/ok/secret",
        "--allow", "domain=unmapped.test",
        "--allow-private",
        "--upstream-ca", str(ca.ca_pem),
        *MAP,
    ) as p:  # fmt: skip
        yield p


def test_allowed_https_passthrough_uses_upstream_cert(proxy, tls: Upstream, ca: CA) -> None:  # type: ignore[no-untyped-def]
    r = curl("-x", proxy.url, "--cacert", str(ca.ca_pem), f"https://secure.test:{tls.port}/small")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from /small\n"
    # SNI-only: the client verified the upstream's own certificate (our CA is not involved)
    assert not proxy.mitm_ca.exists()


def test_denied_connect_gets_403_naming_the_allow(proxy, tls: Upstream) -> None:  # type: ignore[no-untyped-def]
    r = curl("-x", proxy.url, "-k", "-v", f"https://denied.test:{tls.port}/")
    assert r.returncode == 56  # CONNECT tunnel failed
    assert "< HTTP/1.1 403 Forbidden" in r.stderr
    recs = proxy.wait_audit(lambda x: x["host"] == "denied.test")
    assert recs[0]["decision"] == "deny"
    assert "--allow domain=denied.test" in proxy.stderr.read_text()


def test_denied_plain_http_body_names_the_flag(proxy, plain: Upstream) -> None:  # type: ignore[no-untyped-def]
    r = curl("-x", proxy.url, "-i", f"http://nope.test:{plain.port}/x")
    assert r.returncode == 0
    assert r.stdout.startswith("HTTP/1.1 403")
    assert "--allow domain=nope.test" in r.stdout


def test_denied_subdomain_of_an_allowed_name_is_offered_the_dot_form(proxy, plain: Upstream) -> None:  # type: ignore[no-untyped-def]
    r = curl("-x", proxy.url, "-i", f"http://www.plain.test:{plain.port}/x")
    assert r.returncode == 0
    assert r.stdout.startswith("HTTP/1.1 403")
    hint = "--allow domain=www.plain.test (or --allow domain=.plain.test for plain.test and every name below it)"
    assert f"To allow it: {hint}" in r.stdout
    proxy.wait_audit(lambda x: x["host"] == "www.plain.test")
    assert f"to allow: {hint}" in proxy.stderr.read_text()


def test_allowed_plain_http(proxy, plain: Upstream) -> None:  # type: ignore[no-untyped-def]
    r = curl("-x", proxy.url, f"http://plain.test:{plain.port}/p")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from /p\n"


def test_intercepted_path_rules(proxy, tls: Upstream) -> None:  # type: ignore[no-untyped-def]
    ca_args = ["--cacert", str(proxy.mitm_ca)]
    base = f"https://other.test:{tls.port}"
    # first call starts mitmproxy and creates the CA; the client then needs that CA
    first = curl("-x", proxy.url, "-k", f"{base}/ok/a")
    assert first.stdout == "hello from /ok/a\n", first.stderr
    assert proxy.mitm_ca.exists()
    ok = curl("-x", proxy.url, *ca_args, f"{base}/ok/b")
    assert ok.stdout == "hello from /ok/b\n", ok.stderr
    code, body = fetch("-x", proxy.url, *ca_args, f"{base}/admin")
    assert code == 403, body
    assert "--allow 'domain=other.test method=GET path=/admin'" in body
    assert fetch("-x", proxy.url, *ca_args, "-d", "x", f"{base}/ok/a")[0] == 403
    code, body = fetch("-x", proxy.url, *ca_args, f"{base}/ok/secret")
    assert code == 403
    assert "deny rules win" in body
    # a percent-encoded dot segment does not escape the allowed prefix
    assert fetch("-x", proxy.url, *ca_args, "--path-as-is", f"{base}/ok/%2e%2e/admin")[0] == 403
    # an encoded slash beside a dot segment (a climb to a server that decodes first) is refused, and the audit
    # says what was sent beside what was decided (no query)
    assert fetch("-x", proxy.url, *ca_args, "--path-as-is", f"{base}/ok/..%2fadmin?tok=x")[0] == 403
    rec = proxy.wait_audit(lambda r: r.get("raw_path") == "/ok/..%2fadmin")[-1]
    assert (rec["path"], rec["decision"]) == ("/ok/../admin", "deny")
    assert str(rec["reason"]).startswith("ambiguous path")
    # HTTP/1.1 too (curl picks h2 by ALPN otherwise)
    assert fetch("-x", proxy.url, *ca_args, "--http1.1", f"{base}/ok/c") == (200, "hello from /ok/c\n")


def test_private_upstream_refused_without_allow_private(tmp_path: Path, plain: Upstream) -> None:
    with boundary_proxy(tmp_path, "--allow", "domain=plain.test", "--host-map", "plain.test=127.0.0.1") as p:
        r = curl("-x", p.url, "-i", "-p", f"http://plain.test:{plain.port}/")
        assert r.returncode == 56  # CONNECT tunnel failed
        assert r.stdout.startswith("HTTP/1.1 403 Forbidden\n"), r.stdout
        recs = p.wait_audit(lambda x: x["host"] == "plain.test")
        assert recs[-1]["decision"] == "deny"
        assert "--allow-private" in str(recs[-1]["reason"])
        ip = curl("-x", p.url, "-i", "-p", f"http://127.0.0.1:{plain.port}/")
        assert ip.returncode == 56
        assert ip.stdout.startswith("HTTP/1.1 403 Forbidden\n"), ip.stdout


def read_until(sock: socket.socket | ssl.SSLSocket, marker: bytes, limit: int = 1 << 20) -> bytes:
    buf = b""
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        assert len(buf) < limit
    return buf


def _connect_tunnel(proxy_port: int, host: str, port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=60)
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = read_until(s, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


@pytest.mark.parametrize("path_rule", [False, True], ids=["passthrough", "intercepted"])
def test_sse_first_event_arrives_before_server_finishes(tmp_path: Path, tls: Upstream, ca: CA, path_rule: bool) -> None:
    rule = "domain=sse.test path=/sse" if path_rule else "domain=sse.test"
    with boundary_proxy(
        tmp_path, "--allow", rule, "--allow-private", "--upstream-ca", str(ca.ca_pem), "--host-map",
        "sse.test=127.0.0.1",
    ) as p:  # fmt: skip
        tls.sse_gate.clear()
        s = _connect_tunnel(p.port, "sse.test", tls.port)
        ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
        if path_rule:
            ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the mitm CA is created on first use
        t = ctx.wrap_socket(s, server_hostname="sse.test")
        t.sendall(b"GET /sse HTTP/1.1\r\nHost: sse.test\r\nAccept: text/event-stream\r\n\r\n")
        first = read_until(t, b"data: one\n\n")
        assert b"data: one" in first
        assert b"data: two" not in first  # the server is still holding the stream open
        tls.sse_gate.set()
        rest = read_until(t, b"data: two\n\n")
        assert b"data: two" in rest
        t.close()
        recs = p.wait_audit(lambda x: x["host"] == "sse.test" and x["event"] in ("request", "connection"))
        assert recs[-1]["decision"] == "allow"
        assert "upstream error" not in str(recs[-1]["reason"]), recs[-1]  # the stream ended: no error


def test_a_client_leaving_a_stream_is_not_an_upstream_error(tmp_path: Path, tls: Upstream, ca: CA) -> None:
    """An agent reads the event it waits for and hangs up while the server still holds the stream open."""
    with boundary_proxy(
        tmp_path, "--allow", "domain=sse.test path=/sse-hold", "--allow-private", "--upstream-ca", str(ca.ca_pem),
        "--host-map", "sse.test=127.0.0.1",
    ) as p:  # fmt: skip
        tls.sse_gate.clear()
        s = _connect_tunnel(p.port, "sse.test", tls.port)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the mitm CA is created on first use
        t = ctx.wrap_socket(s, server_hostname="sse.test")
        t.sendall(b"GET /sse-hold HTTP/1.1\r\nHost: sse.test\r\n\r\n")
        assert b"data: one" in read_until(t, b"data: one\n\n")
        t.close()
        try:
            recs = p.wait_audit(lambda x: x["host"] == "sse.test" and x["event"] == "request")
        finally:
            tls.sse_gate.set()
        assert recs[-1]["decision"] == "allow"
        assert recs[-1]["reason"] == "allowed by rule; the client closed the connection before the response ended"


def test_websocket_through_intercepting_proxy(tmp_path: Path, tls: Upstream, ca: CA) -> None:
    with boundary_proxy(
        tmp_path, "--allow", "domain=ws.test path=/ws", "--allow-private", "--upstream-ca", str(ca.ca_pem),
        "--host-map", "ws.test=127.0.0.1",
    ) as p:  # fmt: skip
        s = _connect_tunnel(p.port, "ws.test", tls.port)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        t = ctx.wrap_socket(s, server_hostname="ws.test")
        t.sendall(
            b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = read_until(t, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        t.sendall(ws_frame(b"ping", mask=True))
        with t, t.makefile("rb") as f:
            assert read_ws_frame(f) == b"echo:ping"


AUDIT_FIELDS = {
    "ts", "event", "decision", "host", "port", "scheme", "method", "path", "rule", "reason",
    "bytes_up", "bytes_down", "duration_ms", "mode", "run_id",
}  # fmt: skip


def test_audit_lines_are_json_with_documented_fields(proxy, plain: Upstream) -> None:  # type: ignore[no-untyped-def]
    curl("-x", proxy.url, f"http://plain.test:{plain.port}/audit")
    curl("-x", proxy.url, f"http://nope2.test:{plain.port}/audit")
    proxy.wait_audit(lambda x: x["host"] == "nope2.test")
    proxy.wait_audit(lambda x: x["path"] == "/audit" and x["decision"] == "allow")
    lines = proxy.audit.read_text().splitlines()
    for line in lines:
        rec = json.loads(line)
        assert set(rec) - {"hint", "raw_path"} == AUDIT_FIELDS  # hint, raw_path: when they apply (documented)
        assert ("hint" in rec) == (rec["decision"] == "deny")
        assert rec["decision"] in ("allow", "deny")
        assert rec["event"] in ("request", "connection")
    allowed = [json.loads(x) for x in lines if '"allow"' in x]
    assert any(r["rule"] == "domain=plain.test" for r in allowed)


def test_host_header_cannot_redirect_an_intercepted_connection(proxy, tls: Upstream) -> None:  # type: ignore[no-untyped-def]
    """Domain fronting: a tunnel decided for other.test carries a request for secure.test -> 403."""
    s = _connect_tunnel(proxy.port, "other.test", tls.port)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    before = tls.last_request_path
    with ctx.wrap_socket(s, server_hostname="other.test") as t:
        t.sendall(b"GET /ok/front HTTP/1.1\r\nHost: secure.test\r\n\r\n")
        head = read_until(t, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403"), head
    assert tls.last_request_path == before  # nothing reached the upstream


def test_mitm_never_denies_what_needs_inspection(tmp_path: Path, tls: Upstream) -> None:
    with boundary_proxy(
        tmp_path, "--mitm", "never", "--allow", "domain=other.test path=/ok/*", "--allow-private",
        "--host-map", "other.test=127.0.0.1",
    ) as p:  # fmt: skip
        before = tls.connections
        code, _ = fetch("-x", p.url, "-k", f"https://other.test:{tls.port}/ok/a")
        assert code != 200
        assert tls.connections == before
        assert p.wait_audit(lambda x: x["host"] == "other.test" and x["decision"] == "deny")
