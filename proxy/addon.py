"""mitmproxy glue for flows that need L7: per-request method/path decisions,
streaming, upstream pinning. The policy, resolver and audit sink are handed in;
this addon only converts between mitmproxy's objects and theirs.

Decisions are recorded on ``flow.metadata["boundary"]``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, http, tcp, tls, websocket
from mitmproxy.proxy import server_hooks

from .audit import AuditSink
from .denial import Pin, denial_body
from .rules import Decision, L4Verdict, Policy, normalize_host
from .secretswap import Leak, SecretSet, StreamRewriter
from .sniff import split_authority
from .upstream import Upstream, UpstreamError


class _Counter:
    """Counts a streamed body; mitmproxy calls it once more with b"" at the body's end."""

    __slots__ = ("done", "n")

    def __init__(self) -> None:
        self.n = 0
        self.done = False

    def __call__(self, data: bytes) -> bytes:
        self.n += len(data)
        if not data:
            self.done = True
        return data


class _Rewrite:
    """A body rewriter (secrets) in front of a counter: counts what goes out."""

    __slots__ = ("counter", "rewriter")

    def __init__(self, rewriter: StreamRewriter, counter: _Counter) -> None:
        self.rewriter = rewriter
        self.counter = counter

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        out = self.rewriter(data)
        if out:
            self.counter(out)
        if not data:
            self.counter(b"")
            return out
        # nothing to send yet: no chunk at all (an empty one would end a chunked HTTP/1.1 body)
        return out if out else []


