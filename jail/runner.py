"""The one place that builds the policy, the audit sink and the proxy from a
Config, and runs either a jail mode or the proxy alone.

Side effects: opens the audit log, binds loopback listeners, installs signal
handlers while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from proxy.audit import AuditSink
from proxy.mitm import MitmSettings
from proxy.server import ProxyServer, bind_explicit
from proxy.upstream import Upstream

from .config import Config
from .errors import BoundaryError


def build_proxy(config: Config, *, mode: str, stderr: TextIO | None = None, quiet: bool = False) -> ProxyServer:
    audit = AuditSink(config.audit_log, run_id=config.run_id, mode=mode, stderr=stderr, quiet=quiet)
    upstream = Upstream(host_map=dict(config.host_map), allow_private=config.allow_private, proxy=config.upstream_proxy)
    return ProxyServer(
        config.policy(),
        upstream,
        audit,
        mitm=config.mitm,
        mitm_settings=MitmSettings(confdir=config.state_dir / "ca", upstream_ca=config.upstream_ca),
    )


def run_command(config: Config, command: Sequence[str]) -> int:
    """Run COMMAND in a jail. No jail mode is built yet: refuse rather than run unconfined."""
    raise BoundaryError(
        "run the command in a jail",
        "no jail mode is available in this build",
        hint="nsjail and landjail modes are not implemented yet; boundary never runs a command unconfined",
    )


def serve_proxy(config: Config, *, quiet: bool = False) -> int:
    """``boundary proxy``: the filtering proxy alone on loopback until SIGINT/SIGTERM."""
    try:
        socks = bind_explicit(config.proxy_port)
    except OSError as e:
        raise BoundaryError("bind the proxy port", e.strerror or str(e), hint="choose another --proxy-port") from e
    port = socks[0].getsockname()[1]

    async def main() -> None:
        server = build_proxy(config, mode="proxy", quiet=quiet)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start(explicit=socks)
            print(f"boundary proxy listening on http://127.0.0.1:{port}", flush=True)
            await stop.wait()
        finally:
            await server.aclose()
            server.audit.close()
            summary = server.audit.summary()
            if summary:
                print(summary, file=sys.stderr)
            for s in socks:
                with contextlib.suppress(OSError):
                    s.close()

    asyncio.run(main())
    return 0
