"""The jail's two network namespaces, wired over rtnetlink (jail.kernel.netlink): the jail netns J and
a gateway netns G, joined by a veth pair whose gateway end is created directly
in G. J routes everything (IPv4 and IPv6) to G; G routes nowhere.

The address plan is private to each run's namespaces, so two jails never collide.
Side effects: netlink requests in the namespaces the given sockets belong to.
"""

from __future__ import annotations

from dataclasses import dataclass

from .netlink import Netlink, add_address, add_default_route, add_veth, link_index, link_up

IFA_F_NODAD = 0x02  # IPv6 addresses would stay "tentative" (and unusable as a source) until DAD runs
LOOPBACK_INDEX = 1  # lo is always the first interface of a network namespace


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


def configure(jail: Netlink, gateway: Netlink, gateway_ns_fd: int, plan: Addresses = PLAN) -> None:
    """``jail``/``gateway``: rtnetlink sockets opened inside J and G."""
    link_up(jail, LOOPBACK_INDEX)
    link_up(gateway, LOOPBACK_INDEX)
    add_veth(jail, plan.jail_if, plan.gw_if, gateway_ns_fd)
    j, g = link_index(jail, plan.jail_if), link_index(gateway, plan.gw_if)
    link_up(jail, j)
    link_up(gateway, g)
    add_address(gateway, g, plan.gw_v4, plan.v4_prefix)
    add_address(gateway, g, plan.gw_v6, plan.v6_prefix, IFA_F_NODAD)
    add_address(jail, j, plan.jail_v4, plan.v4_prefix)
    add_address(jail, j, plan.jail_v6, plan.v6_prefix, IFA_F_NODAD)
    add_default_route(jail, plan.gw_v4, j)
    add_default_route(jail, plan.gw_v6, j)
