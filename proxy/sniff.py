"""Pure, bounded parsers for the first bytes of a connection: TLS ClientHello SNI,
HTTP/1.x request heads (CONNECT, absolute-form, origin-form + Host).

Every function takes bytes received so far and answers one of: need more bytes,
not this protocol / malformed, or a parsed result. Nothing here reads a socket.
Inputs are hostile: every length is checked before use and sizes are bounded.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_HEAD = 32 * 1024  # an HTTP request head larger than this is refused
MAX_CLIENT_HELLO = 64 * 1024
MAX_HEADERS = 128

_METHOD_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")
_AUTHORITY_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]/@\s]+))(?::(?P<port>[0-9]{1,5}))?$")


class Status(enum.Enum):
    MORE = "more"  # not enough bytes yet
    NO = "no"  # not this protocol, or malformed
    OK = "ok"


@dataclass(frozen=True, slots=True)
class ClientHello:
    status: Status
    sni: str | None = None


def looks_like_tls(buf: bytes | bytearray) -> bool:
    return len(buf) >= 1 and buf[0] == 0x16


def parse_client_hello(buf: bytes) -> ClientHello:
    """Find the server_name of a TLS ClientHello that may span several records."""
    hs = bytearray()
    pos = 0
    while True:
        if len(buf) - pos < 5:
            return ClientHello(Status.MORE) if len(buf) < MAX_CLIENT_HELLO else ClientHello(Status.NO)
        ctype, major, length = buf[pos], buf[pos + 1], int.from_bytes(buf[pos + 3 : pos + 5], "big")
        if ctype != 0x16 or major != 3 or length == 0 or length > 16384 + 2048:
            return ClientHello(Status.NO)
        if len(buf) - pos - 5 < length:
            return ClientHello(Status.MORE) if len(buf) < MAX_CLIENT_HELLO else ClientHello(Status.NO)
        hs += buf[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(hs) >= 4:
            if hs[0] != 0x01:  # not a ClientHello
                return ClientHello(Status.NO)
            body_len = int.from_bytes(hs[1:4], "big")
            if body_len > MAX_CLIENT_HELLO:
                return ClientHello(Status.NO)
            if len(hs) >= 4 + body_len:
                return _parse_hello_body(bytes(hs[4 : 4 + body_len]))
        if pos >= MAX_CLIENT_HELLO:
            return ClientHello(Status.NO)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vec8(self) -> bytes:
        return self.take(self.u8())

    def vec16(self) -> bytes:
        return self.take(self.u16())


def _parse_hello_body(body: bytes) -> ClientHello:
    try:
        r = _Reader(body)
        r.take(2 + 32)  # legacy_version, random
        r.vec8()  # session id
        r.vec16()  # cipher suites
        r.vec8()  # compression methods
        if r.pos == len(body):
            return ClientHello(Status.OK, None)
        ext = _Reader(r.vec16())
        while ext.pos < len(ext.data):
            etype = ext.u16()
            edata = ext.vec16()
            if etype == 0:  # server_name
                names = _Reader(_Reader(edata).vec16())
                while names.pos < len(names.data):
                    kind = names.u8()
                    name = names.vec16()
                    if kind == 0:
                        return ClientHello(Status.OK, _decode_name(name))
                return ClientHello(Status.OK, None)
        return ClientHello(Status.OK, None)
    except ValueError:
        return ClientHello(Status.NO)


def _decode_name(raw: bytes) -> str | None:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return name if name and all(33 <= ord(c) < 127 for c in name) else None


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    length: int  # bytes of the head including the blank line

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class HeadResult:
    status: Status
    head: RequestHead | None = None
    error: str = ""


def parse_request_head(buf: bytes) -> HeadResult:
    """Parse an HTTP/1.x request head (request line + headers)."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        first = buf[:33].split(b" ", 1)[0]
        if first and not _METHOD_RE.match(first):
            return HeadResult(Status.NO, error="not an HTTP request")
        if len(buf) >= MAX_HEAD:
            return HeadResult(Status.NO, error=f"request head larger than {MAX_HEAD} bytes")
        return HeadResult(Status.MORE)
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _METHOD_RE.match(parts[0]) or not parts[2].startswith(b"HTTP/1."):
        return HeadResult(Status.NO, error="malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        return HeadResult(Status.NO, error="too many headers")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not _METHOD_RE.match(name):
            return HeadResult(Status.NO, error="malformed header line")
        headers.append((name.decode("ascii"), value.strip().decode("latin-1")))
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return HeadResult(Status.NO, error="non-ASCII request target")
    if not target or any(ord(c) <= 32 or ord(c) == 127 for c in target):
        return HeadResult(Status.NO, error="malformed request target")
    return HeadResult(
        Status.OK,
        RequestHead(parts[0].decode("ascii"), target, parts[2].decode("ascii"), tuple(headers), end + 4),
    )


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` -> (host, port); raise ValueError."""
    m = _AUTHORITY_RE.match(authority)
    if not m:
        raise ValueError(f"malformed authority {authority[:80]!r}")
    host = m.group("v6") or m.group("host")
    port_s = m.group("port")
    if port_s is None:
        if default_port is None:
            raise ValueError(f"authority {authority[:80]!r} has no port")
        return host, default_port
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


@dataclass(frozen=True, slots=True)
class Target:
    """Where an HTTP request wants to go, as far as its head tells."""

    host: str
    port: int
    path: str  # origin-form path (with query); "" for CONNECT
    connect: bool


def request_target(head: RequestHead, *, default_port: int = 80) -> Target:
    """Host, port and path of a request head; raise ValueError when unknowable."""
    if head.method.upper() == "CONNECT":
        host, port = split_authority(head.target, None)
        return Target(host, port, "", True)
    t = head.target
    if "://" in t:
        scheme, _, rest = t.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))  # RFC 3986: the authority ends here
        authority, path = rest[:end].rsplit("@", 1)[-1], rest[end:].split("#", 1)[0]
        host, port = split_authority(authority, 443 if scheme in ("https", "wss") else 80)
        return Target(host, port, path if path.startswith("/") else "/" + path, False)
    if not t.startswith("/") and t != "*":
        raise ValueError(f"malformed request target {t[:80]!r}")
    host_header = head.header("host")
    if not host_header:
        raise ValueError("request has no Host header")
    host, port = split_authority(host_header.strip(), default_port)
    return Target(host, port, t, False)
