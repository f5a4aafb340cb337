"""The plain-HTTP fast path: its pure parts by table, and ``serve`` driven in process (socket pairs, h11 servers
as upstreams) by hypothesis: random keep-alive sequences split at random points, denials and handoffs among
them, garbage mixed in. Properties: every request reaches the upstream of its own host with its body intact,
answers come back in order, nothing after a denial or handoff is relayed, nothing hangs or raises."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import httpfast
from proxy.httpfast import BadRequest, Route, framing, outgoing_headers, route
from proxy.rules import Decision, normalize_host
from proxy.sniff import Status, parse_request_head, request_target


def req(target: bytes, *headers: tuple[bytes, bytes], method: bytes = b"GET") -> h11.Request:
    return h11.Request(method=method, target=target, headers=list(headers) or [(b"Host", b"x.test")])


@pytest.mark.parametrize(
    ("target", "explicit", "pinned", "host_header", "expected"),
    [
        (b"http://a.test/x?y", True, None, b"x", ("a.test", 80, b"/x?y", b"a.test")),
        (b"http://a.test", True, None, b"x", ("a.test", 80, b"/", b"a.test")),
        (b"http://a.test?q=1", True, None, b"x", ("a.test", 80, b"/?q=1", b"a.test")),
        (b"http://u:p@a.test:8080/p", True, None, b"x", ("a.test", 8080, b"/p", b"a.test:8080")),
        (b"http://evil.test?@good.test/", True, None, b"x", ("evil.test", 80, b"/?@good.test/", b"evil.test")),
        (b"http://good.test#@evil.test/", True, None, b"x", ("good.test", 80, b"/", b"good.test")),
        (b"HTTP://A.TEST./", True, None, b"x", ("a.test", 80, b"/", b"A.TEST.")),
        (b"ws://a.test:81/s", True, None, b"x", ("a.test", 81, b"/s", b"a.test:81")),
        (b"/p", False, "pinned.test", b"b.test:99", ("b.test", 8080, b"/p", None)),  # Host decides, not the pin
        (b"/p", False, None, b"B.Test", ("b.test", 8080, b"/p", None)),
        (b"/p", False, "pinned.test", None, ("pinned.test", 8080, b"/p", None)),
    ],
)
def test_route(
    target: bytes, explicit: bool, pinned: str | None, host_header: bytes | None, expected: tuple[object, ...]
) -> None:
    headers = [(b"Host", host_header)] if host_header is not None else []
    r = route(
        h11.Request(method="GET", target=target, headers=headers, http_version="1.0"),
        explicit=explicit, pinned=pinned, port=8080,
    )  # fmt: skip
    assert (r.host, r.port, r.target, r.authority) == expected


@pytest.mark.parametrize(
    ("target", "explicit", "host_header"),
    [
        (b"/p", True, b"a.test"),  # origin-form to a proxy
        (b"https://a.test/", True, b"a.test"),  # TLS wanted of a plain connection
        (b"a.test:443", True, b"a.test"),  # authority-form is CONNECT's
        (b"http://[zz]/", True, b"a.test"),
        (b"http://a.test:99999/", True, b"a.test"),
        (b"/p", False, b"bad host"),
        (b"/p", False, None),
    ],
)
def test_route_refuses(target: bytes, explicit: bool, host_header: bytes | None) -> None:
    headers = [(b"Host", host_header)] if host_header is not None else []
    with pytest.raises(BadRequest):
        route(
            h11.Request(method="GET", target=target, headers=headers, http_version="1.0"),
            explicit=explicit, pinned=None, port=80,
        )  # fmt: skip


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    given_headers = [
        (b"Host", b"old"), (b"Connection", b"keep-alive, X-Private"), (b"X-Private", b"1"), (b"Keep-Alive", b"5"),
        (b"Proxy-Authorization", b"Basic eA=="), (b"Proxy-Connection", b"keep-alive"), (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3"), (b"Upgrade", b"websocket"), (b"X-Kept", b"y"),
    ]  # fmt: skip
    assert outgoing_headers(given_headers, authority=b"a.test", upgrade=False) == [
        (b"Host", b"a.test"),
        (b"X-Kept", b"y"),
    ]
    assert outgoing_headers(given_headers, authority=None, upgrade=True) == [
        (b"Host", b"old"), (b"Upgrade", b"websocket"), (b"X-Kept", b"y"), (b"Connection", b"upgrade"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"transfer-encoding", b"chunked")], [(b"Transfer-Encoding", b"chunked")]),
        ([(b"content-length", b"12")], [(b"Content-Length", b"12")]),
        ([], []),
    ],
)
def test_framing(headers: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]) -> None:
    assert framing(headers) == expected


def test_framing_refuses_both_lengths() -> None:
    with pytest.raises(BadRequest):
        framing([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")])


# -- the two parsers agree on where an absolute-form request goes -----------------------------------------------
AUTH = st.text(alphabet="abc.:@?#/[]1", min_size=1, max_size=20)


@settings(max_examples=400, deadline=None)
@given(AUTH, st.text(alphabet="abc/?#@:", max_size=10))
def test_sniff_and_h11_route_agree(authority: str, tail: str) -> None:
    """The first-bytes parser (which picks the path) and the per-request router (which decides each request)
    read the same host and port from any absolute-form target, or one of them refuses it."""
    target = f"http://{authority}{tail}"
    res = parse_request_head(f"GET {target} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
    if res.status is not Status.OK or res.head is None:
        return
    try:
        t = request_target(res.head)
        r = route(req(target.encode()), explicit=True, pinned=None, port=80)
    except ValueError:
        return
    try:
        host = normalize_host(t.host)
    except ValueError:  # sniff's host does not normalise: the front refuses it before routing
        return
    assert (host, t.port) == (r.host, r.port)


# -- serve, in process -----------------------------------------------------------------------------------------
HOSTS = ["a.test", "b.test", "deny.test", "inspect.test"]


@dataclass
class Msg:
    host: str
    path: str
    body: bytes
    chunked: bool
    close: bool = False

    def wire(self) -> bytes:
        head = f"POST http://{self.host}/{self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if self.close:
            head += "Connection: close\r\n"
        if self.chunked:
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (self.body[:3], self.body[3:]) if c)
            return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
        return (head + f"Content-Length: {len(self.body)}\r\n\r\n").encode() + self.body


@dataclass
class FakeHooks:
    upstreams: list[tuple[str, socket.socket]] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    handed: list[bytes] = field(default_factory=list)
    taken: list[socket.socket] = field(default_factory=list)
    done_count: int = 0

    def decide(self, r: Route, method: str) -> tuple[httpfast.Kind, Decision | None]:
        d = Decision(r.host != "deny.test", r.host, r.port, None, "test", method, r.target.decode())
        if r.host == "inspect.test":
            return "inspect", None
        return ("pass" if d.allowed else "deny"), d

    async def connect(self, conn: socket.socket, d: Decision, what: str) -> socket.socket | None:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        self.upstreams.append((d.host, theirs))
        asyncio.get_running_loop().create_task(_origin(theirs, d.host))
        return ours

    async def deny(self, conn: socket.socket, d: Decision, what: str) -> None:
        self.denied.append(what)
        await asyncio.get_running_loop().sock_sendall(conn, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)  # closed at the end (closing with unread bytes would reset the client)
        self.taken.append(conn)

    async def handoff(self, conn: socket.socket, raw: bytes, r: Route) -> None:
        self.handed.append(raw)
        conn.shutdown(socket.SHUT_WR)
        self.taken.append(conn)

    def done(self, d: Decision, *, up: int, down: int, ms: float, failed: str | None = None) -> None:
        self.done_count += 1


SEEN: dict[str, list[tuple[str, bytes]]] = {}


async def _origin(sock: socket.socket, name: str) -> None:
    """An origin server for ``name``: answers each request with its own host, path and body."""
    loop = asyncio.get_running_loop()
    conn = h11.Connection(h11.SERVER)
    body = b""
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(await loop.sock_recv(sock, 65536))
                continue
            if isinstance(ev, h11.Request):
                host = dict(ev.headers)[b"host"].decode()
                target = ev.target.decode()
                body = b""
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                SEEN.setdefault(name, []).append((host, body))
                answer = f"{name}|{host}|{target}|".encode() + body
                out = conn.send(h11.Response(status_code=200, headers=[(b"Content-Length", str(len(answer)))]))
                out += conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage())
                await loop.sock_sendall(sock, out)
                conn.start_next_cycle()
            else:
                return
    except (OSError, h11.ProtocolError):
        return
    finally:
        sock.close()


async def _drive(msgs: Sequence[Msg], cuts: Sequence[int], garbage: bytes) -> tuple[FakeHooks, list[tuple[int, bytes]]]:
    """Send ``msgs`` then ``garbage`` split at ``cuts``, half-close, and read the (status, body) answers."""
    loop = asyncio.get_running_loop()
    SEEN.clear()
    client, proxy_side = socket.socketpair()
    client.setblocking(False)
    proxy_side.setblocking(False)
    hooks = FakeHooks()
    wire = b"".join(m.wire() for m in msgs) + garbage
    server = loop.create_task(httpfast.serve(proxy_side, b"", hooks, explicit=True))
    pos = 0
    for c in [*sorted(set(cuts)), len(wire)]:
        if c > pos:
            try:
                await loop.sock_sendall(client, wire[pos:c])
            except OSError:
                break
            pos = c
            await asyncio.sleep(0)
    with contextlib.suppress(OSError):
        client.shutdown(socket.SHUT_WR)
    answers: list[tuple[int, bytes]] = []
    parser = h11.Connection(h11.CLIENT)
    status, body = 0, b""
    async with asyncio.timeout(10):
        while True:
            if parser.our_state is h11.IDLE:  # a request it never sends lets it read the next answer
                parser.send(h11.Request(method="GET", target="/", headers=[(b"Host", b"x")]))
                parser.send(h11.EndOfMessage())
            try:
                ev = parser.next_event()
            except h11.RemoteProtocolError:
                break
            if ev is h11.NEED_DATA:
                parser.receive_data(await loop.sock_recv(client, 65536))
            elif isinstance(ev, h11.Response):
                status, body = ev.status_code, b""
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                answers.append((status, body))
                if parser.our_state is not h11.DONE or parser.their_state is not h11.DONE:
                    break
                parser.start_next_cycle()
            else:
                break
        await server
    client.close()
    for s in [*(u for _, u in hooks.upstreams), *hooks.taken]:
        s.close()
    return hooks, answers


msg_st = st.builds(
    Msg,
    host=st.sampled_from(HOSTS),
    path=st.text(alphabet="abc", max_size=5),
    body=st.binary(max_size=20),
    chunked=st.booleans(),
    close=st.booleans(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(msg_st, min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=600), max_size=8),
    st.sampled_from([b"", b"\r\n", b"GARBAGE\r\n\r\n", b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n" * 3]),
)
def test_serve_relays_each_request_to_its_own_host(msgs: list[Msg], cuts: list[int], garbage: bytes) -> None:
    hooks, answers = asyncio.run(_drive(msgs, cuts, garbage))
    # what should have happened: requests in order until the first denial, handoff or Connection: close
    expected: list[Msg] = []
    stop, offset = "end", 0
    for m in msgs:
        if m.host in ("deny.test", "inspect.test"):
            stop = m.host
            break
        expected.append(m)
        offset += len(m.wire())
        if m.close:
            stop = "close"
            break
    assert [b for st_, b in answers if st_ == 200] == [
        f"{m.host}|{m.host}|/{m.path}|".encode() + m.body for m in expected
    ]
    # each upstream heard only its own host, and every change of host opened a new upstream
    for name, seen in SEEN.items():
        assert all(host == name for host, _ in seen)
    hosts = [m.host for m in expected]
    assert len(hooks.upstreams) == sum(1 for i, h in enumerate(hosts) if i == 0 or h != hosts[i - 1])
    assert hooks.done_count == len(expected)
    if stop == "deny.test":
        assert len(hooks.denied) == 1
        assert answers[-1][0] == 403
    elif stop == "inspect.test":  # mitmproxy is handed the bytes from that request's first byte on
        assert len(hooks.handed) == 1
        rest = (b"".join(m.wire() for m in msgs) + garbage)[offset:]
        assert rest.startswith(hooks.handed[0])
        assert len(hooks.handed[0]) >= rest.index(b"\r\n\r\n") + 4
    else:
        assert not hooks.denied
        assert not hooks.handed
    if stop == "end" and garbage.startswith(b"GARBAGE"):
        assert answers[-1][0] == 400
