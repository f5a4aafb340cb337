"""The plain-HTTP fast path: HTTP/1.1 relayed request by request without mitmproxy, for hosts the policy allows
whatever the method and path (no method/path rule names them).

Each request on a keep-alive client connection is decided on its own (``Hooks.decide``): a request for another
host gets an upstream connection of its own (the first one's is never reused for it), a denied one is answered
403 and the connection closed, one that needs a method/path rule is handed with the connection to mitmproxy at
that request boundary. Parsing and framing on both sides are h11's: a request is sent upstream with framing
headers rebuilt from what h11 read (chunked, or its Content-Length), hop-by-hop headers dropped, a request with
both Content-Length and Transfer-Encoding refused. 1xx answers (100-continue) pass through, and a 101 answer to
an Upgrade hands both connections to the byte relay.

Hostile input: heads are bounded (MAX_HEAD), bodies stream in chunks of at most READ bytes with each side
paused while the other is not writable. Side effects: owns and closes the client socket and every upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, Protocol

import h11

from .denial import http_response
from .fastpath import relay, reset_on_close
from .rules import Decision, normalize_host
from .sniff import split_authority

log = logging.getLogger(__name__)

MAX_HEAD = 32 * 1024
READ = 256 * 1024
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"transfer-encoding", b"upgrade", b"content-length",
    }
)  # fmt: skip
Kind = Literal["pass", "deny", "inspect"]


class BadRequest(ValueError):
    """The request cannot be routed (answered 400)."""


@dataclass(frozen=True, slots=True)
class Route:
    host: str  # normalised: what the policy decides on and the upstream connection goes to
    port: int
    target: bytes  # origin-form, as sent upstream
    authority: bytes | None  # the Host header to send (absolute-form: the URL's); None keeps the client's
    absolute: bool  # the client sent absolute-form (it treats us as a proxy)


def route(req: h11.Request, *, explicit: bool, pinned: str | None, port: int) -> Route:
    """Where one request goes. Absolute-form: the URL's host and port (the Host header is replaced by the URL's
    authority, RFC 9112 3.2.2). Origin-form (transparent only): the Host header's host, on the connection's port
    (a Host naming another site than the address dialled is decided, and connected to, as that site: no
    fronting through an allowed server); without a Host header, ``pinned`` (the name the jail's DNS gave the
    address dialled). Raise BadRequest."""
    t = req.target
    if t.startswith(b"/") or t == b"*":
        if explicit:
            raise BadRequest("this is a proxy; send absolute-form requests")
        host_header = next((v for k, v in req.headers if k == b"host"), None)
        if host_header is None:
            if pinned is None:
                raise BadRequest("the request has no Host header")
            return Route(pinned, port, t, None, False)
        try:
            name = split_authority(host_header.decode("ascii").strip(), port)[0]
            return Route(normalize_host(name), port, t, None, False)
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(f"cannot route by the Host header: {e}") from e
    scheme, sep, rest = t.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"ws"):
        raise BadRequest(f"unsupported request target {t[:80]!r} on a plain-HTTP connection")
    end = next((i for i, c in enumerate(rest) if c in b"/?#"), len(rest))  # RFC 3986: the authority ends here
    authority, tail = rest[:end].rsplit(b"@", 1)[-1], rest[end:].split(b"#", 1)[0]
    try:
        host, p = split_authority(authority.decode("ascii"), 80)
        host = normalize_host(host)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(str(e)) from e
    target = tail if tail.startswith(b"/") else b"/" + tail
    return Route(host, p, target, authority, True)


def outgoing_headers(
    headers: Sequence[tuple[bytes, bytes]], *, authority: bytes | None, upgrade: bool
) -> list[tuple[bytes, bytes]]:
    """End-to-end headers to pass on: hop-by-hop ones and the ones Connection names dropped, framing left to the
    caller; Host replaced when ``authority`` is given; Upgrade kept (with ``Connection: upgrade``) when the
    message asks to switch protocols."""
    named = {n.strip().lower() for k, v in headers if k.lower() == b"connection" for n in v.split(b",") if n.strip()}
    out: list[tuple[bytes, bytes]] = []
    for k, v in headers:
        low = k.lower()
        if low in HOP_BY_HOP or (low in named and low not in (b"host", b"content-length", b"transfer-encoding")):
            if upgrade and low == b"upgrade":
                out.append((k, v))
            continue
        if low == b"host" and authority is not None:
            continue
        out.append((k, v))
    if authority is not None:
        out.insert(0, (b"Host", authority))
    if upgrade:
        out.append((b"Connection", b"upgrade"))
    return out


def framing(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The framing header for a message h11 read: chunked, its Content-Length, or none (raise BadRequest when it
    had both, the smuggling shape)."""
    te = [v for k, v in headers if k == b"transfer-encoding"]
    cl = [v for k, v in headers if k == b"content-length"]
    if te and cl:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    if te:
        return [(b"Transfer-Encoding", b"chunked")]
    if cl:
        return [(b"Content-Length", cl[0])]
    return []


