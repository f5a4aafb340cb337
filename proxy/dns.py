"""The jail's DNS responder: answers every A query with a fake address from
198.18.0.0/16 mapped 1:1 to the name (landjail's shim takes 198.19.0.0/16 for its own), AAAA
and every other type with an empty answer, and never forwards a query anywhere. The proxy maps fake addresses back
to names (:meth:`FakeTable.name`), so non-HTTP TCP to an allowed name works.

Parsing is bounded and defensive: one question, labels of 1..63 bytes from
[a-z0-9-_], names up to 253 characters, no compression in the question; anything
else gets FORMERR (or nothing, when not even the header parses). The table is
bounded; when full, new names get SERVFAIL (fail closed), known names still resolve.
Side effects: ``DnsResponder`` reads and answers on the sockets it is given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import string
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

log = logging.getLogger(__name__)

FAKE_NET = ipaddress.IPv4Network("198.18.0.0/16")
TABLE_MAX = 65536
TTL = 300
MAX_DATAGRAM = 4096  # larger datagrams are not queries we answer
QTYPE_A = 1
QCLASS_IN = 1
RCODE_OK, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NOTIMP = 0, 1, 2, 4
_LABEL_CHARS = frozenset((string.ascii_lowercase + string.digits + "-_").encode())


@dataclass(frozen=True, slots=True)
class Question:
    ident: int
    flags: int
    name: str
    qtype: int
    qclass: int
    raw: bytes  # the question section as received (echoed back)


class FormatError(ValueError):
    pass


def parse_query(data: bytes) -> Question:
    """Parse a standard query with exactly one question. Raises FormatError."""
    if len(data) < 12:
        raise FormatError("short header")
    ident, flags, qd, an, ns, _ar = struct.unpack_from("!6H", data)
    if flags & 0x8000:
        raise FormatError("not a query")
    if (flags >> 11) & 0xF != 0:
        raise FormatError("opcode not QUERY")
    if qd != 1 or an or ns:
        raise FormatError("expected exactly one question")
    pos, labels, total = 12, [], 0
    while True:
        if pos >= len(data):
            raise FormatError("truncated name")
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n > 63:
            raise FormatError("compressed or oversized label")
        label = data[pos : pos + n].lower()
        if len(label) != n:
            raise FormatError("truncated label")
        if not _LABEL_CHARS.issuperset(label):
            raise FormatError("label has characters outside [a-z0-9-_]")
        total += n + 1
        if total > 254:
            raise FormatError("name too long")
        labels.append(label.decode("ascii"))
        pos += n
    if pos + 4 > len(data):
        raise FormatError("truncated question")
    qtype, qclass = struct.unpack_from("!2H", data, pos)
    return Question(ident, flags, ".".join(labels), qtype, qclass, data[12 : pos + 4])


def build_response(q: Question, rcode: int, address: str | None = None) -> bytes:
    """Response echoing the question; one A record when ``address`` is given."""
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode  # QR, AA, RD copied, RA
    answer = b""
    if address is not None:
        answer = struct.pack("!HHHIH", 0xC00C, QTYPE_A, QCLASS_IN, TTL, 4) + socket.inet_aton(address)
    return struct.pack("!6H", q.ident, flags, 1, 1 if answer else 0, 0, 0) + q.raw + answer


def error_response(data: bytes, rcode: int) -> bytes | None:
    """A header-only error reply, or None when the header itself is unusable."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    ident, flags = struct.unpack_from("!2H", data)
    return struct.pack("!6H", ident, 0x8000 | (flags & 0x7900) | 0x0080 | rcode, 0, 0, 0, 0)


class FakeTable:
    """name <-> fake IPv4 address, 1:1, bounded, never reused within a run."""

    def __init__(self, network: ipaddress.IPv4Network = FAKE_NET, limit: int = TABLE_MAX) -> None:
        self._base = int(network.network_address) + 1
        self._limit = min(limit, network.num_addresses - 2)
        self._by_name: dict[str, str] = {}
        self._by_addr: dict[str, str] = {}

    def address(self, name: str) -> str | None:
        """The fake address for ``name``; None when the table is full."""
        addr = self._by_name.get(name)
        if addr is None:
            if len(self._by_name) >= self._limit:
                return None
            addr = str(ipaddress.IPv4Address(self._base + len(self._by_name)))
            self._by_name[name] = addr
            self._by_addr[addr] = name
        return addr

    def name(self, address: str) -> str | None:
        return self._by_addr.get(address)

    def __len__(self) -> int:
        return len(self._by_name)


@dataclass(frozen=True, slots=True)
class Answer:
    reply: bytes | None  # None: send nothing
    question: Question | None  # None: the query did not parse
    address: str | None = None  # the fake address given, if any


def answer(data: bytes, table: FakeTable) -> Answer:
    """The reply for one datagram."""
    if len(data) > MAX_DATAGRAM:
        return Answer(error_response(data, RCODE_FORMERR), None)
    try:
        q = parse_query(data)
    except FormatError:
        return Answer(error_response(data, RCODE_FORMERR), None)
    if q.qclass != QCLASS_IN:
        return Answer(build_response(q, RCODE_NOTIMP), q)
    if q.qtype != QTYPE_A or not q.name:
        return Answer(build_response(q, RCODE_OK), q)  # NODATA: no AAAA, no TXT channel
    addr = table.address(q.name)
    if addr is None:
        return Answer(build_response(q, RCODE_SERVFAIL), q)
    return Answer(build_response(q, RCODE_OK, addr), q, addr)


OnQuery = Callable[[Question, "str | None"], None]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, table: FakeTable, on_query: OnQuery | None) -> None:
        self.table = table
        self.on_query = on_query
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        a = answer(data, self.table)
        if a.reply is not None and self.transport is not None:
            self.transport.sendto(a.reply, addr)
        if a.question is not None and self.on_query is not None:
            self.on_query(a.question, a.address)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns socket error: %s", exc)


class DnsResponder:
    """Serves the fake table on already-bound UDP sockets (created in the jail's gateway netns)."""

    def __init__(self, table: FakeTable, on_query: OnQuery | None = None) -> None:
        self.table = table
        self.on_query = on_query
        self._transports: list[asyncio.BaseTransport] = []

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for s in sockets:
            s.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.table, self.on_query), sock=s)
            self._transports.append(transport)

    def close(self) -> None:
        for t in self._transports:
            t.close()
