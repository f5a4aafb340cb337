"""landjail's internet sockets: where the socket supervisor sends each connect, datagram and bind
(pure: raw sockaddrs in, a plan out; jail.sockets carries the plans out).

- TCP connect: to the explicit proxy (127.0.0.1 / ::1 on its port) as asked; anywhere else to the
  proxy's transparent listener, the destination recorded (proxy.origins) so that the proxy decides
  as it does for nsjail's redirected connections (SNI, Host, the fake-address map).
- UDP: to port 53 of any address, to boundary's DNS responder (fake answers, never forwarded); any
  other UDP destination is refused. Other protocols are refused (seccomp refuses to create them).
- bind: a wildcard or non-loopback address becomes loopback of the same family, unless the port is
  published (--publish): nothing outside the machine can connect in. --no-bind refuses TCP binds.
The command's own address family is kept: an IPv6 socket is sent to ::1 (or ::ffff:127.0.0.1 when
boundary has no IPv6 loopback listener).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import socket
import struct
from dataclasses import dataclass

DNS_PORT = 53
LOOP4 = "127.0.0.1"
MAPPED_LOOP4 = "::ffff:127.0.0.1"
ANY_PROTOCOL = 0


class Kind(enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    OTHER = "other"


def kind_of(sock_type: int, protocol: int) -> Kind:
    """Kind of a socket from SO_TYPE and SO_PROTOCOL (MPTCP counts as TCP: it connects like one)."""
    if sock_type == socket.SOCK_STREAM and protocol in (ANY_PROTOCOL, socket.IPPROTO_TCP, 262):
        return Kind.TCP
    if sock_type == socket.SOCK_DGRAM and protocol in (ANY_PROTOCOL, socket.IPPROTO_UDP):
        return Kind.UDP
    return Kind.OTHER


class Route(enum.Enum):
    AS_ASKED = "as asked"  # the raw address, unchanged
    PROXY = "proxy"  # the transparent listener; the destination recorded
    DNS = "dns"  # the DNS responder; replies appear to come from the destination
    DENY = "deny"  # EACCES, audited
    INVALID = "invalid"  # EINVAL: not an address the kernel would take either


@dataclass(frozen=True, slots=True)
class Plan:
    route: Route
    target: bytes = b""  # the sockaddr to use
    host: str = ""  # where the command meant to go
    port: int = 0
    what: str = ""  # for a refusal: what was refused


def parse(raw: bytes) -> tuple[int, str, int]:
    """(family, host, port) of a sockaddr_in / sockaddr_in6; an IPv4-mapped address as IPv4. Raises ValueError."""
    fam = int.from_bytes(raw[:2], "little") if len(raw) >= 2 else -1
    if fam == socket.AF_INET and len(raw) >= 16:
        return fam, socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if fam == socket.AF_INET6 and len(raw) >= 24:
        addr = ipaddress.IPv6Address(raw[8:24])
        host = str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)
        return fam, host, int.from_bytes(raw[2:4], "big")
    raise ValueError("not an internet address")


def is_loopback(host: str) -> bool:
    """127/8 or ::1, an IPv4-mapped or scoped spelling included; False for anything that is not an address."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@functools.lru_cache(maxsize=1024)
def encode(sock_family: int, host: str, port: int) -> bytes:
    """A sockaddr for a socket of ``sock_family``: an IPv4 host on an IPv6 socket becomes IPv4-mapped."""
    addr = ipaddress.ip_address(host)
    if sock_family == socket.AF_INET:
        if addr.version != 4:
            raise ValueError(f"{host} is not an IPv4 address")
        return struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + addr.packed + bytes(8)
    if addr.version == 4:
        addr = ipaddress.IPv6Address("::ffff:" + host)
    return struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", port, 0) + addr.packed + bytes(4)


@dataclass(frozen=True, slots=True)
class Targets:
    """boundary's loopback listeners, and what the user opened."""

    proxy_port: int  # the explicit proxy, on 127.0.0.1 and ::1
    transparent_port: int
    dns_port: int
    ipv6: bool  # the listeners are on ::1 too
    publish: frozenset[int] = frozenset()  # binds on these ports keep their address
    no_bind: bool = False

    def loopback(self, sock_family: int) -> str:
        if sock_family == socket.AF_INET:
            return LOOP4
        return "::1" if self.ipv6 else MAPPED_LOOP4

    def is_proxy(self, host: str, port: int) -> bool:
        return port == self.proxy_port and host in (LOOP4, "::1")

    def connect(self, kind: Kind, sock_family: int, raw: bytes) -> Plan:
        if len(raw) >= 2 and int.from_bytes(raw[:2], "little") == socket.AF_UNSPEC:
            return Plan(Route.AS_ASKED, raw)  # dissolves an association: reaches nothing
        try:
            _, host, port = parse(raw)
        except ValueError:
            return Plan(Route.INVALID)
        if kind is Kind.TCP:
            if self.is_proxy(host, port):
                return Plan(Route.AS_ASKED, raw, host, port)
            return Plan(Route.PROXY, encode(sock_family, self.loopback(sock_family), self.transparent_port), host, port)
        return self.datagram(kind, sock_family, host, port, "connect")

    def send(self, kind: Kind, sock_family: int, raw: bytes) -> Plan:
        """sendto/sendmsg with an address. TCP ignores it (seccomp refuses MSG_FASTOPEN, which would not)."""
        if kind is Kind.TCP:
            return Plan(Route.AS_ASKED, raw)
        try:
            _, host, port = parse(raw)
        except ValueError:
            return Plan(Route.INVALID)
        return self.datagram(kind, sock_family, host, port, "send to")

    def datagram(self, kind: Kind, sock_family: int, host: str, port: int, verb: str) -> Plan:
        if kind is Kind.UDP and port == DNS_PORT:
            return Plan(Route.DNS, encode(sock_family, self.loopback(sock_family), self.dns_port), host, port)
        shown = f"[{host}]" if ":" in host else host
        return Plan(Route.DENY, host=host, port=port, what=f"{kind.value} {verb} {shown}:{port}")

    def bind(self, kind: Kind, sock_family: int, raw: bytes) -> Plan:
        """Where a bind goes: AS_ASKED, or AS_ASKED with a loopback address in place of the one asked."""
        fam = int.from_bytes(raw[:2], "little") if len(raw) >= 2 else -1
        if fam == socket.AF_UNSPEC and sock_family == socket.AF_INET and len(raw) >= 16:
            raw = struct.pack("<H", socket.AF_INET) + raw[2:16]  # the kernel's reading of it: INADDR_ANY
        try:
            _, host, port = parse(raw)
        except ValueError:
            return Plan(Route.INVALID)
        if kind is Kind.TCP and self.no_bind:
            return Plan(Route.DENY, host=host, port=port, what=f"tcp bind port {port} (--no-bind)")
        if port in self.publish or is_loopback(host):
            return Plan(Route.AS_ASKED, raw, host, port)
        return Plan(Route.AS_ASKED, encode(sock_family, self.loopback(sock_family), port), host, port)

    def dns_listener(self, raw: bytes) -> bool:
        """Is ``raw`` (a datagram's sender) boundary's DNS responder?"""
        try:
            _, host, port = parse(raw)
        except ValueError:
            return False
        return port == self.dns_port and host in (LOOP4, "::1")