class Hooks(Protocol):
    """What the fast path asks of the proxy front."""

    def decide(self, r: Route, method: str) -> tuple[Kind, Decision | None]: ...

    async def connect(self, conn: socket.socket, d: Decision, what: str) -> socket.socket | None:
        """The upstream for ``d``; None when it cannot be reached (the hook answered and closed ``conn``)."""

    async def deny(self, conn: socket.socket, d: Decision, what: str) -> None: ...  # answers and closes

    async def handoff(self, conn: socket.socket, raw: bytes, r: Route) -> None: ...  # mitmproxy takes it

    def done(self, d: Decision, *, up: int, down: int, ms: float, failed: str | None = None) -> None: ...


class _Closed(Exception):
    """A peer went away mid-message."""


class _Upstream:
    def __init__(self, key: tuple[str, int], sock: socket.socket) -> None:
        self.key = key
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)

    def alive(self) -> bool:
        """Reusable: idle at a message boundary and not closed by the server (a peek sees no EOF and no data)."""
        if self.h11.our_state is not h11.IDLE or self.h11.their_state is not h11.IDLE:
            return False
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # EOF, or bytes nobody asked for
        except BlockingIOError:
            return True
        except OSError:
            pass
        return False

    def close(self) -> None:
        self.sock.close()


async def _event(conn: h11.Connection, sock: socket.socket, raw: bytearray | None = None) -> h11.Event:
    """The next event, reading as needed (``raw`` collects what was read, for a handoff)."""
    loop = asyncio.get_running_loop()
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            try:
                data = await loop.sock_recv(sock, READ)
            except OSError as e:  # a reset is no end of stream: a body cut by it must not end cleanly downstream
                raise _Closed(f"reset: {e}") from e
            if raw is not None:
                raw += data
            conn.receive_data(data)
            continue
        if ev is h11.PAUSED:
            raise _Closed("paused")
        assert isinstance(ev, h11.Event)
        return ev


