"""Escape attempts from inside an nsjail, each aimed at canary listeners on host loopback, which must
hear nothing: direct IP connects (v4, v6, the gateway itself), UDP, raw sockets, ICMP, and tampering
with the jail's network (flushing rules, links, routes) before trying again."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CA, Canary, Upstream, boundary_run

PROBE = r"""
import errno, json, socket, subprocess, sys
canary_tcp, canary_udp, allowed_port, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = {}

def attempt(name, fn):
    try:
        out[name] = "ok: " + repr(fn())
    except OSError as e:
        out[name] = "error: " + (errno.errorcode.get(e.errno, "") if e.errno else type(e).__name__)

def tcp(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect((host, port))
        s.sendall(b"escape attempt\r\n\r\n")
        return s.recv(100)  # b"" when the proxy closes it: nothing reached a server
    finally:
        s.close()

def udp(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        return s.sendto(b"escape attempt", (host, port))
    finally:
        s.close()

def run(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).returncode
    except OSError:
        return 127

def all_attempts(tag):
    attempt(tag + "tcp host loopback", lambda: tcp("127.0.0.1", canary_tcp))
    attempt(tag + "tcp gateway", lambda: tcp("10.199.0.1", canary_tcp))
    attempt(tag + "tcp some ip", lambda: tcp("192.0.2.1", canary_tcp))
    attempt(tag + "tcp6 loopback", lambda: tcp("::1", canary_tcp, socket.AF_INET6))
    attempt(tag + "tcp6 some ip", lambda: tcp("2001:db8::1", canary_tcp, socket.AF_INET6))
    attempt(tag + "udp host loopback", lambda: udp("127.0.0.1", canary_udp))
    attempt(tag + "udp some ip", lambda: udp("192.0.2.1", canary_udp))
    attempt(tag + "udp gateway", lambda: udp("10.199.0.1", canary_udp))
    attempt(tag + "udp6 some ip", lambda: udp("2001:db8::1", canary_udp, socket.AF_INET6))
    attempt(tag + "raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    attempt(tag + "packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    attempt(tag + "icmp socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
    out[tag + "curl ip literal"] = run("curl", "-sS", "--max-time", "10", "http://127.0.0.2:%d/" % canary_tcp)
    for name, port in (("curl sni spoof", allowed_port), ("curl sni spoof to canary port", canary_tcp)):
        # an allowed SNI dialled at another address: the proxy goes to the name's address, on the dialled port
        out[tag + name] = run("curl", "-sS", "--max-time", "10", "--cacert", ca, "--connect-to",
                              "secure.test:%d:192.0.2.1:%d" % (port, port), "https://secure.test:%d/" % port)

all_attempts("")
out["nft flush ruleset"] = run("nft", "flush", "ruleset")
out["iptables -F"] = run("iptables", "-t", "nat", "-F")
out["ip link down"] = run("ip", "link", "set", "bj0", "down")
out["ip route add"] = run("ip", "route", "add", "192.0.2.0/24", "dev", "lo")
out["unshare -rn"] = run("unshare", "-rn", "sh", "-c", "ip link set lo up; exec 3<>/dev/tcp/127.0.0.1/%d" % canary_tcp)
all_attempts("after tampering: ")
print(json.dumps(out))
"""


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.close()


def test_nothing_escapes_the_nsjail(tmp_path: Path, canary: Canary, ca: CA, tls: Upstream) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    r = boundary_run(
        tmp_path, "--jail-type", "nsjail", "--allow-private", "--host-map", "secure.test=127.0.0.1",
        "--allow", f"domain=secure.test port={tls.port}",
        "--", sys.executable, str(probe), str(canary.tcp_port), str(canary.udp_port), str(tls.port), str(ca.ca_pem),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for tag in ("", "after tampering: "):
        # connects either find the jail's own (empty) loopback or land in the proxy, which closes them
        for name in ("tcp host loopback", "tcp6 loopback"):
            assert out[tag + name] == "error: ECONNREFUSED", (tag, name, out)
        for name in ("tcp gateway", "tcp some ip", "tcp6 some ip"):
            assert out[tag + name] in ("ok: b''", "error: ECONNRESET"), (tag, name, out)
        # UDP other than DNS and every raw/packet socket fail at once
        for name in ("udp some ip", "udp gateway", "udp6 some ip", "raw socket", "packet socket"):
            assert out[tag + name] == "error: EPERM", (tag, name, out)
        assert out[tag + "icmp socket"].startswith("error:"), (tag, out)
        assert out[tag + "curl ip literal"] != 0
        assert out[tag + "curl sni spoof"] == 0  # reached secure.test itself, not 192.0.2.1
        assert out[tag + "curl sni spoof to canary port"] != 0  # secure.test is allowed on its port only
    for name in ("nft flush ruleset", "iptables -F", "ip link down", "ip route add"):
        assert out[name] != 0, (name, out)  # no capability over the jail's network namespace
    assert out["unshare -rn"] != 0
    assert canary.heard() == []
    assert tls.connections >= 2  # the SNI-spoof requests went to secure.test's real address
