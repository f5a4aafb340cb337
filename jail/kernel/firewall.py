"""The gateway namespace's packet rules: built by pure functions, applied over netlink
from Python (jail.kernel.nftnl: nothing to install) or, where that is refused, in one
transaction by ``nft -f -`` or ``iptables-restore`` + ``ip6tables-restore`` (nft
backend, then legacy with a private lock file).

What the rules say (gateway side, traffic arriving from the jail's veth):
every TCP connection, any address and port, IPv4 and IPv6, is redirected to the
proxy port; UDP to port 53 is redirected to the DNS port; everything else
addressed to the gateway is rejected, and nothing is forwarded (ip_forward stays
0 and the forward chain drops), so a packet that escapes the redirect has
nowhere to go.

Side effects: ``apply`` runs a helper in the caller's current network namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import nftnl

ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"
ND_ICMP6 = (133, 134, 135, 136)


@dataclass(frozen=True, slots=True)
class Plan:
    iface: str  # the gateway end of the veth
    proxy_port: int
    dns_port: int


@dataclass(frozen=True, slots=True)
class Rules:
    """One rule set in every form: netlink data, nft text, and iptables-restore input for IPv4 and IPv6."""

    nft: str
    ipv4: str
    ipv6: str
    netlink: nftnl.Table


def gateway_rules(p: Plan) -> Rules:
    nft = f"""\
table inet boundary {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{p.iface}" udp dport 53 redirect to :{p.dns_port}
    iifname "{p.iface}" meta l4proto tcp redirect to :{p.proxy_port}
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
    iifname "{p.iface}" tcp dport {p.proxy_port} accept
    iifname "{p.iface}" udp dport {p.dns_port} accept
    iifname "{p.iface}" icmpv6 type {{ {ND_TYPES} }} accept
    meta l4proto tcp reject with tcp reset
    reject with icmpx type admin-prohibited
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
  }}
}}
"""

    def ipt(ipv6: bool) -> str:
        reject = "icmp6-adm-prohibited" if ipv6 else "icmp-admin-prohibited"
        return (
            "*nat\n"
            f"-A PREROUTING -i {p.iface} -p udp --dport 53 -j REDIRECT --to-ports {p.dns_port}\n"
            f"-A PREROUTING -i {p.iface} -p tcp -j REDIRECT --to-ports {p.proxy_port}\n"
            "COMMIT\n"
            "*filter\n"
            ":INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -i lo -j ACCEPT\n"
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
            f"-A INPUT -i {p.iface} -p tcp --dport {p.proxy_port} -j ACCEPT\n"
            f"-A INPUT -i {p.iface} -p udp --dport {p.dns_port} -j ACCEPT\n"
            f"{_nd_accept('INPUT', '-i ' + p.iface) if ipv6 else ''}"
            "-A INPUT -p tcp -j REJECT --reject-with tcp-reset\n"
            f"-A INPUT -j REJECT --reject-with {reject}\n"
            "COMMIT\n"
        )

    return Rules(nft, ipt(False), ipt(True), nftnl.gateway_table(p.iface, p.proxy_port, p.dns_port))


def jail_rules() -> Rules:
    """The jail netns' own output filter: TCP (redirected in the gateway), DNS, and loopback leave;
    anything else fails at once with EPERM instead of vanishing (UDP, ICMP, raw)."""
    nft = f"""\
table inet boundary {{
  chain output {{
    type filter hook output priority filter; policy drop;
    oif "lo" accept
    meta l4proto tcp accept
    udp dport 53 accept
    icmpv6 type {{ {ND_TYPES} }} accept
  }}
}}
"""

    def ipt(ipv6: bool) -> str:
        return (
            "*filter\n"
            ":INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n"
            "-A OUTPUT -o lo -j ACCEPT\n"
            "-A OUTPUT -p tcp -j ACCEPT\n"
            "-A OUTPUT -p udp --dport 53 -j ACCEPT\n"
            f"{_nd_accept('OUTPUT', '') if ipv6 else ''}"
            "COMMIT\n"
        )

    return Rules(nft, ipt(False), ipt(True), nftnl.jail_table())


def _nd_accept(chain: str, match: str) -> str:
    return "".join(f"-A {chain} {match} -p icmpv6 --icmpv6-type {t} -j ACCEPT\n".replace("  ", " ") for t in ND_ICMP6)


class FirewallError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _run(argv: list[str], text: str, env: Mapping[str, str]) -> str | None:
    """Run one restore; None on success, else its error text."""
    try:
        res = subprocess.run(argv, input=text.encode(), capture_output=True, env=dict(env), timeout=30, check=False)
    except OSError as e:
        return f"{argv[0]}: {e.strerror}"
    except subprocess.TimeoutExpired:
        return f"{argv[0]}: timed out"
    if res.returncode != 0:
        return f"{argv[0]}: " + (res.stderr.decode(errors="replace").strip() or f"exit {res.returncode}")
    return None


# the helpers each back end runs: none (netlink from Python), nft alone, or an IPv4 + IPv6 restore pair
TOOLS: dict[str, tuple[str, ...]] = {
    "netlink": (),
    "nft": ("nft",),
    "iptables-nft": ("iptables-nft-restore", "ip6tables-nft-restore"),
    "iptables-legacy": ("iptables-legacy-restore", "ip6tables-legacy-restore"),
}


def installed(backends: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(back end, paths of its helpers) for each of ``backends``, in order, whose helpers are all installed."""
    search = "/usr/sbin:/sbin:/usr/bin:/bin:" + os.environ.get("PATH", "")
    out = []
    for name in backends:
        paths = [shutil.which(tool, path=search) for tool in TOOLS[name]]
        if all(paths):
            out.append((name, [p for p in paths if p]))
    return out


def apply(rules: Rules, *, lock_dir: str, backends: Sequence[str]) -> str:
    """Apply in the current netns, atomically per tool; returns the backend used.

    Raises FirewallError listing every attempt."""
    env = {"PATH": "/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL": "C"}
    errors: list[str] = []
    for name, tools in installed(backends):
        if name == "netlink":
            try:
                nftnl.apply(rules.netlink)
                return name
            except (OSError, KeyError) as e:  # refused (or an expression not known here): the next back end
                errors.append(f"netlink: {getattr(e, 'strerror', None) or e}")
                continue
        if name == "nft":
            err = _run([tools[0], "-f", "-"], rules.nft, env)
        else:
            # legacy takes /run/xtables.lock, which an unprivileged user cannot open: use a private one
            lock_env = {**env, "XTABLES_LOCKFILE": os.path.join(lock_dir, "xtables.lock")}
            err = _run([tools[0], "-w"], rules.ipv4, lock_env) or _run([tools[1], "-w"], rules.ipv6, lock_env)
        if err is None:
            return name
        errors.append(err)
    if not errors:
        raise FirewallError("none of the firewall back ends " + ", ".join(backends) + " is available")
    raise FirewallError("; ".join(errors))
