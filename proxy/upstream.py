"""Upstream side of the proxy: name resolution, the private-address guard, and the
connect itself (direct, or through ``--upstream-proxy`` with CONNECT).

The proxy only ever connects to a *name* chosen by the policy (or an IP literal
the policy allowed), resolved here; never to an address the client dialled.
Side effects: DNS lookups through the host resolver, outgoing TCP connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

CONNECT_TIMEOUT = 15.0
RESOLVE_TIMEOUT = 10.0
# Where an allowed name must not lead unless --allow-private: the host itself, internal networks, cloud
# metadata, our own fake range. Written out rather than ``is_private``/``is_reserved``, which also cover the
# documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24): not internal, and some sandboxed
# networks answer public names with them.
FORBIDDEN_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
FAKE_NETS = (ipaddress.ip_network("198.18.0.0/15"),)  # what a boundary's DNS responder and shim answer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UpstreamError(Exception):
    """The upstream could not be reached, or may not be reached; ``reason`` is for the audit. ``guard``: refused
    by the private-address guard (a decision, 403), not a failure (502)."""

    def __init__(self, reason: str, *, guard: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.guard = guard


def is_forbidden(ip: IPAddress) -> bool:
    """Loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved, unspecified, our fake range;
    IPv4 embedded in IPv6 (mapped, NAT64) is judged as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return any(ip in net for net in FORBIDDEN_NETS if net.version == ip.version)


def parse_host_map(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``NAME=IP`` entries -> {normalised name: ip}; raise ValueError."""
    from .rules import normalize_host

    out: dict[str, str] = {}
    for item in items:
        name, sep, ip = item.partition("=")
        if not sep or not name or not ip:
            raise ValueError(f"invalid --host-map {item!r}: expected NAME=IP")
        try:
            addr = ipaddress.ip_address(ip.strip().strip("[]"))
        except ValueError:
            raise ValueError(f"invalid --host-map {item!r}: {ip!r} is not an IP address") from None
        out[normalize_host(name)] = str(addr)
    return out


@dataclass(frozen=True, slots=True)
class UpstreamProxy:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> UpstreamProxy:
        from .sniff import split_authority

        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "http":
            raise ValueError(f"invalid --upstream-proxy {url!r}: only http://HOST:PORT is supported")
        authority = rest.split("/", 1)[0]
        if "@" in authority:
            raise ValueError(f"invalid --upstream-proxy {url!r}: credentials in the URL are not supported")
        host, port = split_authority(authority, 3128)
        return cls(host, port)


@dataclass
class Upstream:
    """Resolves and connects on behalf of the policy."""

    host_map: Mapping[str, str] = field(default_factory=dict)
    allow_private: bool = False
    proxy: UpstreamProxy | None = None
    # inside another boundary's jail: names resolve to that boundary's fake addresses, which lead only to its proxy
    nested: bool = False

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Addresses for a normalised host; raise UpstreamError (guard applied)."""
        mapped = self.host_map.get(host)
        if mapped is not None:
            addrs: list[IPAddress] = [ipaddress.ip_address(mapped)]
        else:
            try:
                addrs = [ipaddress.ip_address(host)]
            except ValueError:
                addrs = await self._lookup(host, port)
        if self.allow_private:
            return addrs
        ok = [a for a in addrs if not is_forbidden(a) or (self.nested and any(a in n for n in FAKE_NETS))]
        if not ok:
            raise UpstreamError(
                f"{host} resolves to {addrs[0]}, a loopback/private/link-local address (use --allow-private to permit)",
                guard=True,
            )
        return ok

    async def _lookup(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as e:
            raise UpstreamError(f"cannot resolve {host}: {e}") from e
        seen: list[IPAddress] = []
        for _fam, _t, _p, _c, addr in infos:
            ip = ipaddress.ip_address(addr[0])
            if ip not in seen:
                seen.append(ip)
        if not seen:
            raise UpstreamError(f"cannot resolve {host}: no addresses")
        return seen

    async def connect(self, host: str, port: int) -> socket.socket:
        """A connected non-blocking socket to host:port (through the upstream proxy if set)."""
        if self.proxy is not None:
            return await self._connect_via_proxy(host, port)
        addrs = await self.resolve(host, port)
        return await _connect_any(addrs, port, host)

    async def _connect_via_proxy(self, host: str, port: int) -> socket.socket:
        assert self.proxy is not None
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.proxy.host, self.proxy.port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise UpstreamError(f"cannot resolve upstream proxy {self.proxy.host}: {e}") from e
        sock = await _connect_any([ipaddress.ip_address(i[4][0]) for i in infos], self.proxy.port, self.proxy.host)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_sendall(sock, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
                buf = b""
                while True:
                    # read byte-wise up to the end of the head so no tunnelled byte is consumed
                    chunk = await loop.sock_recv(sock, 1)
                    if not chunk:
                        raise UpstreamError("upstream proxy closed the connection during CONNECT")
                    buf += chunk
                    if buf.endswith(b"\r\n\r\n") or len(buf) > 16384:
                        break
        except (OSError, TimeoutError) as e:
            sock.close()
            raise UpstreamError(f"upstream proxy CONNECT failed: {e}") from e
        status_line = buf.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].startswith("2"):
            sock.close()
            raise UpstreamError(f"upstream proxy refused CONNECT {authority}: {status_line!r}")
        return sock


async def _connect_any(addrs: list[IPAddress], port: int, label: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    last: Exception | None = None
    for ip in addrs:
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (str(ip), port))
        except (OSError, TimeoutError) as e:
            sock.close()
            last = e
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise UpstreamError(f"cannot connect to {label}:{port}: {last or 'no address'}")
