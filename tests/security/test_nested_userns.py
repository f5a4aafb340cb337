"""nsjail --nested-userns: the command may make user, mount and network namespaces of its own (an agent's own
sandbox, bubblewrap). The attacks, from inside such a namespace where the command is root with every
capability: unmount or bind around what the jail hides, remount what it made read-only, and reach the network
from a network namespace of its own."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import Canary, boundary_run, own_address

ROOT_IN_NS = (
    "run as root of a user namespace (unshare -r), the command is uid 0, and the kernel maps uid 0 into a nested "
    "namespace only for a holder of CAP_SETFCAP, which the jail drops"
)
pytestmark = [
    pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux's unshare is not installed"),
    pytest.mark.skipif(os.geteuid() == 0, reason=ROOT_IN_NS),
]
SECRET = "TOPSECRET-nested-userns"


def run(tmp: Path, script: str, *extra: str) -> tuple[int, str]:
    r = boundary_run(tmp, "--jail-type", "nsjail", *extra, "--workspace", str(tmp), "--", "sh", "-c", script)
    return r.returncode, r.stdout + r.stderr


def test_without_the_flag_no_namespace_can_be_made(tmp_path: Path) -> None:
    rc, out = run(tmp_path, "unshare -Ur true && echo made")
    assert "made" not in out
    rc, out = run(tmp_path, "unshare -Ur true && echo made", "--nested-userns")
    assert rc == 0, out
    assert "made" in out


def test_what_the_jail_hides_stays_hidden_in_a_nested_namespace(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (box / "secret-dir").mkdir(parents=True)
    (box / "secret-dir" / "key.txt").write_text(SECRET)
    (box / "secret-file.txt").write_text(SECRET)
    d, f = box / "secret-dir", box / "secret-file.txt"
    attempts = [
        "mkdir -p /tmp/t && mount -t tmpfs none /tmp/t && echo mounting-works",  # root here, with every capability
        f"umount {d}", f"umount -l {d}", f"umount {f}", f"umount -l {f}",
        f"cat {d}/key.txt", f"cat {f}",
        # a bind of the parent without its submounts would show what they cover: the kernel refuses it
        f"mkdir -p /tmp/b && mount --bind {box} /tmp/b && cat /tmp/b/secret-dir/key.txt /tmp/b/secret-file.txt",
        f"mkdir -p /tmp/c && mount --rbind {box} /tmp/c && umount -l /tmp/c/secret-dir; cat /tmp/c/secret-dir/key.txt",
        f"mkdir -p /tmp/m && mount --move {d} /tmp/m; cat {d}/key.txt",
        # what the jail made read-only stays read-only
        "mount -o remount,bind,rw /usr && touch /usr/nested-userns-was-here",
        "mount -o remount,rw / && touch /nested-userns-was-here",
    ]  # fmt: skip
    script = "; ".join(f"unshare -Urm sh -c '{a}' 2>&1; echo step-done" for a in attempts)
    rc, out = run(tmp_path, script, "--nested-userns", "--hide", str(d), "--hide", str(f))
    assert rc == 0, out
    assert out.count("step-done") == len(attempts), out  # every attempt ran
    assert SECRET not in out
    assert "mounting-works" in out  # the attempts below had the capabilities they need
    assert not Path("/usr/nested-userns-was-here").exists()


def test_a_nested_network_namespace_reaches_nothing(tmp_path: Path) -> None:
    canary = Canary()
    try:
        _reaches_nothing(tmp_path, canary)
    finally:
        canary.close()


def _reaches_nothing(tmp_path: Path, canary: Canary) -> None:
    targets = ["127.0.0.1", *([a] if (a := own_address()) else [])]
    code = (
        "import socket, sys\n"
        "for host in sys.argv[2:]:\n"
        "    try:\n"
        "        socket.create_connection((host, int(sys.argv[1])), timeout=5); print('connected', host)\n"
        "    except OSError as e:\n"
        "        print('refused', host, e.errno)\n"
    )
    (tmp_path / "probe.py").write_text(code)
    script = f"unshare -Urn sh -c 'ip -o link; python3 probe.py {canary.tcp_port} {' '.join(targets)}'"
    rc, out = run(tmp_path, script, "--nested-userns")
    assert rc == 0, out
    assert "connected" not in out
    assert out.count("refused") == len(targets), out
    assert canary.heard() == []
