"""The L4 fast path: relay bytes between two connected sockets once the policy has
decided from SNI / Host / CONNECT / the fake-address map alone.

Memory is bounded: each direction holds at most one transport write buffer (the
reading side is paused while the other side's buffer is above its high-water
mark), so a 1 GiB download streams through in constant space. Half-close is
propagated. Side effects: owns and closes both sockets.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

HIGH_WATER = 256 * 1024


@dataclass
class RelayStats:
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client


class _Pipe(asyncio.Protocol):
    """One side of the relay; writes what it reads into its peer's transport."""

    def __init__(self, done: asyncio.Future[None], stats: RelayStats, upstream_side: bool) -> None:
        self.done = done
        self.stats = stats
        self.upstream_side = upstream_side
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        for data in self.pending:  # bytes that arrived for us before we were connected
            transport.write(data)
        self.pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.upstream_side:
            self.stats.bytes_down += len(data)
        else:
            self.stats.bytes_up += len(data)
        assert self.peer is not None
        self.peer.send(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        assert peer is not None
        if peer.transport is not None and not peer.transport.is_closing() and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer.eof:
            self._close_both()
            return False
        return True  # keep our write side open (half-close)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_both()

    def _close_both(self) -> None:
        for p in (self, self.peer):
            if p is not None and p.transport is not None and not p.transport.is_closing():
                p.transport.close()
        if not self.done.done():
            self.done.set_result(None)


async def relay(
    client: socket.socket, upstream: socket.socket, *, first_up: bytes = b"", first_down: bytes = b"",
    stats: RelayStats | None = None,
) -> RelayStats:  # fmt: skip
    """Relay until both sides are closed; ``first_up`` / ``first_down`` are sent upstream / to the client before
    anything else. ``stats`` (counted as the bytes pass) says how far it got even when the relay is cancelled."""
    loop = asyncio.get_running_loop()
    stats = RelayStats() if stats is None else stats
    done_up: asyncio.Future[None] = loop.create_future()
    down = _Pipe(done_up, stats, upstream_side=True)
    up = _Pipe(done_up, stats, upstream_side=False)
    down.peer, up.peer = up, down
    if first_up:
        stats.bytes_up += len(first_up)
        down.send(first_up)
    if first_down:
        stats.bytes_down += len(first_down)
        up.send(first_down)
    try:
        await loop.connect_accepted_socket(lambda: down, sock=upstream)
        await loop.connect_accepted_socket(lambda: up, sock=client)
    except OSError:
        for s in (client, upstream):
            s.close()
        for p in (up, down):
            if p.transport is not None:
                p.transport.close()
        return stats
    try:
        await done_up
    finally:
        for p in (up, down):
            if p.transport is not None and not p.transport.is_closing():
                p.transport.close()
    return stats
