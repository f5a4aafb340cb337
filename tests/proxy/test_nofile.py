"""Many concurrent connections through `boundary proxy`: more than the soft RLIMIT_NOFILE it was started with
(boundary raises its own soft limit to the hard one), and recovery once even the hard limit is used up
(connections the proxy has no descriptor for fail promptly instead of hanging; once the held ones are closed,
new ones work at once). Loopback only."""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import ProxyProc, boundary_proxy, wait_for

LOW_SOFT = 256  # the soft limit the "user" starts boundary with
MANY = 600  # tunnels held open at once: each costs the proxy two descriptors
ANSWER_TIMEOUT = 30.0  # bound on waiting for every tunnel's outcome
BANNER = b"hello from echo\n"
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n" + BANNER


@contextlib.contextmanager
def soft_nofile(soft: int) -> Iterator[None]:
    """Our soft RLIMIT_NOFILE set to ``soft`` meanwhile (children started now inherit it)."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture(scope="module", autouse=True)
def _room() -> Iterator[None]:
    """This process holds both ends of every tunnel (client and echo server): raise our own soft limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 3 * MANY:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} leaves no room for {MANY} tunnels")
    with soft_nofile(hard):
        yield


class Echo:
    """TCP on 127.0.0.1 that says BANNER, then echoes; a backlog for every tunnel at once (a full accept queue
    would delay connections by SYN-ACK retransmits, seconds), one thread for all connections."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=4 * MANY)
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    if s is self._stop_r:
                        for k in list(sel.get_map().values()):
                            if k.fileobj not in (self._sock, self._stop_r):
                                k.fileobj.close()  # type: ignore[union-attr]
                        return
                    if s is self._sock:
                        with contextlib.suppress(BlockingIOError):
                            conn, _ = s.accept()
                            conn.sendall(BANNER)
                            conn.setblocking(False)
                            sel.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        data = s.recv(4096)
                        s.sendall(data)  # a few bytes: the send buffer takes them
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(s)
                        s.close()

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(10)
        for s in (self._sock, self._stop_r, self._stop_w):
            s.close()


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def proxy_args(echo: Echo) -> tuple[str, ...]:
    return ("--allow", f"domain=echo.test port={echo.port}", "--allow-private", "--host-map", "echo.test=127.0.0.1")


@dataclass
class Tunnels:
    established: list[socket.socket] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # refused, reset, closed or answered otherwise
    unanswered: list[socket.socket] = field(default_factory=list)
    seconds: float = 0.0

    def close(self) -> None:
        for s in (*self.established, *self.unanswered):
            s.close()


def open_tunnels(proxy: ProxyProc, echo: Echo, n: int, timeout: float = ANSWER_TIMEOUT) -> Tunnels:
    """``n`` CONNECT tunnels to the echo server, all requested before any answer is read, and all kept open;
    waits (at most ``timeout``) until each one is established or has failed."""
    out = Tunnels()
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    request = f"CONNECT echo.test:{echo.port} HTTP/1.1\r\nHost: echo.test:{echo.port}\r\n\r\n".encode()
    for _ in range(n):
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", proxy.port))
            s.sendall(request)
        except OSError as e:
            s.close()
            out.failed.append(f"connect: {e}")
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
    deadline = t0 + timeout
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            s, buf = key.fileobj, key.data
            assert isinstance(s, socket.socket)
            try:
                chunk = s.recv(4096)
            except OSError as e:
                chunk, why = b"", str(e)
            else:
                why = f"closed after {bytes(buf)!r}"
            buf += chunk
            if bytes(buf) == ESTABLISHED:
                sel.unregister(s)
                out.established.append(s)
            elif not chunk or not ESTABLISHED.startswith(bytes(buf)):
                sel.unregister(s)
                s.close()
                out.failed.append(why if not chunk else f"answered {bytes(buf)[:120]!r}")
    out.unanswered = [key.fileobj for key in sel.get_map().values()]  # type: ignore[misc]
    sel.close()
    out.seconds = time.monotonic() - t0
    return out


def nofile(pid: int) -> tuple[int, int]:
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_more_tunnels_than_the_soft_limit_it_started_with(tmp_path: Path, echo: Echo) -> None:
    with contextlib.ExitStack() as stack:
        with soft_nofile(LOW_SOFT):
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == LOW_SOFT
            p = stack.enter_context(boundary_proxy(tmp_path, *proxy_args(echo)))
        assert MANY > LOW_SOFT
        t = open_tunnels(p, echo, MANY)
        stack.callback(t.close)
        print(f"{len(t.established)}/{MANY} tunnels in {t.seconds:.2f}s, proxy limits {nofile(p.proc.pid)}")
        assert len(t.established) == MANY, (t.failed[:5], len(t.failed), len(t.unanswered))
        assert open_fds(p.proc.pid) > 2 * MANY  # all of them at once, really
        for s in t.established[:: MANY // 10]:  # the tunnels carry data
            s.settimeout(10)
            s.sendall(b"ping\n")
            assert s.recv(64) == b"ping\n"


def test_recovers_once_the_hard_limit_was_exhausted(tmp_path: Path, echo: Echo) -> None:
    with boundary_proxy(tmp_path, *proxy_args(echo)) as p:
        pid = p.proc.pid
        room = 60  # descriptors left: about 30 tunnels
        base = open_fds(pid)
        limit = base + room
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))  # soft and hard: no raising past it
        t = open_tunnels(p, echo, 4 * room, timeout=10)
        try:
            print(
                f"limit {limit}: {len(t.established)} established, {len(t.failed)} failed, "
                f"{len(t.unanswered)} unanswered, in {t.seconds:.2f}s"
            )
            assert 0 < len(t.established) < 4 * room  # the limit was reached, and served up to it
            assert not t.unanswered, "connections hung in the backlog instead of failing"
        finally:
            t.close()
        # the held tunnels are closed: once the proxy has let go of them, new ones are served at once
        t0 = time.monotonic()
        wait_for(lambda: open_fds(pid) <= base + 2, timeout=10)
        released = time.monotonic() - t0
        again = open_tunnels(p, echo, room // 3, timeout=10)
        again.close()
        print(f"released in {released:.2f}s, then {len(again.established)}/{room // 3} in {again.seconds:.2f}s")
        assert len(again.established) == room // 3, (again.failed[:5], len(again.unanswered))
        assert "Traceback" not in p.stderr.read_text()