class Enforcer:
    """The one mitmproxy addon: enforce, stream, pin, audit."""

    def __init__(
        self,
        policy: Policy,
        upstream: Upstream,
        audit: AuditSink,
        pins: dict[str, Pin],
        on_running: Callable[[], None],
        secrets: SecretSet | None = None,
        abort: Callable[[http.HTTPFlow], None] | None = None,
        cut: Callable[[tcp.TCPFlow], None] | None = None,
    ) -> None:
        """``abort``: cut a flow's upstream connection at once; ``cut``: both of its connections."""
        self.policy = policy
        self.upstream = upstream
        self.audit = audit
        self.pins = pins
        self._on_running = on_running
        self.secrets = secrets or SecretSet()
        self._abort = abort
        self._cut = cut
        self._refused: set[str] = set()  # client connections whose bytes were no HTTP, on a host decided at L7

    def running(self) -> None:
        self._on_running()

    # -- connection level ----------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        """CONNECT inside regular mode (``--mitm always`` or an L7 rule on this host)."""
        try:
            host = normalize_host(flow.request.host)
        except ValueError as e:
            flow.response = http.Response.make(400, f"boundary: bad CONNECT target: {e}\n")
            return
        port = flow.request.port
        verdict, _ = self.policy.l4(host, port)
        if verdict is L4Verdict.DENY:
            d = self.policy.decide_connection(host, port)
            self.audit.decision(d, event="connection", scheme="connect")
            flow.response = http.Response.make(
                403, denial_body(d, f"CONNECT {host}:{port}"), {"Content-Type": "text/plain"}
            )
            return
        self.pins[flow.client_conn.id] = Pin(host, port)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Connect only to the pinned/policy name, resolved by us, guarded."""
        assert data.server.address is not None
        host, port = self._target(data.client.id, data.server.address)
        try:
            host = normalize_host(host)
        except ValueError as e:
            data.server.error = f"boundary: bad upstream host: {e}"
            return
        if self.policy.l4(host, port)[0] is L4Verdict.DENY or data.client.id in self._refused:
            data.server.error = f"boundary: {host}:{port} is not allowed"
            return
        if self.upstream.proxy is not None:
            data.server.address = (host, port)
            data.server.via = ("http", (self.upstream.proxy.host, self.upstream.proxy.port))
            return
        try:
            addrs = await self.upstream.resolve(host, port)
        except UpstreamError as e:
            data.server.error = f"boundary: {e.reason}"
            return
        data.server.address = (str(addrs[0]), port)
        # the upstream must prove the name the connection was decided for, whatever name the client sent
        data.server.sni = None if _is_ip(host) else host

    def _target(self, client_id: str, address: tuple[str, int] | None) -> tuple[str, int]:
        """Where a client connection's flows go: its pinned name, else the server address mitmproxy has."""
        pin = self.pins.get(client_id)
        if pin is not None:
            return pin.host, pin.port
        return (str(address[0]), int(address[1])) if address is not None else ("", 0)

    def client_disconnected(self, client: connection.Client) -> None:
        self.pins.pop(client.id, None)
        self._refused.discard(client.id)

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        """Bytes mitmproxy cannot read as HTTP become a TCP relay. On a host decided request by request (a
        method/path rule, a bound secret) such a relay would carry whatever follows them past the rules (a CRLF
        before a request line, which lenient servers skip, was enough): it is decided as an opaque connection,
        which such a host is refused, and cut before anything reaches the upstream."""
        host, port = self._target(flow.client_conn.id, flow.server_conn.address)
        try:
            d = self.policy.decide_connection(normalize_host(host), port)
        except ValueError:
            d = Decision(False, host, port, None, "no host to decide on")
        if d.allowed:
            return
        self._refused.add(flow.client_conn.id)
        flow.metadata["boundary_refused"] = True
        reason = f"its bytes are not HTTP (nothing to decide per request on): {d.reason}"
        self.audit.decision(dataclasses.replace(d, reason=reason), event="connection", scheme="tcp")
        if self._cut is not None:
            self._cut(flow)

    # -- request level -------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        pin = self.pins.get(flow.client_conn.id)
        req = flow.request
        named = _host_header_name(req.host_header)
        elsewhere = None  # pinned: how the request names another host or port than the connection's
        if pin is not None:
            host, port = pin.host, pin.port
            # an absolute-form target names a host and port too, and a server routes by it (RFC 9112 3.2.2): they
            # must be the connection's (the Host header's name is checked below)
            if req.authority and _authority(req.authority, req.scheme) != (host, port):
                elsewhere = f"the URL's authority {req.authority[:100]!r} is not the connection's {host}:{port}"
        else:
            try:
                host = normalize_host(req.host)
            except ValueError:
                flow.response = http.Response.make(400, "boundary: bad request host\n")
                return
            port = req.port
        scheme = "wss" if _is_ws(req) and req.scheme == "https" else req.scheme
        if (bad := _unsendable(req)) is not None:
            d = Decision(False, host, port, None, bad, req.method,
                         req.data.path[:200].decode("latin-1").split("?", 1)[0])  # fmt: skip
            self.audit.decision(d, event="request", scheme=scheme)
            flow.response = http.Response.make(400, f"boundary: {bad}\n")
            flow.metadata["boundary"], flow.metadata["boundary_done"] = d, True
            return
        if elsewhere is not None:
            d = Decision(False, host, port, None, elsewhere, req.method, req.path.split("?", 1)[0])
        elif named and named != host:  # pinned: the connection's name; else the absolute-form URL's
            what = "the connection's name" if pin is not None else "the URL's host"
            d = Decision(False, named, port, None, f"Host {named!r} differs from {what} {host!r}", req.method,
                         req.path.split("?", 1)[0])  # fmt: skip
        else:
            d = self.policy.decide_request(host, port, req.method, req.path)
        flow.metadata["boundary"] = d
        flow.metadata["boundary_t0"] = time.monotonic()
        if not d.allowed:
            self.audit.decision(d, event="request", scheme=scheme)
            flow.response = http.Response.make(
                403,
                denial_body(d, f"{req.method} {scheme}://{host}:{port}{req.path}"),
                {"Content-Type": "text/plain", "X-Boundary-Decision": "deny"},
            )
            flow.metadata["boundary_done"] = True
            return
        if self.secrets and (leak := self._swap_request(flow, host)) is not None:
            self._leaked(flow, leak, answer=f"{req.method} {scheme}://{host}:{port}{d.path or ''}")
            return
        up = _Counter()
        flow.metadata["boundary_up"] = up
        req.stream = up
        if self.secrets:
            rw = self.secrets.request_body(host, lambda leak: self._leaked(flow, leak), tls=req.scheme == "https")
            req.stream = _Rewrite(rw, up)

    def _swap_request(self, flow: http.HTTPFlow, host: str) -> Leak | None:
        """Placeholders of the secrets bound to ``host`` swapped for their values in the headers and the URL;
        or the leak found there (nothing is changed then)."""
        req = flow.request
        tls = req.scheme == "https"
        swapped, leak = self.secrets.request_headers(host, _fields(req.headers), tls=tls)
        if leak is not None:
            return leak
        path, leak = self.secrets.scan_text(host, req.path, "the URL", swap=True, tls=tls)
        if leak is not None:
            return leak
        _set_fields(req.headers, swapped)
        if path != req.path:
            req.path = path
        if self.secrets.bound(host):  # an echo of the value must stay readable to be hidden (no header: any coding)
            req.headers["accept-encoding"] = "identity"
        return None

    def request(self, flow: http.HTTPFlow) -> None:
        """Trailers (sent after this hook): checked like headers; a leak there cuts the upstream connection."""
        trailers = flow.request.trailers
        d = flow.metadata.get("boundary")
        if not self.secrets or not trailers or not isinstance(d, Decision) or flow.metadata.get("boundary_done"):
            return
        swapped, leak = self.secrets.request_headers(d.host, _fields(trailers), tls=flow.request.scheme == "https")
        if leak is not None:
            self._leaked(flow, leak)
        else:
            _set_fields(trailers, swapped)

    def _leaked(self, flow: http.HTTPFlow, leak: Leak, answer: str | None = None) -> None:
        """Deny a request that carries a secret where it must not go. Headers or URL (``answer``): answered 403
        before anything is sent upstream. The body: the part with the secret is never sent, the upstream
        connection is cut (the request stays incomplete there) and the client sees it fail."""
        d = flow.metadata["boundary"]
        denied = Decision(
            False, d.host, d.port, None, leak.reason(), d.method, d.path, secret=leak.secret.name, raw_path=d.raw_path
        )
        flow.metadata["boundary_done"] = True
        self.audit.decision(denied, event="secret_leak", scheme=flow.request.scheme)
        if answer is not None:
            flow.response = http.Response.make(
                403, denial_body(denied, answer), {"Content-Type": "text/plain", "X-Boundary-Decision": "deny"}
            )
        elif self._abort is not None:
            self._abort(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("boundary_done"):
            return
        down = _Counter()
        flow.metadata["boundary_down"] = down
        assert flow.response is not None
        flow.response.stream = down
        d = flow.metadata.get("boundary")
        if isinstance(d, Decision) and self.secrets.bound(d.host):  # an echo of a value: the jail gets a placeholder
            resp = flow.response
            codings = {c.strip().lower() for c in resp.headers.get("content-encoding", "").split(",")}
            codings |= {c.strip().lower() for c in resp.headers.get("transfer-encoding", "").split(",")}
            coding = ", ".join(sorted(codings - {"", "identity", "chunked"}))
            if coding:  # asked for identity; a compressed answer (content or transfer coding) cannot be checked
                why = f"the response is {coding}-encoded although boundary asked for none: it cannot be checked for "
                why += "the values of the secrets bound to this host, so it is not passed on"
                self.audit.decision(dataclasses.replace(d, allowed=False, rule=None, reason=why), event="request",
                                    scheme=flow.request.scheme)  # fmt: skip
                flow.metadata["boundary_done"] = True
                flow.kill()
                return
            _set_fields(resp.headers, [(k, self.secrets.response_text(d.host, v)) for k, v in _fields(resp.headers)])
            resp.stream = _Rewrite(self.secrets.response_body(d.host), down)

    def tls_failed_client(self, data: tls.TlsData) -> None:
        """The client refused boundary's certificate: it ignores the CA variables or pins its certificates."""
        client = data.context.client
        pin = self.pins.get(client.id)
        host = pin.host if pin else (client.sni or "(no name)")
        port = pin.port if pin else (data.context.server.address or ("", 443))[1]
        why = f"the client refused boundary's certificate ({data.conn.error or 'TLS handshake failed'}): it does not "
        why += "trust boundary's CA (it ignores SSL_CERT_FILE and the other CA variables, or pins certificates)"
        bound = [s.name for s in self.secrets.bound(host)] if pin or client.sni else []
        if bound:
            why += f"; {', '.join(bound)} cannot be swapped in for this client"
        self.audit.decision(Decision(False, host, port, None, why), event="connection", scheme="tls")

    def response(self, flow: http.HTTPFlow) -> None:
        trailers = flow.response.trailers if flow.response is not None else None
        d = flow.metadata.get("boundary")
        if trailers and isinstance(d, Decision) and self.secrets.bound(d.host):  # sent after this hook
            _set_fields(trailers, [(k, self.secrets.response_text(d.host, v)) for k, v in _fields(trailers)])
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error else "error")

    def _finish(self, flow: http.HTTPFlow, err: str | None) -> None:
        d = flow.metadata.get("boundary")
        if not isinstance(d, Decision) or flow.metadata.get("boundary_done"):
            return
        flow.metadata["boundary_done"] = True
        up, down = flow.metadata.get("boundary_up"), flow.metadata.get("boundary_down")
        t0 = flow.metadata.get("boundary_t0", time.monotonic())
        reason = f"allowed by rule; upstream error: {err}" if err else None
        if err and isinstance(down, _Counter) and down.done:
            reason = None  # the response ended normally; the client left afterwards
        elif err and "client disconnected" in err.lower():
            reason = "allowed by rule; the client closed the connection before the response ended"
        self.audit.decision(
            d,
            event="request",
            scheme=flow.request.scheme,
            bytes_up=up.n if isinstance(up, _Counter) else 0,
            bytes_down=down.n if isinstance(down, _Counter) else 0,
            duration_ms=(time.monotonic() - t0) * 1000,
            reason=reason,
        )

    # -- long-lived flows: keep memory bounded -------------------------------
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        ws: websocket.WebSocketData | None = flow.websocket
        if ws is None:
            return
        if len(ws.messages) > 1:
            del ws.messages[:-1]
        d = flow.metadata.get("boundary")
        if self.secrets and ws.messages and isinstance(d, Decision):
            msg = ws.messages[-1]
            leaks: list[Leak] = []
            tls = flow.request.scheme == "https"
            rw = (
                self.secrets.request_body(d.host, leaks.append, tls=tls)
                if msg.from_client
                else self.secrets.response_body(d.host)
            )
            out = rw(msg.content) + rw(b"")
            if leaks:
                msg.drop()
                why = leaks[0].reason().replace("the body", "a WebSocket message")
                denied = Decision(
                    False, d.host, d.port, None, why, d.method, d.path, secret=leaks[0].secret.name, raw_path=d.raw_path
                )
                self.audit.decision(denied, event="secret_leak", scheme="wss" if tls else "ws")
            elif out != msg.content:
                msg.content = out

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        if flow.metadata.get("boundary_refused"):  # whatever arrived before the cut took effect: never passed on
            flow.messages[-1].content = b""
            if self._cut is not None:
                self._cut(flow)
            return
        if len(flow.messages) > 1:
            del flow.messages[:-1]


