"""nf_tables rules over netlink, from Python (jail.kernel.netlink, one batch): nsjail's gateway and jail rule
sets without the nft or iptables binaries, which a non-root user cannot install.

The rule sets are plain data built by pure functions (one ``Table``: chains, each a list of rules,
each a list of expressions as the kernel takes them); ``apply`` sends them. They say what
jail.kernel.firewall's nft text says, rule for rule (the ND types as four rules, not a set), and
the tests compare ``nft list ruleset`` of both.
Side effects: ``apply`` talks NETLINK_NETFILTER in the caller's network namespace.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from . import netlink

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


# each expression's attributes (linux/netfilter/nf_tables.h): all big-endian 32-bit integers but reject's ICMP
# code (8 bits); "data" values are nested NFTA_DATA_VALUE / NFTA_DATA_VERDICT
_EXPR_ATTRS: dict[str, dict[str, int]] = {
    "meta": {"dreg": 1, "key": 2, "sreg": 3},
    "cmp": {"sreg": 1, "op": 2, "data": 3},
    "payload": {"dreg": 1, "base": 2, "offset": 3, "len": 4},
    "ct": {"dreg": 1, "key": 2},
    "bitwise": {"sreg": 1, "dreg": 2, "len": 3, "mask": 4, "xor": 5},
    "immediate": {"dreg": 1, "data": 2},
    "redir": {"reg_proto_min": 1, "reg_proto_max": 2, "flags": 3},
    "reject": {"type": 1, "icmp_code": 2},
}
_U8 = {("reject", "icmp_code")}
_DATA = {"NFTA_DATA_VALUE": 1, "NFTA_DATA_VERDICT": 2, "NFTA_VERDICT_CODE": 1}
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE = 1, 3, 4, 5, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2


def _encode_data(value: object) -> bytes:
    """``{"attrs": [(name, bytes | int | nested)]}`` as nested attributes."""
    assert isinstance(value, dict)
    out = b""
    for name, v in value["attrs"]:
        if isinstance(v, bytes):
            out += netlink.attr(_DATA[name], v)
        elif isinstance(v, int):
            out += netlink.attr(_DATA[name], netlink.be32(v))
        else:
            out += netlink.nested(_DATA[name], _encode_data(v))
    return out


def encode_expr(e: Expr) -> bytes:
    """One expression as an NFTA_LIST_ELEM (raise KeyError for one this module does not know)."""
    fields = b""
    for key, value in e.attrs:
        kind = _EXPR_ATTRS[e.name][key]
        if isinstance(value, dict):
            fields += netlink.nested(kind, _encode_data(value))
        else:
            assert isinstance(value, int)
            fields += netlink.attr(kind, bytes([value]) if (e.name, key) in _U8 else netlink.be32(value))
    return netlink.nested(NFTA_LIST_ELEM, netlink.attr(NFTA_EXPR_NAME, netlink.asciiz(e.name)),
                          netlink.nested(NFTA_EXPR_DATA, fields))  # fmt: skip


def messages(table: Table) -> list[tuple[int, int, bytes]]:
    """The batch that creates ``table``: (nf_tables message type, flags, attributes)."""
    name = netlink.asciiz(table.name)
    out = [(netlink.NFT_MSG_NEWTABLE, netlink.NLM_F_CREATE, netlink.attr(NFTA_TABLE_NAME, name))]
    for c in table.chains:
        hook = netlink.nested(NFTA_CHAIN_HOOK, netlink.attr(NFTA_HOOK_HOOKNUM, netlink.be32(HOOKS[c.hook])),
                              netlink.attr(NFTA_HOOK_PRIORITY, netlink.be32(c.priority)))  # fmt: skip
        attrs = (netlink.attr(NFTA_CHAIN_TABLE, name) + netlink.attr(NFTA_CHAIN_NAME, netlink.asciiz(c.name)) + hook
                 + netlink.attr(NFTA_CHAIN_POLICY, netlink.be32(NF_ACCEPT if c.accept else NF_DROP))
                 + netlink.attr(NFTA_CHAIN_TYPE, netlink.asciiz(c.kind)))  # fmt: skip
        out.append((netlink.NFT_MSG_NEWCHAIN, netlink.NLM_F_CREATE, attrs))
        for rule in c.rules:
            exprs = netlink.nested(NFTA_RULE_EXPRESSIONS, *(encode_expr(e) for e in rule))
            attrs = netlink.attr(NFTA_RULE_TABLE, name) + netlink.attr(NFTA_RULE_CHAIN, netlink.asciiz(c.name))
            out.append((netlink.NFT_MSG_NEWRULE, netlink.NLM_F_CREATE | netlink.NLM_F_APPEND, attrs + exprs))
    return out


def apply(table: Table) -> None:
    """Create ``table`` in the current network namespace, in one transaction. Raises OSError."""
    netlink.nft_batch(NFPROTO_INET, messages(table))
