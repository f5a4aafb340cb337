"""Plain HTTP through `boundary proxy` without mitmproxy: keep-alive requests decided one by one, framing kept
exact, upgrades handed on; raw sockets, so the bytes on the wire are what is checked."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.support import Upstream, boundary_proxy, read_ws_frame, ws_frame


@pytest.fixture(scope="module")
def one() -> Iterator[Upstream]:
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def two() -> Iterator[Upstream]:
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with boundary_proxy(
        tmp_path_factory.mktemp("fast"),
        "--allow", "domain=one.test", "--allow", "domain=two.test",
        "--allow", "domain=ruled.test method=GET path=/ok/*",
        "--allow-private",
        *(f"--host-map={n}=127.0.0.1" for n in ("one.test", "two.test", "ruled.test", "nope.test")),
    ) as p:  # fmt: skip
        yield p


def exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data``; read one answer (its head and Content-Length body)."""
    sock.sendall(data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = lengths[0] if lengths else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def get(host: str, port: int, path: str, *extra: str) -> bytes:
    return (f"GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(extra) + "\r\n").encode()


def connect(proxy: object) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=60)  # type: ignore[attr-defined]


def test_keep_alive_requests_are_decided_one_by_one(proxy, one: Upstream, two: Upstream) -> None:  # type: ignore[no-untyped-def]
    before_one, before_two = one.connections, two.connections
    with connect(proxy) as s:
        a = exchange(s, get("one.test", one.port, "/a"))
        b = exchange(s, get("one.test", one.port, "/b"))
        c = exchange(s, get("two.test", two.port, "/c"))
        d = exchange(s, get("nope.test", one.port, "/d"))
        assert s.recv(1) == b""  # closed after the denial
    assert a.endswith(b"hello from /a\n")
    assert b.endswith(b"hello from /b\n")
    assert c.endswith(b"hello from /c\n")
    assert d.startswith(b"HTTP/1.1 403"), d
    assert b"--allow domain=nope.test" in d
    assert one.connections == before_one + 1  # /a and /b shared one upstream
    assert two.connections == before_two + 1  # two.test got its own
    assert "/d" not in one.last_request_path
    proxy.wait_audit(lambda r: r["host"] == "nope.test")  # written after the allowed ones
    http = [r for r in proxy.audit_records() if r["event"] == "request" and r["host"] in ("one.test", "two.test")]
    assert [(r["host"], r["path"], r["decision"]) for r in http][-3:] == [
        ("one.test", "/a", "allow"), ("one.test", "/b", "allow"), ("two.test", "/c", "allow"),
    ]  # fmt: skip
    assert not proxy.mitm_ca.exists()  # mitmproxy was never needed


def test_the_host_header_is_the_urls(proxy, one: Upstream) -> None:  # type: ignore[no-untyped-def]
    """A proxy request's Host header is replaced by the URL's authority: no fronting through an allowed server."""
    with connect(proxy) as s:
        raw = f"GET http://one.test:{one.port}/fronted HTTP/1.1\r\nHost: nope.test\r\n\r\n".encode()
        assert exchange(s, raw).endswith(b"hello from /fronted\n")
    assert one.hosts_seen[-1] == f"one.test:{one.port}"


def test_a_method_rule_host_mid_connection_goes_to_mitmproxy(proxy, one: Upstream) -> None:  # type: ignore[no-untyped-def]
    with connect(proxy) as s:
        assert exchange(s, get("one.test", one.port, "/first")).endswith(b"hello from /first\n")
        ok = exchange(s, get("ruled.test", one.port, "/ok/1"))
        assert ok.startswith(b"HTTP/1.1 200"), ok
        assert ok.endswith(b"hello from /ok/1\n")
        no = exchange(s, get("ruled.test", one.port, "/admin"))
        assert no.startswith(b"HTTP/1.1 403"), no
    assert proxy.mitm_ca.exists()


def test_pipelined_requests_are_answered_in_order(proxy, one: Upstream) -> None:  # type: ignore[no-untyped-def]
    """(Chunked bodies are covered in process by tests/unit/test_httpfast.py, against an h11 origin.)"""
    host = f"one.test:{one.port}"
    sized = f"POST http://{host}/up HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc".encode()
    with connect(proxy) as s:
        s.sendall(
            get("one.test", one.port, "/first") + sized + get("one.test", one.port, "/last", "Connection: close\r\n")
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 3, data
    assert answers[0].endswith(b"hello from /first\n")
    assert answers[1].endswith(b"received 3\n")
    assert answers[2].endswith(b"hello from /last\n")
    assert b"Connection: close" in answers[2]


def test_both_lengths_are_refused(proxy, one: Upstream) -> None:  # type: ignore[no-untyped-def]
    host = f"one.test:{one.port}"
    smuggle = (
        f"POST http://{host}/s HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"0\r\n\r\nGET http://nope.test:{one.port}/smuggled HTTP/1.1\r\nHost: nope.test\r\n\r\n"
    ).encode()
    with connect(proxy) as s:
        answer = exchange(s, smuggle)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert one.last_request_path != "/smuggled"


def test_websocket_upgrade_is_handed_on(proxy, one: Upstream) -> None:  # type: ignore[no-untyped-def]
    host = f"one.test:{one.port}"
    with connect(proxy) as s:
        s.sendall(
            (
                f"GET http://{host}/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(ws_frame(b"ping", mask=True))
        f = s.makefile("rb")
        assert read_ws_frame(f) == b"echo:ping"
        f.close()


def test_each_request_is_audited(proxy, one: Upstream) -> None:  # type: ignore[no-untyped-def]
    with connect(proxy) as s:
        exchange(s, get("one.test", one.port, "/audited-1"))
        exchange(s, get("one.test", one.port, "/audited-2"))
    proxy.wait_audit(lambda r: r["path"] == "/audited-2")
    mine = [r for r in proxy.audit_records() if str(r["path"]).startswith("/audited")]
    assert [r["scheme"] for r in mine] == ["http", "http"]
    assert all(int(str(r["bytes_down"])) > 0 for r in mine), json.dumps(mine)


def tunnel(proxy: object, port: int) -> socket.socket:
    s = connect(proxy)
    s.sendall(f"CONNECT one.test:{port} HTTP/1.1\r\nHost: one.test:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def test_plain_http_inside_a_connect_tunnel_is_decided_per_request(proxy, one: Upstream) -> None:  # type: ignore[no-untyped-def]
    """A CONNECT to an allowed host's plain-HTTP port is no way around the per-request decision (landjail's shim
    makes such a tunnel of every connect a proxy-unaware program makes)."""
    with tunnel(proxy, one.port) as s:
        honest = exchange(s, f"GET /tunnelled HTTP/1.1\r\nHost: one.test:{one.port}\r\n\r\n".encode())
        assert honest.endswith(b"hello from /tunnelled\n")
        fronted = exchange(s, f"GET /tunnel-fronted HTTP/1.1\r\nHost: nope.test:{one.port}\r\n\r\n".encode())
        assert fronted.startswith(b"HTTP/1.1 403"), fronted
    with tunnel(proxy, one.port) as s:  # a host with a method rule: mitmproxy decides, at that request
        ruled = exchange(s, f"DELETE /admin HTTP/1.1\r\nHost: ruled.test:{one.port}\r\n\r\n".encode())
        assert ruled.startswith(b"HTTP/1.1 403"), ruled
        ok = exchange(s, f"GET /ok/tunnel HTTP/1.1\r\nHost: ruled.test:{one.port}\r\n\r\n".encode())
    assert ok.endswith(b"hello from /ok/tunnel\n"), ok
    assert one.last_request_path != "/admin"
    assert not [h for h in one.hosts_seen if h.startswith("nope.test")]
