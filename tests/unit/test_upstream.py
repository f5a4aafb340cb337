"""The private-address guard and the parsers of proxy/upstream.py (pure parts)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from proxy.upstream import Upstream, UpstreamError, UpstreamProxy, is_forbidden, parse_host_map

FORBIDDEN = [
    ("127.0.0.1", True),
    ("10.1.2.3", True),
    ("172.16.0.1", True),
    ("192.168.1.1", True),
    ("169.254.169.254", True),  # cloud metadata
    ("100.64.0.1", True),  # CGNAT
    ("0.0.0.0", True),
    ("224.0.0.1", True),
    ("198.18.0.5", True),  # our own fake-address range
    ("::1", True),
    ("fe80::1", True),
    ("fd00::1", True),
    ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
    ("::ffff:169.254.169.254", True),
    ("240.0.0.1", True),
    ("255.255.255.255", True),
    ("::", True),
    ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
    ("64:ff9b::5db8:d822", False),  # NAT64 of a public address
    ("93.184.216.34", False),
    ("2606:4700::1", False),
    ("203.0.113.80", False),  # documentation ranges are not internal networks
    ("198.51.100.1", False),
    ("192.0.2.1", False),
]


@pytest.mark.parametrize(("ip", "forbidden"), FORBIDDEN)
def test_is_forbidden(ip: str, forbidden: bool) -> None:
    assert is_forbidden(ipaddress.ip_address(ip)) is forbidden


@pytest.mark.parametrize("host", ["169.254.169.254", "::ffff:10.0.0.1", "mapped.test"])
def test_guard_refuses_without_allow_private(host: str) -> None:
    """No lookup and no connect happen: the guard answers before anything leaves."""
    up = Upstream(host_map={"mapped.test": "169.254.169.254"})
    with pytest.raises(UpstreamError, match="--allow-private"):
        asyncio.run(up.resolve(host, 80))


def test_allow_private_permits() -> None:
    up = Upstream(host_map={"mapped.test": "127.0.0.1"}, allow_private=True)
    assert asyncio.run(up.resolve("mapped.test", 80)) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize("item", ["x", "x=", "=1.2.3.4", "x=not-an-ip"])
def test_bad_host_map(item: str) -> None:
    with pytest.raises(ValueError, match="--host-map"):
        parse_host_map([item])


@pytest.mark.parametrize("url", ["https://p:3128", "p:3128", "http://user:pw@p:3128"])
def test_bad_upstream_proxy(url: str) -> None:
    with pytest.raises(ValueError, match="--upstream-proxy"):
        UpstreamProxy.parse(url)
