"""The L4 byte relay, both ways it moves bytes (splice through kernel pipes, and asyncio transports where no pipe
can be had), on real loopback TCP connections in process: bytes intact and counted both ways, bytes read ahead
sent first, half-close passed on, a reset side ends the relay and resets the other, cancelling closes both
sockets."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

import pytest

from proxy import fastpath
from proxy.fastpath import RelayStats, relay

WAIT = 30.0  # a bound, never a pause: every wait below ends as soon as its event happens
MODES = pytest.mark.parametrize("splice", [True, False], ids=["splice", "transports"])


def tcp_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(our end, the relay's end) of one loopback TCP connection."""
    ours = socket.create_connection(listener.getsockname())
    theirs, _ = listener.accept()
    ours.setblocking(False)
    return ours, theirs


async def recv_until_eof(s: socket.socket) -> bytes:
    loop, out = asyncio.get_running_loop(), bytearray()
    while data := await loop.sock_recv(s, 1 << 16):
        out += data
    return bytes(out)


async def recv_exactly(s: socket.socket, n: int) -> bytes:
    loop, out = asyncio.get_running_loop(), bytearray()
    while len(out) < n:
        data = await loop.sock_recv(s, n - len(out))
        assert data, f"EOF after {len(out)} of {n} bytes"
        out += data
    return bytes(out)


Scenario = Callable[[socket.socket, socket.socket, "asyncio.Task[RelayStats]"], Awaitable[None]]


def run(splice: bool, scenario: Scenario, first_up: bytes = b"", first_down: bytes = b"") -> RelayStats:
    """Relay between a 'client' and an 'upstream' connection and play ``scenario`` on our ends of them."""

    async def main() -> RelayStats:
        with socket.create_server(("127.0.0.1", 0)) as lst:
            client, client_relay_end = tcp_pair(lst)
            upstream, upstream_relay_end = tcp_pair(lst)
            task = asyncio.create_task(
                relay(client_relay_end, upstream_relay_end, first_up=first_up, first_down=first_down, splice=splice)
            )
            try:
                async with asyncio.timeout(WAIT):
                    await scenario(client, upstream, task)
                    return await task
            finally:
                client.close()
                upstream.close()

    return asyncio.run(main())


@MODES
def test_bytes_pass_both_ways_intact_and_counted(splice: bool) -> None:
    up_data, down_data = os.urandom(3 << 20), os.urandom(5 << 20)

    async def scenario(client: socket.socket, upstream: socket.socket, task: asyncio.Task[RelayStats]) -> None:
        loop = asyncio.get_running_loop()

        async def send_then_eof(s: socket.socket, data: bytes) -> None:
            await loop.sock_sendall(s, data)
            s.shutdown(socket.SHUT_WR)

        got_up, got_down, _, _ = await asyncio.gather(
            recv_until_eof(upstream), recv_until_eof(client),
            send_then_eof(client, up_data), send_then_eof(upstream, down_data),
        )  # fmt: skip
        assert got_up == b"hello up" + up_data
        assert got_down == b"hello down" + down_data

    stats = run(splice, scenario, first_up=b"hello up", first_down=b"hello down")
    assert (stats.bytes_up, stats.bytes_down) == (len(up_data) + 8, len(down_data) + 10)


@MODES
def test_half_close_is_passed_on_and_the_answer_still_comes_back(splice: bool) -> None:
    async def scenario(client: socket.socket, upstream: socket.socket, task: asyncio.Task[RelayStats]) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"request")
        client.shutdown(socket.SHUT_WR)
        assert await recv_until_eof(upstream) == b"request"  # the client's EOF reached the upstream
        assert not task.done()  # the other direction is still open
        await loop.sock_sendall(upstream, b"answer after the client's EOF")
        upstream.close()
        assert await recv_until_eof(client) == b"answer after the client's EOF"

    run(splice, scenario)


@MODES
def test_a_side_that_is_reset_ends_the_relay_and_resets_the_other(splice: bool) -> None:
    async def scenario(client: socket.socket, upstream: socket.socket, task: asyncio.Task[RelayStats]) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(upstream, b"x" * 1000)
        assert await recv_exactly(client, 1000) == b"x" * 1000
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # a reset, not a FIN
        await task
        with pytest.raises(ConnectionResetError):  # reset in turn: a cut transfer must not look complete
            await recv_until_eof(upstream)

    run(splice, scenario)


@MODES
def test_cancelling_closes_both_sides_and_keeps_the_count(splice: bool) -> None:
    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as lst:
            client, client_relay_end = tcp_pair(lst)
            upstream, upstream_relay_end = tcp_pair(lst)
            stats = RelayStats()
            task = asyncio.create_task(relay(client_relay_end, upstream_relay_end, stats=stats, splice=splice))
            async with asyncio.timeout(WAIT):
                await asyncio.get_running_loop().sock_sendall(client, b"z" * 5000)
                assert await recv_exactly(upstream, 5000) == b"z" * 5000
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await recv_until_eof(upstream) == b""
                assert await recv_until_eof(client) == b""
            assert stats.bytes_up == 5000
            assert client_relay_end.fileno() == -1
            assert upstream_relay_end.fileno() == -1
            client.close()
            upstream.close()

    asyncio.run(main())


def test_no_pipe_to_be_had_falls_back_to_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file table full (EMFILE from pipe2): the relay still works, without splice."""
    spliced: list[int] = []
    real_splice = os.splice

    def no_pipe(flags: int) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    def counting_splice(*a: int, **k: int) -> int:
        spliced.append(1)
        return real_splice(*a, **k)

    monkeypatch.setattr(fastpath.os, "pipe2", no_pipe)
    monkeypatch.setattr(fastpath.os, "splice", counting_splice)

    async def scenario(client: socket.socket, upstream: socket.socket, task: asyncio.Task[RelayStats]) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"ping")
        client.shutdown(socket.SHUT_WR)
        assert await recv_until_eof(upstream) == b"ping"
        upstream.close()
        assert await recv_until_eof(client) == b""

    assert run(True, scenario).bytes_up == 4
    assert not spliced
