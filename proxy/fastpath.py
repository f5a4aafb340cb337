"""The L4 fast path: relay bytes between two connected sockets once the policy has
decided from SNI / Host / CONNECT / the fake-address map alone.

The bytes move with ``splice(2)`` through one kernel pipe per direction: they are
never copied into Python. Where no pipe can be had (the file table is full) the
relay falls back to asyncio transports.

Memory is bounded: each direction holds at most one pipe's worth (64 KiB) or, on
the fallback, one transport write buffer (the reading side is paused while the
other side's buffer is above its high-water mark), so a 1 GiB download streams
through in constant space. Half-close is propagated. Side effects: owns and
closes both sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

HIGH_WATER = 256 * 1024
SPLICE_MAX = 1 << 20  # asked per splice(2) call; the pipe takes what fits
FAIR_TURNS = 64  # splices in a row without waiting (<= 4 MiB) before a relay yields the event loop
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_LINGER_RESET = struct.pack("ii", 1, 0)


def reset_on_close(sock: socket.socket | None) -> None:
    """Make closing ``sock`` send a reset, not an end of stream (a peer must not take a cut transfer for a whole
    one); a socket already gone is left alone."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


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
        self._close_both(reset=exc is not None)

    def _close_both(self, *, reset: bool = False) -> None:
        """``reset``: a side failed (a reset, not an end): the other is reset too, so a cut transfer never looks
        complete to it."""
        for p in (self, self.peer):
            if p is not None and p.transport is not None and not p.transport.is_closing():
                if reset:
                    reset_on_close(p.transport.get_extra_info("socket"))
                    p.transport.abort()
                else:
                    p.transport.close()
        if not self.done.done():
            self.done.set_result(None)


async def relay(
    client: socket.socket, upstream: socket.socket, *, first_up: bytes = b"", first_down: bytes = b"",
    stats: RelayStats | None = None, splice: bool = True,
) -> RelayStats:  # fmt: skip
    """Relay until both sides are closed; ``first_up`` / ``first_down`` are sent upstream / to the client before
    anything else. ``stats`` (counted as the bytes pass) says how far it got even when the relay is cancelled.
    ``splice=False`` forces the transport relay (tests run both)."""
    stats = RelayStats() if stats is None else stats
    pipes: list[tuple[int, int]] = []
    if splice and hasattr(os, "splice"):
        try:
            pipes = [os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC) for _ in range(2)]
        except OSError:  # EMFILE / ENFILE: the copying relay needs no pipe
            for r, w in pipes:
                os.close(r)
                os.close(w)
            pipes = []
    if pipes:
        return await _splice_relay(client, upstream, first_up, first_down, stats, pipes)
    return await _transport_relay(client, upstream, first_up, first_down, stats)


async def _splice_relay(
    client: socket.socket, upstream: socket.socket, first_up: bytes, first_down: bytes, stats: RelayStats,
    pipes: list[tuple[int, int]],
) -> RelayStats:  # fmt: skip
    loop = asyncio.get_running_loop()

    def count_up(n: int) -> None:
        stats.bytes_up += n

    def count_down(n: int) -> None:
        stats.bytes_down += n

    tasks = [
        loop.create_task(_splice_one(loop, client, upstream, first_up, count_up, pipes[0])),
        loop.create_task(_splice_one(loop, upstream, client, first_down, count_down, pipes[1])),
    ]
    failed = False
    try:
        for fut in asyncio.as_completed(tasks):
            try:
                await fut
            except OSError:
                failed = True  # one side failed (reset): so does the relay, and the other side is reset too,
                break  # so that a cut transfer never looks complete to it
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in (client, upstream):
            if failed:
                reset_on_close(s)
            s.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)
    return stats


async def _splice_one(
    loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket, first: bytes,
    count: Callable[[int], None], pipe: tuple[int, int],
) -> None:  # fmt: skip
    """One direction: ``first`` to ``dst``, then ``src`` -> pipe -> ``dst`` until ``src`` ends, then half-close
    ``dst``. Waits on ``src`` only when the pipe is empty (so EAGAIN there means no data, not a full pipe)."""
    src.setblocking(False)
    dst.setblocking(False)
    if first:
        count(len(first))
        await loop.sock_sendall(dst, first)
    r, w = pipe
    sfd, dfd = src.fileno(), dst.fileno()
    held, eof, busy = 0, False, 0
    while True:
        busy += 1
        if busy >= FAIR_TURNS:  # both peers kept up the whole time: let the other connections have the loop
            busy = 0
            await asyncio.sleep(0)
        got = None
        if not eof:
            with contextlib.suppress(BlockingIOError):  # nothing to read, or the pipe is full
                got = os.splice(sfd, w, SPLICE_MAX, flags=_SPLICE_FLAGS)
            if got == 0:
                eof = True
            elif got:
                held += got
                count(got)
        if held:
            try:
                held -= os.splice(r, dfd, held, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                busy = 0
                await _ready(loop, dfd, loop.add_writer, loop.remove_writer)
        elif eof:
            break
        elif got is None:
            busy = 0
            await _ready(loop, sfd, loop.add_reader, loop.remove_reader)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


async def _ready(
    loop: asyncio.AbstractEventLoop, fd: int, add: Callable[..., None], remove: Callable[[int], object]
) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    add(fd, wake)
    try:
        await fut
    finally:
        remove(fd)


async def _transport_relay(
    client: socket.socket, upstream: socket.socket, first_up: bytes, first_down: bytes, stats: RelayStats
) -> RelayStats:
    loop = asyncio.get_running_loop()
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
