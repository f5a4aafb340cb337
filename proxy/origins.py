"""Original destinations of connections that landjail's socket supervisor sent to the proxy's
transparent listener: the supervisor connects the command's socket there on its behalf and records
where the command meant to go, keyed by the socket's own address as the proxy will see it (the
peer of the accepted connection). nsjail needs none of this: iptables' SO_ORIGINAL_DST says it.

The supervisor records right after its connect returns, so the proxy may accept first: ``take``
waits (bounded) for the record. The table is bounded: the oldest record goes first (a connection
whose record is gone is closed, never passed).
Side effects: none beyond waking the proxy's event loop from the supervisor's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict

Address = tuple[str, int]
LIMIT = 65536
WAIT = 5.0  # how long an accepted connection waits for its record


def key(host: str, port: int) -> Address:
    """One spelling per address: an IPv4-mapped IPv6 address as plain IPv4."""
    host = host.split("%", 1)[0]
    return (host[7:] if host.startswith("::ffff:") and "." in host else host), port


def _settle(fut: asyncio.Future[Address], destination: Address) -> None:
    if not fut.done():
        fut.set_result(destination)


class Origins:
    def __init__(self, limit: int = LIMIT) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._records: OrderedDict[Address, Address] = OrderedDict()
        self._waiting: dict[Address, tuple[asyncio.AbstractEventLoop, asyncio.Future[Address]]] = {}

    def put(self, client: Address, destination: Address) -> None:
        """From any thread: ``client`` (the command's socket address) was connected for ``destination``."""
        client = key(*client)
        with self._lock:
            waiter = self._waiting.pop(client, None)
            if waiter is None:
                self._records[client] = destination
                self._records.move_to_end(client)
                while len(self._records) > self._limit:
                    self._records.popitem(last=False)
                return
        loop, fut = waiter
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, fut, destination)

    async def take(self, client: Address, timeout: float = WAIT) -> Address | None:
        """The destination recorded for ``client`` (removed from the table); None when none comes in time."""
        client = key(*client)
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._records.pop(client, None)
            if found is not None:
                return found
            fut: asyncio.Future[Address] = loop.create_future()
            self._waiting[client] = (loop, fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return None
        finally:
            with self._lock:
                if self._waiting.get(client, (None, None))[1] is fut:
                    del self._waiting[client]

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
