"""The transparent listener (what nsjail passes up), driven in-process on loopback.

Without a NAT redirect there is no SO_ORIGINAL_DST; the listener's own address is
the fallback, so it listens on 127.0.0.2 at the upstream's port number.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.audit import AuditSink
from proxy.mitm import MitmSettings
from proxy.rules import Policy
from proxy.server import ProxyServer
from proxy.upstream import Upstream as Resolver
from tests.support import CA, Upstream, server_tls, wait_for


@pytest.fixture(scope="module")
def tls(ca: CA) -> Iterator[Upstream]:
    u = Upstream(tls=server_tls(ca)).start()
    yield u
    u.stop()


class Running:
    def __init__(self, server: ProxyServer, loop: asyncio.AbstractEventLoop, audit: AuditSink) -> None:
        self.server, self.loop, self.audit = server, loop, audit


@pytest.fixture
def transparent(tmp_path: Path, tls: Upstream) -> Iterator[Running]:
    listener = socket.create_server(("127.0.0.2", tls.port))
    audit = AuditSink(tmp_path / "audit.jsonl", run_id="t", mode="nsjail", quiet=True)
    policy = Policy.from_strings(["domain=secure.test"])
    resolver = Resolver(host_map={"secure.test": "127.0.0.1"}, allow_private=True)
    server = ProxyServer(policy, resolver, audit, mitm_settings=MitmSettings(confdir=tmp_path / "ca"))
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start(transparent=[listener]))
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30)
    yield Running(server, loop, audit)
    asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    t.join(30)
    loop.close()
    listener.close()
    audit.close()


def test_allowed_sni_is_relayed_to_the_named_upstream(transparent: Running, tls: Upstream, ca: CA) -> None:
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    with (
        socket.create_connection(("127.0.0.2", tls.port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="secure.test") as s,
    ):
        s.sendall(b"GET /t HTTP/1.1\r\nHost: secure.test\r\n\r\n")
        data = b""
        while b"hello from /t\n" not in data:
            chunk = s.recv(4096)
            assert chunk
            data += chunk


def test_denied_sni_is_closed_and_audited(transparent: Running, tls: Upstream, tmp_path: Path) -> None:
    ctx = ssl.create_default_context()
    before = tls.connections
    with (
        socket.create_connection(("127.0.0.2", tls.port), timeout=30) as raw,
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
    ):
        ctx.wrap_socket(raw, server_hostname="evil.test")
    assert wait_for(lambda: transparent.audit.denied_hosts["evil.test"])
    assert tls.connections == before  # nothing was connected upstream


def test_denied_http_host_gets_403(transparent: Running, tls: Upstream) -> None:
    with socket.create_connection(("127.0.0.2", tls.port), timeout=30) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: nope.test\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 403")
    assert b"--allow domain=nope.test" in data


def test_upstream_is_the_names_address_not_the_dialled_one(transparent: Running, tls: Upstream, ca: CA) -> None:
    """Dialled 127.0.0.2 (nothing but the proxy there); the proxy reached secure.test's mapping, 127.0.0.1."""
    before = tls.connections
    ctx = ssl.create_default_context(cafile=str(ca.ca_pem))
    with (
        socket.create_connection(("127.0.0.2", tls.port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="secure.test") as s,
    ):
        assert s.getpeercert() is not None
    assert tls.connections == before + 1
