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
import socket
from dataclasses import dataclass, field
from typing import Protocol

from ..sockets import DenyLog


@dataclass
class Listeners:
    """Sockets the proxy serves: explicit (CONNECT), transparent (redirected), DNS (UDP)."""

    explicit: list[socket.socket] = field(default_factory=list)
    transparent: list[socket.socket] = field(default_factory=list)
    dns: list[socket.socket] = field(default_factory=list)

    @classmethod
    def loopback(cls, port: int) -> Listeners:
        """Explicit-proxy listeners on 127.0.0.1 and ::1 (``port`` 0: random). Raises BoundaryError."""
        from proxy.server import bind_explicit

        from ..errors import BoundaryError

        try:
            return cls(explicit=bind_explicit(port))
        except OSError as e:
            raise BoundaryError("bind the proxy port", e.strerror or str(e), hint="choose another --proxy-port") from e

    @property
    def port(self) -> int:
        return int(self.explicit[0].getsockname()[1])

    def close(self) -> None:
        for s in (*self.explicit, *self.transparent, *self.dns):
            with contextlib.suppress(OSError):
                s.close()


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
