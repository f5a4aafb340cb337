"""The netlink back end holds exactly the rules the nft text says: both applied, each in a fresh user +
network namespace, and listed by `nft list ruleset` (the ND types are a set in the text, four rules here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

APPLY = r"""
import sys
from jail.kernel import firewall, nftnl
gateway = firewall.gateway_rules(firewall.Plan("veth-gw", 3128, 5353))
rules = gateway if sys.argv[1] == "gateway" else firewall.jail_rules()
if sys.argv[2] == "netlink":
    nftnl.apply(rules.netlink)
else:
    import subprocess
    subprocess.run(["nft", "-f", "-"], input=rules.nft.encode(), check=True)
"""


def listed(which: str, backend: str) -> str:
    script = (
        f"ip link add veth-gw type veth peer name veth-j && \"{sys.executable}\" -c '{APPLY}' {which} {backend} "
        "&& nft list ruleset"
    )
    r = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _normal(text: str) -> list[str]:
    """One rule per line, the ND set spelled out as the netlink back end has it."""
    out = []
    for line in (x.strip() for x in text.splitlines()):
        m = re.fullmatch(r"(.*)icmpv6 type \{ (.*) \} accept", line)
        if m:
            out += [f"{m.group(1)}icmpv6 type {t.strip()} accept" for t in m.group(2).split(",")]
        elif line:
            out.append(line)
    return sorted(out)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed: nothing to compare with")
@pytest.mark.parametrize("which", ["gateway", "jail"])
def test_netlink_rules_equal_the_nft_text(which: str) -> None:
    assert _normal(listed(which, "netlink")) == _normal(listed(which, "nft"))


REFUSED = r"""
import sys
from jail.kernel import nftnl
bad = nftnl.Table("boundary", (nftnl.Chain("input", "input", "filter", 0, False, (
    (*nftnl.l4proto(6), *nftnl.accept()),
    (nftnl.Expr("meta", (("key", 9999), ("dreg", 1))), *nftnl.accept()),
)),))
try:
    nftnl.apply(bad)
except OSError as e:
    print("refused", e.errno)
"""


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed: nothing to list with")
def test_a_refused_rule_fails_the_whole_batch_with_its_errno() -> None:
    """One rule the kernel refuses: an OSError with the kernel's errno, and nothing of the batch stays."""
    r = subprocess.run(["unshare", "-rn", "sh", "-c", f"\"{sys.executable}\" -c '{REFUSED}' && nft list ruleset"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("refused "), r.stdout
    assert int(r.stdout.split()[1]) > 0
    assert "table" not in r.stdout  # the table and the good rule were not committed either