async def serve(
    conn: socket.socket, first: bytes, hooks: Hooks, *, explicit: bool, pinned: str | None = None, port: int = 80,
    preconnected: tuple[str, int, socket.socket] | None = None,
) -> None:  # fmt: skip
    """Serve HTTP/1.1 requests on ``conn`` (``first``: bytes already read) until either side closes."""
    client = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    if first:  # (no bytes would mean end of stream to h11)
        client.receive_data(first)
    raw = bytearray(first)  # the current request's bytes as read: what mitmproxy gets when it takes over
    up = None if preconnected is None else _Upstream(preconnected[:2], preconnected[2])
    handed = False
    try:
        while True:
            try:
                ev = await _event(client, conn, raw)
            except h11.RemoteProtocolError as e:
                if raw:
                    await _answer(conn, e.error_status_hint, f"boundary: malformed request: {e}\n")
                return
            if not isinstance(ev, h11.Request):  # ConnectionClosed
                return
            try:
                r = route(ev, explicit=explicit, pinned=pinned, port=port)
                fields = framing(ev.headers)
            except BadRequest as e:
                await _answer(conn, 400, f"boundary: {e}\n")
                return
            method = ev.method.decode("ascii", "replace")
            kind, d = hooks.decide(r, method)
            if kind == "inspect":
                if up is not None:
                    up.close()
                    up = None
                handed = True
                await hooks.handoff(conn, bytes(raw), r)
                return
            assert d is not None
            what = f"{method} http://{r.host}:{r.port}{r.target.decode('ascii', 'replace')}"
            if kind == "deny":
                handed = True
                await hooks.deny(conn, d, what)
                return
            if up is not None and (up.key != (d.host, d.port) or not up.alive()):
                up.close()
                up = None
            t0 = time.monotonic()
            if up is None:
                sock = await hooks.connect(conn, d, what)
                if sock is None:
                    handed = True
                    return
                up = _Upstream((d.host, d.port), sock)
            # only a WebSocket upgrade passes: after a 101 the connection is a byte relay, and an h2c upgrade would
            # carry HTTP/2 requests for any :authority to this upstream undecided
            upgrade = any(k == b"upgrade" and v.strip().lower() == b"websocket" for k, v in ev.headers)
            headers = outgoing_headers(ev.headers, authority=r.authority, upgrade=upgrade)
            if not any(k.lower() == b"host" for k, _ in headers):  # an HTTP/1.0 client's request
                name = f"[{r.host}]" if ":" in r.host else r.host
                headers.insert(0, (b"Host", f"{name}:{r.port}".encode()))
            out = h11.Request(method=ev.method, target=r.target, headers=[*headers, *fields])
            stats = _Stats()
            try:
                switched = await _exchange(client, conn, up, out, stats)
            finally:  # at the end of the answer, or when the run ends with it still streaming: each one audited
                hooks.done(d, up=stats.up, down=stats.down, ms=(time.monotonic() - t0) * 1000, failed=stats.failed)
            if switched and not upgrade:  # a 101 nobody asked for (the Upgrade header was not passed on)
                return
            if switched:
                handed = True
                first_up, first_down = client.trailing_data[0], up.h11.trailing_data[0]
                upstream, up = up.sock, None
                await relay(conn, upstream, first_up=first_up, first_down=first_down)
                return
            if stats.failed is not None or client.our_state is not h11.DONE or client.their_state is not h11.DONE:
                return
            client.start_next_cycle()
            if up.h11.our_state is h11.DONE and up.h11.their_state is h11.DONE:
                up.h11.start_next_cycle()
            else:
                up.close()
                up = None
            raw = bytearray(client.trailing_data[0])
    except (OSError, _Closed, h11.ProtocolError) as e:
        log.debug("plain-HTTP connection ended: %r", e)
        if not handed:  # cut mid-exchange: the client is reset, so a cut answer never looks complete to it
            reset_on_close(conn)
        return
    finally:
        if up is not None:
            up.close()
        if not handed:
            conn.close()


@dataclass(slots=True)
class _Stats:
    up: int = 0
    down: int = 0
    failed: str | None = None
    aborted: bool = False  # the request body failed: the exchange was cancelled


