"""mitmproxy glue for flows that need L7: per-request method/path decisions,
streaming, upstream pinning. The policy, resolver and audit sink are handed in;
this addon only converts between mitmproxy's objects and theirs.

Decisions are recorded on ``flow.metadata["boundary"]``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, http, tcp, websocket
from mitmproxy.proxy import server_hooks

from .audit import AuditSink
from .denial import Pin, denial_body
from .rules import Decision, L4Verdict, Policy, normalize_host
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


class Enforcer:
    """The one mitmproxy addon: enforce, stream, pin, audit."""

    def __init__(
        self,
        policy: Policy,
        upstream: Upstream,
        audit: AuditSink,
        pins: dict[str, Pin],
        on_running: Callable[[], None],
    ) -> None:
        self.policy = policy
        self.upstream = upstream
        self.audit = audit
        self.pins = pins
        self._on_running = on_running

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
        pin = self.pins.get(data.client.id)
        host, port = (pin.host, pin.port) if pin else (str(data.server.address[0]), int(data.server.address[1]))
        try:
            host = normalize_host(host)
        except ValueError as e:
            data.server.error = f"boundary: bad upstream host: {e}"
            return
        if self.policy.l4(host, port)[0] is L4Verdict.DENY:
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
        if data.server.sni is None and not _is_ip(host):
            data.server.sni = host

    def client_disconnected(self, client: connection.Client) -> None:
        self.pins.pop(client.id, None)

    # -- request level -------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        pin = self.pins.get(flow.client_conn.id)
        req = flow.request
        named = _host_header_name(req.host_header)
        if pin is not None:
            host, port = pin.host, pin.port
        else:
            try:
                host = normalize_host(req.host)
            except ValueError:
                flow.response = http.Response.make(400, "boundary: bad request host\n")
                return
            port = req.port
        scheme = "wss" if _is_ws(req) and req.scheme == "https" else req.scheme
        if pin is not None and named and named != host:
            d = Decision(False, named, port, None, f"Host {named!r} differs from the connection's name {host!r}",
                         req.method, req.path)  # fmt: skip
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
        up = _Counter()
        flow.metadata["boundary_up"] = up
        req.stream = up

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("boundary_done"):
            return
        down = _Counter()
        flow.metadata["boundary_down"] = down
        assert flow.response is not None
        flow.response.stream = down

    def response(self, flow: http.HTTPFlow) -> None:
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
        if ws is not None and len(ws.messages) > 1:
            del ws.messages[:-1]

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        if len(flow.messages) > 1:
            del flow.messages[:-1]


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
