"""Lazily started, in-process mitmproxy for flows that need L7.

mitmproxy is imported only when the first such flow arrives (~0.4 s), never
listens on a port of its own, and receives connections that the front server
already accepted and partly read (the bytes read are replayed in front).
Its ``errorcheck`` addon is not loaded, so it cannot exit the process; a
failure to start is raised to the caller; a later crash is logged, the
connections it carried close, and the next flow that needs L7 starts it anew.

Side effects: creates the CA in ``confdir`` (0700 dir, key 0600), writes the
upstream trust bundle there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audit import AuditSink
from .denial import Pin
from .rules import Policy
from .secretswap import SecretSet
from .upstream import Upstream

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0


class MitmError(Exception):
    pass


# what starting mitmproxy imports (~0.4 s): done ahead by preload() when interception is likely
MITM_MODULES = (
    "mitmproxy.options", "mitmproxy.addons.core", "mitmproxy.addons.next_layer", "mitmproxy.addons.proxyserver",
    "mitmproxy.addons.tlsconfig", "mitmproxy.master", "mitmproxy.proxy.mode_servers", "proxy.addon",
)  # fmt: skip


def import_lean() -> None:
    """Import what boundary starts mitmproxy with, and no more: the ``mitmproxy.addons`` package's own
    ``__init__`` imports every default addon (flow filters, QUIC, proxy auth, playback: ~150 ms), none of which
    boundary loads, so the package is put in place without running it and only the addons used are imported."""
    with _LEAN_LOCK:
        if "mitmproxy.addons" not in sys.modules:
            spec = importlib.util.find_spec("mitmproxy.addons")
            if spec is not None and spec.submodule_search_locations is not None:
                sys.modules["mitmproxy.addons"] = importlib.util.module_from_spec(spec)
        for name in MITM_MODULES:
            importlib.import_module(name)


_LEAN_LOCK = threading.Lock()


def preload() -> threading.Thread:
    """Import mitmproxy in a thread, while the jail starts. Only once nothing forks any more: a child forked
    while a thread holds an import lock could wait on it for ever."""

    def run() -> None:
        try:
            import_lean()
        except Exception as e:  # the same import fails again, loudly, where mitmproxy is started
            log.debug("preloading mitmproxy failed: %r", e)

    t = threading.Thread(target=run, name="boundary-mitm-import", daemon=True)
    t.start()
    return t


def system_cafile() -> str:
    """The system trust store (never certifi: TLS-inspecting middleboxes live there)."""
    paths = ssl.get_default_verify_paths()
    for cand in (
        paths.cafile,
        paths.openssl_cafile,
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ):
        if cand and os.path.exists(cand):
            return cand
    raise MitmError("failed to find the system CA bundle (hint: install ca-certificates)")


@dataclass(frozen=True, slots=True)
class MitmSettings:
    confdir: Path
    upstream_ca: Path | None = None


class MitmEngine:
    def __init__(
        self, settings: MitmSettings, policy: Policy, upstream: Upstream, audit: AuditSink, secrets: SecretSet
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.upstream = upstream
        self.audit = audit
        self.secrets = secrets
        self.pins: dict[str, Pin] = {}
        self._handlers: dict[str, Any] = {}  # client connection id -> its mitmproxy connection handler
        self._ready = asyncio.Event()
        self._start_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._master: Any = None
        self._instances: dict[str, Any] = {}
        self._early: asyncio.Task[None] | None = None

    def _trust_bundle(self) -> str:
        sys_ca = system_cafile()
        if self.settings.upstream_ca is None:
            return sys_ca
        merged = self.settings.confdir / "upstream-trust.pem"
        data = Path(sys_ca).read_bytes() + b"\n" + self.settings.upstream_ca.read_bytes()
        merged.write_bytes(data)
        return str(merged)

    def start_early(self, preloading: threading.Thread | None) -> None:
        """Start mitmproxy now, in the background, so the first flow that needs it does not wait for it; a
        failure here is only logged (that flow will try again and fail loudly)."""

        async def start() -> None:
            if preloading is not None:
                await asyncio.to_thread(preloading.join)  # the loop keeps serving meanwhile
            try:
                await self.ensure_started()
            except MitmError as e:
                log.debug("early start of mitmproxy failed: %s", e)

        self._early = asyncio.create_task(start(), name="mitmproxy-early-start")

    async def ensure_started(self) -> None:
        if self._ready.is_set():
            return
        async with self._start_lock:
            if self._ready.is_set():
                return
            try:
                await self._start()
            except MitmError:
                raise
            except Exception as e:
                raise MitmError(f"failed to start mitmproxy: {e!r}") from e

    async def _start(self) -> None:
        import_lean()
        from mitmproxy import options
        from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
        from mitmproxy.master import Master

        from .addon import Enforcer

        confdir = self.settings.confdir
        try:
            confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(confdir, 0o700)
            bundle = self._trust_bundle()
        except OSError as e:
            raise MitmError(f"failed to prepare the CA directory {confdir}: {e.strerror}") from e
        logging.getLogger("mitmproxy").setLevel(logging.WARNING)
        opts = options.Options(mode=[], confdir=str(confdir))
        master = Master(opts, asyncio.get_running_loop(), with_termlog=False)
        ps = proxyserver.Proxyserver()
        master.addons.add(
            core.Core(),
            ps,
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            Enforcer(
                self.policy, self.upstream, self.audit, self.pins, self._ready.set, self.secrets, self._abort, self._cut
            ),
        )
        opts.update(
            connection_strategy="lazy",
            ssl_verify_upstream_trusted_ca=bundle,
            http2=True,
            stream_large_bodies="64k",
        )
        from mitmproxy.proxy.mode_servers import ServerInstance

        self._instances = {m: ServerInstance.make(m, ps) for m in ("regular", "transparent")}
        self._master = master
        self._task = asyncio.create_task(master.run(), name="mitmproxy")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({self._task, ready}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            exc = self._task.exception() if self._task.done() else None
            raise MitmError(f"failed to start mitmproxy: {exc or 'timed out'}")
        self._task.add_done_callback(self._on_master_exit)
        for key in ("mitmproxy-ca.pem", "mitmproxy-ca.p12"):
            with contextlib.suppress(OSError):
                os.chmod(confdir / key, 0o600)

    def _on_master_exit(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None or not getattr(self._master, "_boundary_closing", False):
            log.error("mitmproxy stopped unexpectedly (%r); inspected connections now fail closed", exc)
            self._ready.clear()

    async def handoff(
        self, sock: socket.socket, prefix: bytes, *, transparent: bool, pin: Pin | None, dst: tuple[str, int] | None
    ) -> None:
        """Serve one accepted connection with mitmproxy; ``prefix`` was already read from it."""
        try:
            await self.ensure_started()
        except MitmError:
            sock.close()
            raise
        if not self._ready.is_set():
            sock.close()
            return
        from mitmproxy.proxy.mode_servers import ProxyConnectionHandler

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**16)
        if prefix:
            reader.feed_data(prefix)
        transport, protocol = await loop.connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), sock=sock
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        inst = self._instances["transparent" if transparent else "regular"]
        handler = ProxyConnectionHandler(self._master, reader, writer, self._master.options, inst.mode)
        handler.layer = inst.make_top_layer(handler.layer.context)
        ctx = handler.layer.context
        if transparent:
            assert pin is not None
            assert dst is not None
            ctx.client.sockname = dst
            ctx.server.address = (pin.host, pin.port)
        if pin is not None:
            self.pins[ctx.client.id] = pin
        self._handlers[ctx.client.id] = handler
        try:
            with inst.manager.register_connection(ctx.client.id, handler):
                await handler.handle_client()
        finally:
            self.pins.pop(ctx.client.id, None)
            self._handlers.pop(ctx.client.id, None)

    def _abort(self, flow: Any, *, client_too: bool = False) -> None:
        """Cut a flow's upstream connection at once (``client_too``: and the client's): what is still queued for
        it is dropped, and nothing more is written to it (mitmproxy writes only to a transport that is not
        closing)."""
        handler = self._handlers.get(flow.client_conn.id)
        for conn in (flow.server_conn, flow.client_conn) if client_too else (flow.server_conn,):
            io = handler.transports.get(conn) if handler is not None else None
            writer = getattr(io, "writer", None)
            if writer is not None:
                writer.transport.abort()

    def _cut(self, flow: Any) -> None:
        self._abort(flow, client_too=True)

    async def close(self) -> None:
        if self._early is not None and not self._early.done():
            self._early.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._early
        if self._master is not None and self._task is not None and not self._task.done():
            self._master._boundary_closing = True
            self._master.shutdown()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