async def _exchange(
    client: h11.Connection, conn: socket.socket, up: _Upstream, req: h11.Request, stats: _Stats
) -> bool:
    """One request and its answer; True when the upstream switched protocols (101)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(up.sock, up.h11.send(req) or b"")
    chunked_up = any(k == b"Transfer-Encoding" for k, _ in req.headers)
    me = asyncio.current_task()
    assert me is not None
    pump: asyncio.Task[None] | None = None
    ev = client.next_event()
    if isinstance(ev, h11.EndOfMessage):
        await loop.sock_sendall(up.sock, up.h11.send(h11.EndOfMessage()) or b"")
    else:
        pump = asyncio.create_task(_pump_body(client, conn, up, ev, stats, chunked_up, me))
    try:
        return await _answer_upstream(client, conn, up, stats)
    except asyncio.CancelledError:
        if not stats.aborted:
            raise
        me.uncancel()
        return False
    finally:
        if pump is not None:
            if not pump.done():
                pump.cancel()
                stats.failed = stats.failed or "answered before the request body ended"
            with contextlib.suppress(asyncio.CancelledError):
                await pump


async def _answer_upstream(client: h11.Connection, conn: socket.socket, up: _Upstream, stats: _Stats) -> bool:
    answered, chunked_down = False, False
    while True:
        try:
            rev = await _event(up.h11, up.sock)
        except h11.RemoteProtocolError as e:
            stats.failed = f"malformed answer: {e}"
            if not answered:
                await _send(conn, _answer_bytes(502, f"boundary: the upstream's answer was malformed: {e}\n"))
            return False
        if isinstance(rev, h11.ConnectionClosed):
            stats.failed = "the upstream closed the connection"
            if not answered:
                await _send(conn, _answer_bytes(502, "boundary: the upstream closed the connection\n"))
            return False
        if isinstance(rev, h11.InformationalResponse):
            headers = outgoing_headers(rev.headers, authority=None, upgrade=rev.status_code == 101)
            await _send(conn, client.send(h11.InformationalResponse(
                status_code=rev.status_code, headers=headers, reason=rev.reason)))  # fmt: skip
            if rev.status_code == 101:
                return True
        elif isinstance(rev, h11.Response):
            answered = True
            fields = _resp_framing(rev)
            chunked_down = fields[:1] == [(b"Transfer-Encoding", b"chunked")] and client.their_http_version == b"1.1"
            headers = [*outgoing_headers(rev.headers, authority=None, upgrade=False), *fields]
            await _send(conn, client.send(h11.Response(
                status_code=rev.status_code, headers=headers, reason=rev.reason)))  # fmt: skip
        elif isinstance(rev, h11.Data):
            stats.down += len(rev.data)
            await _send(conn, client.send(h11.Data(data=rev.data)))
        elif isinstance(rev, h11.EndOfMessage):
            await _send(conn, client.send(_end(rev, chunked_down)))
            return False


def _resp_framing(rev: h11.Response) -> list[tuple[bytes, bytes]]:
    try:
        return framing(rev.headers)
    except BadRequest:  # h11 read it as chunked (Transfer-Encoding wins): pass it on as that
        return [(b"Transfer-Encoding", b"chunked")]


def _end(ev: h11.EndOfMessage, chunked: bool) -> h11.EndOfMessage:
    """End of a message, trailers kept where the outgoing side is chunked (else dropped: nowhere to put them)."""
    if ev.headers and chunked:
        return h11.EndOfMessage(headers=outgoing_headers(ev.headers, authority=None, upgrade=False))
    return h11.EndOfMessage()


async def _pump_body(
    client: h11.Connection, conn: socket.socket, up: _Upstream, first: object,
    stats: _Stats, chunked: bool, parent: asyncio.Task[Any],
) -> None:  # fmt: skip
    """The request body, client to upstream; a failure cancels the exchange (the upstream would wait forever)."""
    loop = asyncio.get_running_loop()
    ev = first
    try:
        while True:
            if ev is h11.NEED_DATA:
                ev = await _event(client, conn)
            if isinstance(ev, h11.Data):
                stats.up += len(ev.data)
                await loop.sock_sendall(up.sock, up.h11.send(h11.Data(data=ev.data)) or b"")
            elif isinstance(ev, h11.EndOfMessage):
                await loop.sock_sendall(up.sock, up.h11.send(_end(ev, chunked)) or b"")
                return
            else:
                raise _Closed("the client went away mid-body")
            ev = h11.NEED_DATA
    except (OSError, _Closed, h11.ProtocolError) as e:
        stats.failed, stats.aborted = f"the request body failed: {e}", True
        parent.cancel()


async def _send(conn: socket.socket, data: bytes | None) -> None:
    if data:
        await asyncio.get_running_loop().sock_sendall(conn, data)


def _answer_bytes(status: int, body: str) -> bytes:
    """boundary's own answer (400, 502): the connection closes after it, so h11's state no longer matters."""
    return http_response(status, HTTPStatus(status).phrase, body)


async def _answer(conn: socket.socket, status: int, body: str) -> None:
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(5):
            await _send(conn, _answer_bytes(status, body))
