"""landjail's routing of internet sockets (pure): where each connect, datagram and bind goes."""

from __future__ import annotations

import socket

import pytest

from jail import inet
from jail.inet import Kind, Route

T = inet.Targets(proxy_port=3128, transparent_port=4000, dns_port=5353, ipv6=True, publish=frozenset({8080}))
V4, V6 = socket.AF_INET, socket.AF_INET6


def raw(host: str, port: int, family: int = V4) -> bytes:
    return inet.encode(family, host, port)


CONNECT = [
    (Kind.TCP, V4, "127.0.0.1", 3128, Route.AS_ASKED, ""),  # the explicit proxy
    (Kind.TCP, V6, "::1", 3128, Route.AS_ASKED, ""),
    (Kind.TCP, V4, "127.0.0.2", 3128, Route.PROXY, "127.0.0.1"),  # not the proxy's own address
    (Kind.TCP, V4, "192.0.2.2", 443, Route.PROXY, "127.0.0.1"),
    (Kind.TCP, V6, "2001:db8::1", 443, Route.PROXY, "::1"),
    (Kind.TCP, V6, "::ffff:192.0.2.2", 443, Route.PROXY, "::1"),
    (Kind.UDP, V4, "192.0.2.2", 53, Route.DNS, "127.0.0.1"),
    (Kind.UDP, V6, "2001:db8::1", 53, Route.DNS, "::1"),
    (Kind.UDP, V4, "127.0.0.1", 5353, Route.DENY, ""),  # the responder's own port is not port 53
    (Kind.UDP, V4, "192.0.2.2", 123, Route.DENY, ""),
    (Kind.OTHER, V4, "192.0.2.2", 53, Route.DENY, ""),
]


@pytest.mark.parametrize(("kind", "family", "host", "port", "route", "target_host"), CONNECT)
def test_connect(kind: Kind, family: int, host: str, port: int, route: Route, target_host: str) -> None:
    plan = T.connect(kind, family, raw(host, port, family))
    assert plan.route is route
    if target_host:
        assert inet.parse(plan.target)[1] == target_host
        assert inet.parse(plan.target)[2] == (T.transparent_port if route is Route.PROXY else T.dns_port)


def test_unspec_and_garbage() -> None:
    assert T.connect(Kind.TCP, V4, bytes(16)).route is Route.AS_ASKED  # AF_UNSPEC: a disconnect
    assert T.connect(Kind.TCP, V4, b"\x02\x00").route is Route.INVALID
    assert T.send(Kind.TCP, V4, raw("192.0.2.2", 9)).route is Route.AS_ASKED  # TCP ignores the address


BIND = [
    ("0.0.0.0", 3000, V4, "127.0.0.1"),
    ("::", 3000, V6, "::1"),
    ("192.0.2.2", 3000, V4, "127.0.0.1"),
    ("127.0.0.5", 3000, V4, "127.0.0.5"),  # loopback already
    ("0.0.0.0", 8080, V4, "0.0.0.0"),  # published
]


@pytest.mark.parametrize(("host", "port", "family", "bound"), BIND)
def test_bind(host: str, port: int, family: int, bound: str) -> None:
    plan = T.bind(Kind.TCP, family, raw(host, port, family))
    assert plan.route is Route.AS_ASKED
    assert inet.parse(plan.target)[1:] == (bound, port)


def test_no_bind_refuses_tcp_only() -> None:
    t = inet.Targets(3128, 4000, 5353, True, no_bind=True)
    assert t.bind(Kind.TCP, V4, raw("127.0.0.1", 3000)).route is Route.DENY
    assert t.bind(Kind.UDP, V4, raw("127.0.0.1", 3000)).route is Route.AS_ASKED


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                                                ("::ffff:127.0.0.1", True), ("::1%lo", True), ("0.0.0.0", False),
                                                ("192.0.2.2", False), ("::", False), ("name", False)])  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert inet.is_loopback(host) is loopback