def _fields(headers: http.Headers) -> list[tuple[str, str]]:
    """Header (or trailer) fields as text, in order, repeated names kept."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.fields]


def _set_fields(headers: http.Headers, fields: list[tuple[str, str]]) -> None:
    """Put ``fields`` (from :func:`_fields`) back, when anything changed."""
    if fields != _fields(headers):
        headers.fields = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in fields)


def _plain_target(target: bytes) -> bool:
    """An origin-form path (or ``*``) of printable ASCII: what an HTTP/1.1 request line can carry as one target
    (no control character, space or byte a server might take for white space, like NBSP's)."""
    return (target.startswith(b"/") or target == b"*") and all(0x20 < c < 0x7F for c in target)


def _unsendable(req: http.Request) -> str | None:
    """Why a request cannot go upstream as the HTTP/1.1 it was decided as, or None. HTTP/2 from the client goes
    upstream as HTTP/1.1: a :path with CR/LF, a space or a URL in it would write another request, or another
    target, into the request line; NUL, CR or LF in a header value is no header HTTP/1.1 can carry."""
    if not _plain_target(req.data.path):
        return "the request target is not a plain path"
    if any(b"\0" in v or b"\r" in v or b"\n" in v for _, v in req.headers.fields):
        return "a header value holds NUL, CR or LF"
    return None


def _authority(authority: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of an authority (the scheme's default port where it names none), None when malformed."""
    try:
        host, port = split_authority(authority.strip(), 443 if scheme in ("https", "wss") else 80)
        return normalize_host(host), port
    except ValueError:
        return None


def _host_header_name(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normalize_host(split_authority(value.strip(), 443)[0])
    except ValueError:
        return "(malformed)"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_ws(req: Any) -> bool:
    return str(req.headers.get("upgrade", "")).lower() == "websocket"
