"""The one interface every jail mode implements. The runner builds the policy,
the audit sink and the proxy once, and drives a mode through it:

    listeners = jail.prepare()   # namespaces / rules ready; sockets for the proxy
    jail.spawn()                 # the command starts (its connections queue until the proxy serves)
    status = await jail.wait()   # the command's status, 128+N for signal N
    jail.close()                 # always; kills whatever is left
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from dataclasses import dataclass, field
from typing import Protocol

from proxy.origins import Origins

from ..sockets import DenyLog


@dataclass
class Listeners:
    """Sockets the proxy serves: explicit (CONNECT), transparent (redirected), DNS (UDP)."""

    explicit: list[socket.socket] = field(default_factory=list)
    transparent: list[socket.socket] = field(default_factory=list)
    dns: list[socket.socket] = field(default_factory=list)
    origins: Origins | None = None  # landjail: where transparent connections meant to go (nsjail: SO_ORIGINAL_DST)

    @classmethod
    def loopback(cls, port: int) -> Listeners:
        """Explicit-proxy listeners on 127.0.0.1 and ::1 (``port`` 0: random). Raises BoundaryError."""
        from proxy.server import bind_explicit

        from ..errors import BoundaryError

        try:
            return cls(explicit=bind_explicit(port))
        except OSError as e:
            raise BoundaryError("bind the proxy port", e.strerror or str(e), hint="choose another --proxy-port") from e

    @classmethod
    def routed(cls, port: int) -> Listeners:
        """landjail: the explicit proxy on ``port``, and a transparent TCP listener and a DNS responder on random
        ports, each on 127.0.0.1 and ::1 (where the host has IPv6). Raises BoundaryError."""
        from proxy.server import bind_explicit

        from ..errors import BoundaryError

        out = cls.loopback(port)
        try:
            out.transparent = bind_explicit(0)
            out.dns = _udp_pair()
        except OSError as e:
            out.close()
            raise BoundaryError("bind the proxy's loopback listeners", e.strerror or str(e)) from e
        out.origins = Origins()
        try:  # the command reaches everything through loopback: it must work here
            socket.create_connection(("127.0.0.1", out.port), timeout=5).close()
        except OSError as e:
            out.close()
            raise BoundaryError(
                "reach the proxy on 127.0.0.1", e.strerror or str(e),
                hint="the loopback interface is down in this network namespace (ip link set lo up), or a firewall "
                "blocks loopback",
            ) from e  # fmt: skip
        return out

    @property
    def port(self) -> int:
        return int(self.explicit[0].getsockname()[1])

    @property
    def ipv6(self) -> bool:
        """Every listener is on ::1 too."""
        groups = [g for g in (self.explicit, self.transparent, self.dns) if g]
        return all(any(s.family == socket.AF_INET6 for s in g) for g in groups)

    def close(self) -> None:
        for s in (*self.explicit, *self.transparent, *self.dns):
            with contextlib.suppress(OSError):
                s.close()


def _udp_pair() -> list[socket.socket]:
    """UDP sockets on 127.0.0.1 and ::1, same random port (retried when ::1 has it taken)."""
    for _ in range(16):
        v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        v4.bind(("127.0.0.1", 0))
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            v6.bind(("::1", v4.getsockname()[1]))
        except OSError as e:
            v6.close()
            if e.errno == errno.EADDRINUSE:
                v4.close()
                continue
            return [v4]  # no IPv6 loopback here
        return [v4, v6]
    raise OSError(errno.EADDRINUSE, "no UDP port free on both 127.0.0.1 and ::1")


class Jail(Protocol):
    name: str
    denials: DenyLog  # refusals of the socket supervisor, until the runner attaches the audit sink

    def prepare(self) -> Listeners: ...

    def spawn(self) -> None: ...

    async def wait(self) -> int: ...

    def signal(self, sig: int) -> None: ...

    def close(self) -> None: ...


async def exited(pidfd: int) -> None:
    """Return once the process behind ``pidfd`` has exited (it is left for the caller to reap)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(pidfd, lambda: None if done.done() else done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
