"""The jail's two network namespaces, wired with pyroute2: the jail netns J and
a gateway netns G, joined by a veth pair whose gateway end is created directly
in G. J routes everything (IPv4 and IPv6) to G; G routes nowhere.

The address plan is private to each run's namespaces, so two jails never collide.
Side effects: netlink requests in the namespaces the given sockets belong to.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

IFA_F_NODAD = 0x02  # IPv6 addresses would stay "tentative" (and unusable as a source) until DAD runs


@dataclass(frozen=True, slots=True)
class Addresses:
    jail_if: str = "bj0"
    gw_if: str = "bg0"
    jail_v4: str = "10.199.0.2"
    gw_v4: str = "10.199.0.1"
    v4_prefix: int = 30
    jail_v6: str = "fd00:b0::2"
    gw_v6: str = "fd00:b0::1"
    v6_prefix: int = 64


PLAN = Addresses()


def iproute_class() -> Any:
    """pyroute2's IPRoute, imported without running ``pyroute2/__init__``, which imports every
    subsystem (NDB, IPDB, nftables, ...): ~110 ms against ~60 ms, on the command's critical path."""
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("pyroute2 is not installed")
        pkg = types.ModuleType("pyroute2")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["pyroute2"] = pkg
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


def _link_up(ipr: Any, ifname: str) -> int:
    idx = int(ipr.link_lookup(ifname=ifname)[0])
    ipr.link("set", index=idx, state="up")
    return idx


def configure(jail: Any, gateway: Any, gateway_ns_fd: int, plan: Addresses = PLAN) -> None:
    """``jail``/``gateway``: pyroute2 IPRoute objects opened inside J and G."""
    _link_up(jail, "lo")
    _link_up(gateway, "lo")
    jail.link("add", ifname=plan.jail_if, kind="veth", peer={"ifname": plan.gw_if, "net_ns_fd": gateway_ns_fd})
    j = _link_up(jail, plan.jail_if)
    g = _link_up(gateway, plan.gw_if)
    gateway.addr("add", index=g, address=plan.gw_v4, prefixlen=plan.v4_prefix)
    gateway.addr("add", index=g, address=plan.gw_v6, prefixlen=plan.v6_prefix, flags=IFA_F_NODAD)
    jail.addr("add", index=j, address=plan.jail_v4, prefixlen=plan.v4_prefix)
    jail.addr("add", index=j, address=plan.jail_v6, prefixlen=plan.v6_prefix, flags=IFA_F_NODAD)
    jail.route("add", dst="0.0.0.0/0", gateway=plan.gw_v4, oif=j)
    jail.route("add", dst="::/0", gateway=plan.gw_v6, oif=j, family=10)
