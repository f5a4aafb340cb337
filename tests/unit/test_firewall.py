"""The firewall rule text (pure): what it redirects, accepts and rejects, in both syntaxes."""

from __future__ import annotations

from jail.kernel.firewall import Plan, gateway_rules, jail_rules

PLAN = Plan("bg0", 15001, 53)


def test_gateway_nft_redirects_all_tcp_and_dns_and_forwards_nothing() -> None:
    nft = gateway_rules(PLAN).nft
    assert 'iifname "bg0" meta l4proto tcp redirect to :15001' in nft
    assert 'iifname "bg0" udp dport 53 redirect to :53' in nft
    assert "table inet" in nft  # IPv4 and IPv6 alike
    assert "hook forward priority filter; policy drop;" in nft
    assert "hook input priority filter; policy drop;" in nft


def test_gateway_iptables_matches_nft() -> None:
    rules = gateway_rules(PLAN)
    for text in (rules.ipv4, rules.ipv6):
        assert "-A PREROUTING -i bg0 -p tcp -j REDIRECT --to-ports 15001" in text
        assert "-A PREROUTING -i bg0 -p udp --dport 53 -j REDIRECT --to-ports 53" in text
        assert ":FORWARD DROP" in text
        assert ":INPUT DROP" in text
        assert text.count("COMMIT") == 2
    assert "icmpv6" in rules.ipv6  # neighbour discovery, or IPv6 would not reach the gateway at all
    assert "icmpv6" not in rules.ipv4


def test_jail_output_filter_lets_only_tcp_dns_and_loopback_out() -> None:
    rules = jail_rules()
    assert "policy drop" in rules.nft
    assert "meta l4proto tcp accept" in rules.nft
    assert "udp dport 53 accept" in rules.nft
    for text in (rules.ipv4, rules.ipv6):
        assert ":OUTPUT DROP" in text
        assert "-A OUTPUT -p udp --dport 53 -j ACCEPT" in text
