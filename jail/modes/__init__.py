"""The one interface every jail mode implements. The runner builds the policy,
the audit sink and the proxy once, and drives a mode through it:

    listeners = jail.prepare()   # namespaces / rules ready; sockets for the proxy
    jail.spawn()                 # the command starts (its connections queue until the proxy serves)
    status = await jail.wait()   # the command's status, 128+N for signal N
    jail.close()                 # always; kills whatever is left
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Listeners:
    """Sockets the proxy serves: explicit (CONNECT), transparent (redirected), DNS (UDP)."""

    explicit: list[socket.socket] = field(default_factory=list)
    transparent: list[socket.socket] = field(default_factory=list)
    dns: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for s in (*self.explicit, *self.transparent, *self.dns):
            with contextlib.suppress(OSError):
                s.close()


class Jail(Protocol):
    name: str

    def prepare(self) -> Listeners: ...

    def spawn(self) -> None: ...

    async def wait(self) -> int: ...

    def signal(self, sig: int) -> None: ...

    def close(self) -> None: ...
