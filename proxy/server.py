"""The proxy front: accepts on explicit (CONNECT / absolute-form) and transparent
listeners, decides from the first bytes with the one policy, then relays on the
fast path or hands the connection to the lazily started mitmproxy.

Listeners are sockets created by the caller (bound, listening), so the jail can
create them in its own network namespace and pass them up. Readiness: once
:meth:`ProxyServer.start` returns, every listener is being served; a listener
queues connections in its backlog even before that.
Out of descriptors (EMFILE), accepting backs off and resumes as soon as one is
free; connections waiting in the backlog over SHED_AFTER are refused, never left hanging.
Side effects: outgoing connections (via :mod:`upstream`), audit records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import logging
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from .audit import AuditSink
from .denial import Pin, denial_body, http_response
from .fastpath import RelayStats, relay
from .mitm import MitmEngine, MitmError, MitmSettings
from .origins import Origins
from .rules import Decision, L4Verdict, Policy, normalize_host
from .secretswap import SecretSet
from .sniff import (
    RequestHead,
    Status,
    looks_like_tls,
    parse_client_hello,
    parse_request_head,
    request_target,
    split_authority,
)
from .upstream import Upstream, UpstreamError

if TYPE_CHECKING:  # the plain-HTTP path (h11) is imported when a plain-HTTP connection first needs it
    from . import httpfast

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 30.0  # explicit clients send their request head at once
PEEK_TIMEOUT = 1.0  # transparent: how long to wait for a ClientHello / request head
TLS_PEEK_TIMEOUT = 10.0  # ... once the first bytes are a TLS handshake's
PEEK_LIMIT = 64 * 1024
ACCEPT_BACKOFF = 0.05  # a failed accept (out of descriptors or memory) is retried at least this often
SHED_AFTER = 1.0  # out of descriptors this long: connections waiting in the backlog are refused
WARN_EVERY = 10.0  # at most one warning about failed accepts this often
FD_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})
SO_ORIGINAL_DST = 80
# what an HTTP request line starts like, however malformed (a known method in any case, or an HTTP version on
# the first line in any case): bytes that begin so and do not parse are refused, not relayed, since a lenient
# server behind them would take the requests after them undecided
_HTTP_START = re.compile(
    rb"(?i)(?:GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK|"
    rb"SEARCH|REPORT|PURGE)[ \t]|[^\r\n]{0,8192}?[ \t]HTTP/[0-9]"
)
IP6T_SO_ORIGINAL_DST = 80


Handler = Callable[[socket.socket], Coroutine[Any, Any, None]]


class MitmMode(enum.Enum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


def bind_explicit(port: int = 0) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1 and ::1, same port (random when 0)."""
    v4 = socket.create_server(("127.0.0.1", port), backlog=1024)
    socks = [v4]
    port = v4.getsockname()[1]
    try:
        socks.append(socket.create_server(("::1", port), family=socket.AF_INET6, backlog=1024))
    except OSError as e:
        log.debug("no IPv6 loopback listener: %s", e)
    return socks


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """SO_ORIGINAL_DST of a redirected connection, else the local address."""
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, ip = struct.unpack_from("!2xH4s", raw)
            return socket.inet_ntop(socket.AF_INET, ip), port
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port, ip = struct.unpack_from("!2xH4x16s", raw)
        return socket.inet_ntop(socket.AF_INET6, ip), port
    except OSError:
        name = sock.getsockname()
        return str(name[0]), int(name[1])


