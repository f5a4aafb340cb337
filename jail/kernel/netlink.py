"""The few netlink requests nsjail's setup makes (a veth pair, addresses, default routes; one nf_tables batch),
packed by hand. pyroute2 did this; its import alone (~35 ms, most of it subsystems never used here) sat on the
critical path of every nsjail start, for a dozen fixed messages. The messages are the ones ``ip`` and ``nft``
send (rtnetlink(7), netlink(7), linux/netfilter/nf_tables.h); tests compare the result with what ``ip`` and
``nft`` list.

Every request asks for an acknowledgement and waits for it (bounded by TIMEOUT); a refusal is raised as the
OSError of its errno. Side effects: netlink sockets in the network namespace current when each is opened.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence

TIMEOUT = 10.0
NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x200, 0x400, 0x800
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid

# rtnetlink
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_LOCAL = 2
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags

# nfnetlink / nf_tables
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE = 0, 3, 6
_NFGEN = struct.Struct("!BBH")  # family, version, res_id (big-endian)


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + bytes(-n % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def asciiz(text: str) -> bytes:
    return text.encode() + b"\0"


def be32(value: int) -> bytes:
    return struct.pack("!I", value & 0xFFFFFFFF)  # nf_tables integers are big-endian (a negative priority too)


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


class Netlink:
    """One netlink socket; ``request`` sends messages and waits for each one's acknowledgement."""

    def __init__(self, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            self.sock.bind((0, 0))
            self.sock.settimeout(TIMEOUT)
        except OSError:
            self.sock.close()
            raise
        self._seq = 0

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def message(self, kind: int, flags: int, body: bytes) -> tuple[int, bytes]:
        self._seq += 1
        return self._seq, _HDR.pack(_HDR.size + len(body), kind, flags, self._seq, 0) + body

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        seq, msg = self.message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body)
        self.sock.sendall(msg)
        self.wait_acks({seq})

    def query(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
        """One request (no dump); the (type, body) of each answer before its acknowledgement."""
        seq, msg = self.message(kind, NLM_F_REQUEST | NLM_F_ACK, body)
        self.sock.sendall(msg)
        return self.wait_acks({seq})

    def wait_acks(self, seqs: set[int]) -> list[tuple[int, bytes]]:
        """Read until every sequence number in ``seqs`` is acknowledged; raise the first refusal as OSError."""
        answers: list[tuple[int, bytes]] = []
        pending = set(seqs)
        while pending:
            data = self.sock.recv(65536)
            if not data:
                raise OSError(errno.EPROTO, "netlink closed without an answer")
            for kind, seq, body in _messages(data):
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else errno.EPROTO
                    if code:
                        raise OSError(code, os.strerror(code))
                    pending.discard(seq)
                elif seq in pending and kind != NLMSG_DONE:
                    answers.append((kind, body))
        return answers


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, _flags, seq, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size or off + length > len(data):
            raise OSError(errno.EPROTO, "a truncated netlink message")
        yield kind, seq, data[off + _HDR.size : off + length]
        off += (length + 3) & ~3


# -- rtnetlink -----------------------------------------------------------------
def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def link_index(nl: Netlink, name: str) -> int:
    """The index of interface ``name`` in the socket's network namespace (ENODEV when there is none)."""
    for kind, body in nl.query(RTM_GETLINK, _ifinfo() + attr(IFLA_IFNAME, asciiz(name))):
        if kind == RTM_NEWLINK and len(body) >= _IFINFO.size:
            return int(_IFINFO.unpack_from(body)[2])
    raise OSError(errno.ENODEV, f"no interface {name}")


def link_up(nl: Netlink, index: int) -> None:
    nl.request(RTM_NEWLINK, _ifinfo(index, IFF_UP, IFF_UP))


def add_veth(nl: Netlink, name: str, peer: str, peer_netns_fd: int) -> None:
    """A veth pair: ``name`` in the socket's namespace, ``peer`` made directly in the namespace of the fd."""
    # VETH_INFO_PEER holds an ifinfomsg followed by the peer's own attributes
    peer_info = _ifinfo() + attr(IFLA_IFNAME, asciiz(peer)) + attr(IFLA_NET_NS_FD, u32(peer_netns_fd))
    kind = attr(IFLA_INFO_KIND, b"veth")
    info = nested(IFLA_LINKINFO, kind, nested(IFLA_INFO_DATA, nested(VETH_INFO_PEER, peer_info)))
    nl.request(RTM_NEWLINK, _ifinfo() + attr(IFLA_IFNAME, asciiz(name)) + info, NLM_F_CREATE | NLM_F_EXCL)


def add_address(nl: Netlink, index: int, address: str, prefixlen: int, flags: int = 0) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.inet_pton(family, address)
    body = _IFADDR.pack(family, prefixlen, flags, RT_SCOPE_UNIVERSE, index) + attr(IFA_LOCAL, raw)
    nl.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)


def add_default_route(nl: Netlink, gateway: str, oif: int) -> None:
    family = socket.AF_INET6 if ":" in gateway else socket.AF_INET
    head = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    body = head + attr(RTA_GATEWAY, socket.inet_pton(family, gateway)) + attr(RTA_OIF, u32(oif))
    nl.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)


# -- nf_tables -----------------------------------------------------------------
def nft_batch(family: int, messages: Sequence[tuple[int, int, bytes]]) -> None:
    """Send (nf_tables message type, extra flags, attributes) as one transaction: all of it or none."""
    with Netlink(NETLINK_NETFILTER) as nl:
        sub = NFNL_SUBSYS_NFTABLES << 8
        batch = _NFGEN.pack(socket.AF_UNSPEC, 0, NFNL_SUBSYS_NFTABLES)
        seqs, parts = set(), [nl.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, batch)[1]]
        for kind, flags, attrs in messages:
            seq, msg = nl.message(sub | kind, NLM_F_REQUEST | NLM_F_ACK | flags, _NFGEN.pack(family, 0, 0) + attrs)
            seqs.add(seq)
            parts.append(msg)
        parts.append(nl.message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, batch)[1])
        nl.sock.sendall(b"".join(parts))
        nl.wait_acks(seqs)
