"""nf_tables rules over netlink, from Python (pyroute2's NFTables): nsjail's gateway and jail rule
sets without the nft or iptables binaries, which a non-root user cannot install.

The rule sets are plain data built by pure functions (one ``Table``: chains, each a list of rules,
each a list of expressions as the kernel takes them); ``apply`` sends them. They say what
jail.kernel.firewall's nft text says, rule for rule (the ND types as four rules, not a set), and
the tests compare ``nft list ruleset`` of both.
Side effects: ``apply`` talks NETLINK_NETFILTER in the caller's network namespace.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

NFPROTO_INET = 1
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
PRIORITY = {"dstnat": -100, "filter": 0}
NF_DROP, NF_ACCEPT = 0, 1
REG_VERDICT, REG1 = 0, 1
CMP_EQ, CMP_NEQ = 0, 1
META_IIF, META_OIF, META_IIFNAME, META_L4PROTO = 4, 5, 6, 16
PAYLOAD_TRANSPORT = 2
CT_STATE = 0
CT_ESTABLISHED, CT_RELATED = 1 << 1, 1 << 2
REJECT_TCP_RST, REJECT_ICMPX = 1, 2
ICMPX_ADMIN_PROHIBITED = 3
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 6, 17, 58
IFNAMSIZ = 16
LOOPBACK_INDEX = 1  # lo is always the first interface of a network namespace


@dataclass(frozen=True, slots=True)
class Expr:
    name: str
    attrs: tuple[tuple[str, object], ...]


Rule = tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    hook: str
    kind: str  # nat | filter
    priority: int
    accept: bool  # the policy
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    chains: tuple[Chain, ...] = field(default_factory=tuple)


def _x(name: str, **attrs: object) -> Expr:
    return Expr(name, tuple(attrs.items()))


def _data(value: bytes) -> dict[str, object]:
    return {"attrs": [("NFTA_DATA_VALUE", value)]}


def _cmp(value: bytes, op: int = CMP_EQ) -> Expr:
    return _x("cmp", sreg=REG1, op=op, data=_data(value))


def iifname(name: str) -> Rule:
    raw = name.encode()
    if len(raw) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is too long")
    return _x("meta", key=META_IIFNAME, dreg=REG1), _cmp(raw + bytes(IFNAMSIZ - len(raw)))


def iface_index(key: int, index: int) -> Rule:
    return _x("meta", key=key, dreg=REG1), _cmp(struct.pack("=I", index))


def l4proto(proto: int) -> Rule:
    return _x("meta", key=META_L4PROTO, dreg=REG1), _cmp(bytes([proto]))


def dport(port: int) -> Rule:
    return _x("payload", dreg=REG1, base=PAYLOAD_TRANSPORT, offset=2, len=2), _cmp(struct.pack("!H", port))


def icmpv6_type(kind: int) -> Rule:
    return (*l4proto(IPPROTO_ICMPV6), _x("payload", dreg=REG1, base=PAYLOAD_TRANSPORT, offset=0, len=1),
            _cmp(bytes([kind])))  # fmt: skip


def ct_established_or_related() -> Rule:
    mask = struct.pack("=I", CT_ESTABLISHED | CT_RELATED)
    return (_x("ct", key=CT_STATE, dreg=REG1),
            _x("bitwise", sreg=REG1, dreg=REG1, len=4, mask=_data(mask), xor=_data(bytes(4))),
            _cmp(bytes(4), CMP_NEQ))  # fmt: skip


def accept() -> Rule:
    verdict = {"attrs": [("NFTA_DATA_VERDICT", {"attrs": [("NFTA_VERDICT_CODE", NF_ACCEPT)]})]}
    return (_x("immediate", dreg=REG_VERDICT, data=verdict),)


def redirect(port: int) -> Rule:
    return _x("immediate", dreg=REG1, data=_data(struct.pack("!H", port))), _x("redir", reg_proto_min=REG1)


def reject_tcp_reset() -> Rule:
    return (_x("reject", type=REJECT_TCP_RST, icmp_code=0),)


def reject_admin_prohibited() -> Rule:
    return (_x("reject", type=REJECT_ICMPX, icmp_code=ICMPX_ADMIN_PROHIBITED),)


ND_TYPES = (133, 134, 135, 136)  # router solicit/advert, neighbor solicit/advert


def gateway_table(iface: str, proxy_port: int, dns_port: int) -> Table:
    """jail.kernel.firewall.gateway_rules, as data."""
    gw = iifname(iface)
    pre = Chain("pre", "prerouting", "nat", PRIORITY["dstnat"], True, (
        (*gw, *l4proto(IPPROTO_UDP), *dport(53), *redirect(dns_port)),
        (*gw, *l4proto(IPPROTO_TCP), *redirect(proxy_port)),
    ))  # fmt: skip
    inp = Chain("input", "input", "filter", PRIORITY["filter"], False, (
        (*iface_index(META_IIF, LOOPBACK_INDEX), *accept()),
        (*ct_established_or_related(), *accept()),
        (*gw, *l4proto(IPPROTO_TCP), *dport(proxy_port), *accept()),
        (*gw, *l4proto(IPPROTO_UDP), *dport(dns_port), *accept()),
        *((*gw, *icmpv6_type(t), *accept()) for t in ND_TYPES),
        (*l4proto(IPPROTO_TCP), *reject_tcp_reset()),
        reject_admin_prohibited(),
    ))  # fmt: skip
    fwd = Chain("forward", "forward", "filter", PRIORITY["filter"], False)
    return Table("boundary", (pre, inp, fwd))


def jail_table() -> Table:
    """jail.kernel.firewall.jail_rules, as data."""
    out = Chain("output", "output", "filter", PRIORITY["filter"], False, (
        (*iface_index(META_OIF, LOOPBACK_INDEX), *accept()),
        (*l4proto(IPPROTO_TCP), *accept()),
        (*l4proto(IPPROTO_UDP), *dport(53), *accept()),
        *((*icmpv6_type(t), *accept()) for t in ND_TYPES),
    ))  # fmt: skip
    return Table("boundary", (out,))


def apply(table: Table) -> None:
    """Create ``table`` in the current network namespace. Raises OSError (pyroute2's NetlinkError is one)."""
    from pyroute2.nftables.expressions import genex
    from pyroute2.nftables.main import NFTables

    with NFTables(nfgen_family=NFPROTO_INET) as nft:
        nft.table("add", name=table.name)
        for c in table.chains:
            nft.chain("add", table=table.name, name=c.name, hook=c.hook, type=c.kind, priority=c.priority,
                      policy=NF_ACCEPT if c.accept else NF_DROP)  # fmt: skip
            for rule in c.rules:
                exprs = [[genex(e.name, OrderedDict(e.attrs))] for e in rule]
                nft.rule("add", table=table.name, chain=c.name, expressions=exprs)