class _AcceptFailures:
    """One listener's failed accepts. Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the caller
    backs off while connections wait in the backlog, and accepts again as soon as a descriptor is free. When none
    frees for SHED_AFTER, waiting connections are refused (accepted on the slot of a spare descriptor kept for
    this, and closed): clients fail at once instead of hanging for as long as the held connections last."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.spare = self._take_spare()
        self.since: float | None = None  # failing since
        self.warned = -WARN_EVERY
        self.refused = 0

    def failed(self, e: OSError) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            if now - self.warned >= WARN_EVERY:
                self.warned = now
                hint = " (hint: raise the hard limit, ulimit -Hn)" if e.errno in FD_EXHAUSTED else ""
                log.warning("failed to accept a connection: %s; backing off%s", e.strerror, hint)
        elif e.errno in FD_EXHAUSTED and now - self.since >= SHED_AFTER:
            self.close()
            while True:
                try:
                    conn, _ = self.listener.accept()
                except OSError:  # the backlog is empty (EAGAIN), or the slot went elsewhere
                    break
                conn.close()  # the client sees a reset (or EOF)
                self.refused += 1
            self.spare = self._take_spare()

    def accepted(self) -> None:
        if self.since is not None and self.refused:
            log.warning(
                "refused %d connections waiting while out of descriptors for %.1fs",
                self.refused, time.monotonic() - self.since,
            )  # fmt: skip
        self.since, self.refused = None, 0
        if self.spare < 0:
            self.spare = self._take_spare()

    def close(self) -> None:
        if self.spare >= 0:
            os.close(self.spare)
            self.spare = -1

    def _take_spare(self) -> int:
        try:
            return os.dup(self.listener.fileno())
        except OSError:
            return -1


class ProxyServer:
    def __init__(
        self,
        policy: Policy,
        upstream: Upstream,
        audit: AuditSink,
        *,
        mitm: MitmMode = MitmMode.AUTO,
        mitm_settings: MitmSettings,
        names: Callable[[str], str | None] | None = None,
        origins: Origins | None = None,
        secrets: SecretSet | None = None,
    ) -> None:
        self.policy = policy
        self.origins = origins  # landjail: where redirected connections meant to go (else SO_ORIGINAL_DST)
        self.upstream = upstream
        self.audit = audit
        self.mitm_mode = mitm
        self.secrets = secrets or SecretSet()
        self.mitm = MitmEngine(mitm_settings, policy, upstream, audit, self.secrets)
        self.names = names
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: list[asyncio.Task[None]] = []
        self._ended = asyncio.Event()  # a connection ended (descriptors freed): a failed accept retries at once

    async def start(self, *, explicit: Sequence[socket.socket] = (), transparent: Sequence[socket.socket] = ()) -> None:
        for lst in explicit:
            self._accepting.append(asyncio.create_task(self._accept(lst, self._explicit)))
        for lst in transparent:
            self._accepting.append(asyncio.create_task(self._accept(lst, self._transparent)))
        if self.mitm_mode is MitmMode.ALWAYS:
            await self.mitm.ensure_started()

    async def aclose(self) -> None:
        for t in self._accepting:
            t.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._accepting, *self._tasks, return_exceptions=True)
        await self.mitm.close()

    async def _accept(self, listener: socket.socket, handler: Handler) -> None:
        """Serve ``listener`` until cancelled; failed accepts back off and recover (see :class:`_AcceptFailures`)."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        failures = _AcceptFailures(listener)
        try:
            while True:
                self._ended.clear()
                try:
                    conn, _ = await loop.sock_accept(listener)
                except OSError as e:
                    failures.failed(e)
                    with contextlib.suppress(TimeoutError):  # descriptors freed elsewhere: polled
                        async with asyncio.timeout(ACCEPT_BACKOFF):
                            await self._ended.wait()
                    continue
                failures.accepted()
                task = asyncio.create_task(self._guard(conn, handler))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda _: self._ended.set())
        finally:
            failures.close()

    async def _guard(self, conn: socket.socket, handler: Handler) -> None:
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await handler(conn)
        except (OSError, TimeoutError, MitmError) as e:
            log.debug("connection ended: %r", e)
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception:
            log.exception("internal error while serving a connection")
            conn.close()

    # -- helpers ---------------------------------------------------------------
    async def _read_more(self, conn: socket.socket, buf: bytearray, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            chunk = await loop.sock_recv(conn, 16384)
        if not chunk:
            return False
        buf += chunk
        return True

    async def _send_and_close(self, conn: socket.socket, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(5):
                await loop.sock_sendall(conn, data)
        conn.close()

    async def _deny_http(
        self, conn: socket.socket, d: Decision, what: str, *, event: str, scheme: str,
        status: tuple[int, str] = (403, "Forbidden"),
    ) -> None:  # fmt: skip
        self.audit.decision(d, event=event, scheme=scheme)
        await self._send_and_close(conn, http_response(*status, denial_body(d, what)))

    async def _pass(self, conn: socket.socket, d: Decision, first_up: bytes, *, scheme: str) -> None:
        """Connect to the decided name and relay; audit at the end."""
        t0 = time.monotonic()
        upstream = await self._connect(conn, d, None, event="connection", scheme=scheme)
        if upstream is not None:
            await self._relay(conn, upstream, d, first_up, scheme=scheme, t0=t0)

    async def _connect(
        self, conn: socket.socket, d: Decision, what: str | None, *, event: str, scheme: str
    ) -> socket.socket | None:
        """The upstream for ``d``; None when it cannot be reached or the address guard refuses it: audited, and
        answered on ``conn`` (403 / 502, when ``what`` names the request) or just closed."""
        try:
            try:
                return await self.upstream.connect(d.host, d.port)
            except OSError as e:  # not even a socket for it (EMFILE, ENOBUFS): answered like a failed connect
                raise UpstreamError(f"cannot connect to {d.host}:{d.port}: {e.strerror}") from e
        except UpstreamError as e:
            denied = Decision(
                False,
                d.host,
                d.port,
                d.rule,
                e.reason,
                d.method,
                d.path,
                upstream_failed=not e.guard,
                guarded=e.guard,
                raw_path=d.raw_path,
            )
            if what is not None:
                await self._deny_http(
                    conn, denied, what, event=event, scheme=scheme,
                    status=(403, "Forbidden") if e.guard else (502, "Bad Gateway"),
                )  # fmt: skip
            else:
                self.audit.decision(denied, event=event, scheme=scheme)
                conn.close()
            return None

    async def _relay(
        self, conn: socket.socket, upstream: socket.socket, d: Decision, first_up: bytes, *, scheme: str, t0: float
    ) -> None:
        stats = RelayStats()
        try:
            await relay(conn, upstream, first_up=first_up, stats=stats)
        finally:  # at the end of the relay, or when the run ends with it still open: every connection is audited
            self.audit.decision(
                d, event="connection", scheme=scheme, bytes_up=stats.bytes_up, bytes_down=stats.bytes_down,
                duration_ms=(time.monotonic() - t0) * 1000,
            )  # fmt: skip

    # -- explicit proxy --------------------------------------------------------
    async def _explicit(self, conn: socket.socket, buf: bytearray | None = None) -> None:
        """A proxy request: CONNECT or absolute-form; ``buf`` holds bytes already read."""
        buf = bytearray() if buf is None else buf
        while True:
            res = parse_request_head(bytes(buf))
            if res.status is not Status.MORE:
                break
            try:
                if not await self._read_more(conn, buf, HEAD_TIMEOUT):
                    conn.close()
                    return
            except TimeoutError:
                conn.close()
                return
        if res.head is None:
            await self._send_and_close(conn, http_response(400, "Bad Request", f"boundary: {res.error}\n"))
            return
        head = res.head
        try:
            target = request_target(head)
            host = normalize_host(target.host)
        except ValueError as e:
            await self._send_and_close(conn, http_response(400, "Bad Request", f"boundary: {e}\n"))
            return
        if not target.connect and head.target.startswith("/"):
            await self._send_and_close(
                conn, http_response(400, "Bad Request", "boundary: this is a proxy; send absolute-form requests\n")
            )
            return
        port = target.port
        verdict, _ = self.policy.l4(host, port)
        if target.connect:
            if verdict is L4Verdict.DENY:
                d = self.policy.decide_connection(host, port)
                await self._deny_http(conn, d, f"CONNECT {host}:{port}", event="connection", scheme="connect")
                return
            if verdict is L4Verdict.ALLOW and self.mitm_mode is not MitmMode.ALWAYS:
                await self._pass_tunnel(conn, self.policy.decide_connection(host, port), bytes(buf[head.length :]))
                return
        else:
            d = self.policy.decide_request(host, port, head.method, target.path)
            if not d.allowed:
                await self._deny_http(
                    conn, d, f"{head.method} http://{host}:{port}{target.path}", event="request", scheme="http"
                )
                return
            if self._http_fast(verdict) and head.target[:7].lower() == "http://":
                from . import httpfast

                await httpfast.serve(conn, bytes(buf), _HttpHooks(self, None), explicit=True)
                return
        if self.mitm_mode is MitmMode.NEVER and verdict is L4Verdict.INSPECT:
            d = self.policy.decide_connection(host, port)
            await self._deny_http(
                conn, d, f"CONNECT {host}:{port} (--mitm never)", event="connection", scheme="connect"
            )
            return
        # L7 needed (a method/path rule, plain HTTP, or --mitm always): mitmproxy sees every request
        await self.mitm.handoff(conn, bytes(buf), transparent=False, pin=None, dst=None)

    # -- transparent (nsjail's redirect, landjail's supervisor) ------------------
    async def _transparent(self, conn: socket.socket) -> None:
        if self.origins is None:
            dst_ip, dst_port = original_dst(conn)
        else:
            peer = conn.getpeername()
            found = await self.origins.take((str(peer[0]), int(peer[1])))
            if found is None:  # not a connection the supervisor made: nothing says where it meant to go
                log.debug("transparent connection from %s without a recorded destination: closed", peer)
                conn.close()
                return
            dst_ip, dst_port = found
        if dst_ip.startswith("::ffff:"):
            dst_ip = dst_ip[7:]
        mapped = self.names(dst_ip) if self.names else None
        buf = bytearray()
        if mapped is not None:
            verdict, _ = self.policy.l4(mapped, dst_port)
            if verdict is L4Verdict.ALLOW and self.mitm_mode is not MitmMode.ALWAYS:
                # the name is known: connected at once, so a server that speaks first works
                await self._pass_named(conn, mapped, dst_ip, dst_port)
                return
        kind, name, head = await self._peek(conn, buf)
        if kind == "badhttp":
            await self._bad_http(conn)
            return
        if head is not None and (head.method == "CONNECT" or not head.target.startswith("/")):
            # a proxy-aware client dialled some proxy address (HTTPS_PROXY from the host): serve it as one
            await self._explicit(conn, buf)
            return
        host = mapped or name or dst_ip
        try:
            host = normalize_host(host)
        except ValueError:
            host = dst_ip
        verdict, _ = self.policy.l4(host, dst_port)
        scheme = kind
        if verdict is L4Verdict.DENY or (verdict is L4Verdict.INSPECT and self.mitm_mode is MitmMode.NEVER):
            if head is not None:
                d = self.policy.decide_request(host, dst_port, head.method, head.target)
                if d.allowed:  # only INSPECT + --mitm never lands here
                    d = self.policy.decide_connection(host, dst_port)
                await self._deny_http(
                    conn, d, f"{head.method} http://{host}:{dst_port}{head.target}", event="request", scheme="http"
                )
            else:
                self.audit.decision(self.policy.decide_connection(host, dst_port), event="connection", scheme=scheme)
                conn.close()  # denied TLS / TCP: closed after the ClientHello
            return
        if verdict is L4Verdict.ALLOW and self.mitm_mode is not MitmMode.ALWAYS:
            if kind == "http" and self._http_fast(verdict):  # each request decided on its own
                hooks = _HttpHooks(self, (dst_ip, dst_port))
                from . import httpfast

                await httpfast.serve(conn, bytes(buf), hooks, explicit=False, pinned=mapped, port=dst_port)
                return
            if kind != "http":
                await self._pass(conn, self.policy.decide_connection(host, dst_port), bytes(buf), scheme=scheme)
                return
            # plain HTTP off the fast path (a secret is bound): mitmproxy decides each request (a Host of another
            # name is refused) and looks for placeholders; a byte relay would carry any Host to this server
        if kind == "tcp":  # an L7 rule applies but there is nothing HTTP to inspect
            self.audit.decision(self.policy.decide_connection(host, dst_port), event="connection", scheme=scheme)
            conn.close()
            return
        await self.mitm.handoff(conn, bytes(buf), transparent=True, pin=Pin(host, dst_port), dst=(dst_ip, dst_port))

    async def _bad_http(self, conn: socket.socket) -> None:
        """A request line that does not parse into a request (or a head too large): never relayed as bytes, where
        the requests after it would go undecided."""
        await self._send_and_close(conn, http_response(400, "Bad Request", "boundary: malformed HTTP request\n"))

    def _http_fast(self, verdict: L4Verdict) -> bool:
        """Plain HTTP relayed without mitmproxy: the host needs no method/path rule, nothing asks for interception,
        and no secret is bound (then mitmproxy looks at every plain request for a placeholder sent in the clear)."""
        return verdict is L4Verdict.ALLOW and self.mitm_mode is not MitmMode.ALWAYS and not self.secrets

    async def _pass_named(self, conn: socket.socket, name: str, dst_ip: str, port: int) -> None:
        """A connection to the address the jail's DNS gave ``name``: connected at once (a server that speaks first
        works), then as :meth:`_by_first_speaker` says."""
        d = self.policy.decide_connection(name, port)
        t0 = time.monotonic()
        upstream = await self._connect(conn, d, None, event="connection", scheme="tcp")
        if upstream is not None:
            await self._by_first_speaker(conn, upstream, d, t0, bytearray(), dst=(dst_ip, port), tunnel=False)

    async def _pass_tunnel(self, conn: socket.socket, d: Decision, first: bytes) -> None:
        """An allowed CONNECT: answered once the upstream is connected, then as :meth:`_by_first_speaker` says (a
        tunnel to a plain-HTTP port is not a way around deciding each request: landjail's shim makes one of every
        connect a proxy-unaware program makes)."""
        t0 = time.monotonic()
        upstream = await self._connect(conn, d, f"CONNECT {d.host}:{d.port}", event="connection", scheme="connect")
        if upstream is None:
            return
        try:
            await asyncio.get_running_loop().sock_sendall(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
        except BaseException:
            upstream.close()
            raise
        await self._by_first_speaker(conn, upstream, d, t0, bytearray(first), dst=(d.host, d.port), tunnel=True)

    async def _by_first_speaker(
        self, conn: socket.socket, upstream: socket.socket, d: Decision, t0: float, buf: bytearray, *,
        dst: tuple[str, int], tunnel: bool,
    ) -> None:  # fmt: skip
        """A connection decided for ``d.host`` with its upstream open: when the client speaks first with plain
        HTTP, its requests are decided one by one (a Host of another name does not ride on this upstream); bytes
        that start like HTTP but do not parse are refused; anything else is relayed."""
        scheme = "connect" if tunnel else "tcp"
        kind, name, head = "tcp", None, None
        try:
            if buf or await _first_to_speak(conn, upstream) is conn:
                kind, name, head = await self._peek(conn, buf)
        except BaseException:  # the run ended (or the client vanished) before either spoke
            upstream.close()
            self.audit.decision(d, event="connection", scheme=scheme, duration_ms=(time.monotonic() - t0) * 1000)
            raise
        if kind == "badhttp":
            upstream.close()
            await self._bad_http(conn)
            return
        if kind == "tcp" and looks_like_tls(buf):
            # a TLS handshake whose ClientHello could not be read (an empty record ahead of it, one sent too
            # slowly): its server name cannot be checked, so it is not carried to a front end that routes by it
            upstream.close()
            self.audit.decision(dataclasses.replace(d, allowed=False, rule=None, reason="a TLS handshake whose "
                                "server name could not be read"), event="connection", scheme="tls")  # fmt: skip
            conn.close()
            return
        if kind == "tls" and name and (refused := self._sni_refused(name, d)) is not None:
            # a shared front end routes by the SNI: one naming a host the rules do not allow as a whole (denied,
            # or decided per request) is not carried to it on this connection
            upstream.close()
            self.audit.decision(refused, event="connection", scheme="tls")
            conn.close()
            return
        if kind != "http" or head is None:
            await self._relay(conn, upstream, d, bytes(buf), scheme=scheme if kind == "tcp" else kind, t0=t0)
            return
        if not tunnel and (head.method == "CONNECT" or not head.target.startswith("/")):
            upstream.close()  # a proxy-aware client that dialled some proxy address: served as one
            await self._explicit(conn, buf)
            return
        if not self._http_fast(L4Verdict.ALLOW):  # a secret is bound: mitmproxy decides each request (see above)
            upstream.close()
            await self.mitm.handoff(conn, bytes(buf), transparent=True, pin=Pin(d.host, d.port), dst=dst)
            return
        from . import httpfast

        hooks = _HttpHooks(self, dst)
        await httpfast.serve(
            conn, bytes(buf), hooks, explicit=False, pinned=d.host, port=d.port, preconnected=(d.host, d.port, upstream)
        )

    def _sni_refused(self, sni: str, d: Decision) -> Decision | None:
        """The denial for a ClientHello naming ``sni`` on a connection decided for ``d.host``, or None when the
        name is that host or one allowed whatever the method and path."""
        try:
            host = normalize_host(sni)
        except ValueError:
            return Decision(False, sni, d.port, None, "the TLS server name is malformed")
        if host == d.host or self.policy.l4(host, d.port)[0] is L4Verdict.ALLOW:
            return None
        named = self.policy.decide_connection(host, d.port)
        why = f"the TLS server name {host!r} is not the connection's ({d.host!r}): {named.reason}"
        return dataclasses.replace(named, allowed=False, reason=why)

    async def _peek(self, conn: socket.socket, buf: bytearray) -> tuple[str, str | None, RequestHead | None]:
        """Read the first bytes: ("tls", sni, None) | ("http", host, head) | ("tcp", None, None) | ("badhttp", None,
        None). Empty lines before a request line (which servers skip, RFC 9112 2.2) are dropped from ``buf`` when
        what follows is HTTP: they must not make a request 'not HTTP', a byte relay that carries it undecided."""
        start = asyncio.get_running_loop().time()
        kind: tuple[str, str | None, RequestHead | None] | None = None
        while kind is None and len(buf) < PEEK_LIMIT:
            kind = self._sniff(buf)
            if kind is not None:
                break
            # a ClientHello on its way gets longer: what cannot be read of it is refused, not relayed
            remaining = start + (TLS_PEEK_TIMEOUT if looks_like_tls(buf) else PEEK_TIMEOUT) - (
                asyncio.get_running_loop().time())  # fmt: skip
            if remaining <= 0:
                break
            try:
                if not await self._read_more(conn, buf, remaining):
                    break
            except TimeoutError:
                break
        if kind is None:  # out of time or room: what came so far decides
            view = bytes(buf).lstrip(b"\r\n")
            # nothing but empty lines is the start of an HTTP request too: relayed, what follows would go undecided
            http_like = _HTTP_START.match(view) or (buf and not view)
            kind = ("badhttp" if http_like else "tcp"), None, None
        if kind[0] != "tcp" and kind[0] != "tls":
            del buf[: len(buf) - len(bytes(buf).lstrip(b"\r\n"))]
        return kind

    @staticmethod
    def _sniff(buf: bytearray) -> tuple[str, str | None, RequestHead | None] | None:
        """What the bytes so far are, or None while more are needed."""
        if buf and looks_like_tls(buf):
            hello = parse_client_hello(bytes(buf))
            if hello.status is Status.OK:
                return "tls", hello.sni, None
            return ("tcp", None, None) if hello.status is Status.NO else None
        view = bytes(buf).lstrip(b"\r\n")  # (a request's offsets below are into the bytes after these)
        if not view:
            return None
        res = parse_request_head(view)
        if res.status is Status.OK and res.head is not None:
            try:
                name: str | None = split_authority((res.head.header("host") or "").strip(), 80)[0]
            except ValueError:
                name = None
            return "http", name, res.head
        if res.status is Status.NO:
            return ("badhttp" if _HTTP_START.match(view) else "tcp"), None, None
        if b"\n" in view and not _HTTP_START.match(view):  # a first line that is no request line: not HTTP
            return "tcp", None, None
        return None


async def _first_to_speak(a: socket.socket, b: socket.socket) -> socket.socket:
    """Whichever of two sockets is readable first (data or EOF), nothing read."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[socket.socket] = loop.create_future()

    def ready(s: socket.socket) -> None:
        if not first.done():
            first.set_result(s)

    for s in (a, b):
        loop.add_reader(s.fileno(), ready, s)
    try:
        return await first
    finally:
        for s in (a, b):
            loop.remove_reader(s.fileno())


class _HttpHooks:
    """The proxy front's answers to the plain-HTTP fast path (:mod:`httpfast`): one per client connection;
    ``dst`` is where a transparent connection was dialled (None: explicit)."""

    def __init__(self, server: ProxyServer, dst: tuple[str, int] | None) -> None:
        self.server = server
        self.dst = dst

    def decide(self, r: httpfast.Route, method: str) -> tuple[httpfast.Kind, Decision | None]:
        sv, policy = self.server, self.server.policy
        path = r.target.decode("ascii", "replace")
        verdict, _ = policy.l4(r.host, r.port)
        if verdict is L4Verdict.DENY:
            return "deny", policy.decide_request(r.host, r.port, method, path)
        if verdict is L4Verdict.INSPECT and sv.mitm_mode is MitmMode.NEVER:
            return "deny", policy.decide_connection(r.host, r.port)
        if not sv._http_fast(verdict):
            return "inspect", None
        return "pass", policy.decide_request(r.host, r.port, method, path)

    async def connect(self, conn: socket.socket, d: Decision, what: str) -> socket.socket | None:
        return await self.server._connect(conn, d, what, event="request", scheme="http")

    async def deny(self, conn: socket.socket, d: Decision, what: str) -> None:
        await self.server._deny_http(conn, d, what, event="request", scheme="http")

    async def handoff(self, conn: socket.socket, raw: bytes, r: httpfast.Route) -> None:
        if self.dst is None or r.absolute:
            await self.server.mitm.handoff(conn, raw, transparent=False, pin=None, dst=None)
        else:
            await self.server.mitm.handoff(conn, raw, transparent=True, pin=Pin(r.host, r.port), dst=self.dst)

    def done(self, d: Decision, *, up: int, down: int, ms: float, failed: str | None = None) -> None:
        reason = d.reason if failed is None else f"{d.reason}; {failed}"
        self.server.audit.decision(
            d, event="request", scheme="http", bytes_up=up, bytes_down=down, duration_ms=ms, reason=reason
        )
