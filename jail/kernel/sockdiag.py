"""Which unix socket is bound where (NETLINK_SOCK_DIAG, unix_diag): for a socket file's
(device, inode) or an abstract name, the socket inode of the socket bound to it, among the
sockets of one network namespace (the one the netlink socket was made in). Unprivileged.

Parsing is pure (:func:`parse`) and bounded; the kernel is the only peer.
Side effects: netlink I/O on the given socket.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
UDIAG_SHOW_NAME, UDIAG_SHOW_VFS = 0x1, 0x2
UNIX_DIAG_NAME, UNIX_DIAG_VFS = 0, 1
ALL_STATES = 0xFFFFFFFF
MAX_BYTES = 64 << 20  # a dump larger than this is refused (fail closed: no match)

T = TypeVar("T")
_NLH = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBHIII8x")  # family, protocol, pad, states, ino, show, cookie
_MSG = struct.Struct("=BBBBI8x")  # family, type, state, pad, ino, cookie
_RTA = struct.Struct("=HH")
_VFS = struct.Struct("=II")


@dataclass(frozen=True, slots=True)
class Bound:
    ino: int  # the socket's inode (what /proc/PID/fd/N shows as socket:[ino])
    vfs: tuple[int, int] | None  # (st_dev, st_ino & 0xffffffff) of its socket file, for pathname sockets
    name: bytes  # bound name: a path, or b"\0..." for an abstract one


def open_diag() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)


def kernel_dev(dev: int) -> int:
    """The kernel's internal dev_t (major << 20 | minor), as unix_diag reports it, as st_dev."""
    return os.makedev(dev >> 20, dev & 0xFFFFF)


def request(seq: int) -> bytes:
    body = _REQ.pack(socket.AF_UNIX, 0, 0, ALL_STATES, 0, UDIAG_SHOW_NAME | UDIAG_SHOW_VFS)
    return _NLH.pack(_NLH.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one read; ``NLMSG_DONE`` ends it. Raises ValueError."""
    off = 0
    while off + _NLH.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLH.unpack_from(data, off)
        if length < _NLH.size or off + length > len(data):
            raise ValueError("truncated netlink message")
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, off + _NLH.size)
            raise ValueError(f"sock_diag error {os.strerror(-code)}")
        yield kind, data[off + _NLH.size : off + length]
        if kind == NLMSG_DONE:
            return
        off += (length + 3) & ~3


def parse(data: bytes) -> tuple[list[Bound], bool]:
    """The bound sockets in one netlink read, and whether the dump is done. Raises ValueError."""
    out: list[Bound] = []
    for kind, msg in _messages(data):
        if kind == NLMSG_DONE:
            return out, True
        if kind == SOCK_DIAG_BY_FAMILY and len(msg) >= _MSG.size:
            _fam, _type, _state, _pad, ino = _MSG.unpack_from(msg)
            name, vfs = b"", None
            for rtype, payload in _attrs(msg[_MSG.size :]):
                if rtype == UNIX_DIAG_NAME:
                    name = payload
                elif rtype == UNIX_DIAG_VFS and len(payload) >= _VFS.size:
                    vino, vdev = _VFS.unpack_from(payload)
                    vfs = (kernel_dev(vdev), vino)
            if name or vfs:
                out.append(Bound(ino, vfs, name))
    return out, False


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + _RTA.size <= len(data):
        length, rtype = _RTA.unpack_from(data, off)
        if length < _RTA.size or off + length > len(data):
            return
        yield rtype, data[off + _RTA.size : off + length]
        off += (length + 3) & ~3


def _dump(diag: socket.socket, req: bytes, parser: Callable[[bytes], tuple[list[T], bool]]) -> list[T]:
    diag.send(req)
    out: list[T] = []
    total = 0
    while True:
        data = diag.recv(1 << 16)
        total += len(data)
        if not data or total > MAX_BYTES:
            raise ValueError("sock_diag dump ended early or is too large")
        got, done = parser(data)
        out += got
        if done:
            return out


def bound_sockets(diag: socket.socket) -> list[Bound]:
    """Every bound unix socket of the diag socket's network namespace. Raises OSError/ValueError."""
    return _dump(diag, request(1), parse)


def find(diag: socket.socket, *, vfs: tuple[int, int] | None = None, name: bytes | None = None) -> Bound | None:
    """The socket bound to that file (st_dev, st_ino) or that abstract name, if any."""
    key = None if vfs is None else (vfs[0], vfs[1] & 0xFFFFFFFF)
    for b in bound_sockets(diag):
        if (key is not None and b.vfs == key) or (name is not None and b.name == name):
            return b
    return None


# -- listening TCP sockets (inet_diag) ----------------------------------------------------------
TCP_LISTEN = 10
_INET_REQ = struct.Struct("=BBBxI48x")  # family, protocol, ext, pad, states, sockid (left zero: dump all)
_INET_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # family state timer retrans sport dport src dst if cookie
# expires rqueue wqueue uid inode


ALL_INET_STATES = 0xFFF


def inet_request(family: int, seq: int, protocol: int = socket.IPPROTO_TCP, states: int = 1 << TCP_LISTEN) -> bytes:
    body = _INET_REQ.pack(family, protocol, 0, states)
    return _NLH.pack(_NLH.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_inet(data: bytes) -> tuple[list[tuple[str, int, int]], bool]:
    """(local address, port, socket inode) of each listening socket in one netlink read; whether the dump is
    done. Raises ValueError."""
    out: list[tuple[str, int, int]] = []
    for kind, msg in _messages(data):
        if kind == NLMSG_DONE:
            return out, True
        if kind == SOCK_DIAG_BY_FAMILY and len(msg) >= _INET_MSG.size:
            fam, _st, _t, _r, sport, _dp, src, _dst, _if, _c, _e, _rq, _wq, _uid, ino = _INET_MSG.unpack_from(msg)
            addr = socket.inet_ntop(fam, src[:4] if fam == socket.AF_INET else src)
            out.append((addr, int.from_bytes(sport, "big"), ino))
    return out, False


def tcp_listeners(diag: socket.socket, family: int) -> list[tuple[str, int, int]]:
    """Every listening TCP socket of ``family`` in the diag socket's network namespace: (address, port, inode).
    Raises OSError/ValueError."""
    return _dump(diag, inet_request(family, 2), parse_inet)


def udp_sockets(diag: socket.socket, family: int) -> list[tuple[str, int, int]]:
    """Every UDP socket of ``family`` with a local port, in the diag socket's network namespace: (address, port,
    inode). Raises OSError/ValueError."""
    return _dump(diag, inet_request(family, 3, socket.IPPROTO_UDP, ALL_INET_STATES), parse_inet)
