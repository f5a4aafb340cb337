"""--jail-type auto: nsjail where user namespaces work, landjail where the kernel refuses them or no
firewall back end works; `boundary doctor` (and --json) says the same. The refusals are real: boundary
runs under a seccomp filter that fails unshare(CLONE_NEWUSER) with EPERM, as Ubuntu's AppArmor
restriction or a container runtime would, or one that refuses netfilter netlink and raw sockets, as a
kernel without nf_tables would (to every back end: netlink from Python, nft and both iptables)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import boundary_cmd, boundary_env

NO_USERNS = r"""
import errno, os, sys
import pyseccomp as sc
f = sc.SyscallFilter(defaction=sc.ALLOW)
f.add_rule(sc.ERRNO(errno.EPERM), "unshare", sc.Arg(0, sc.MASKED_EQ, 0x10000000, 0x10000000))
f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, 0x10000000, 0x10000000))
f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


NO_FIREWALL = r"""
import errno, os, socket, sys
import pyseccomp as sc
f = sc.SyscallFilter(defaction=sc.ALLOW)
f.add_rule(sc.ERRNO(errno.EPERM), "socket", sc.Arg(0, sc.EQ, socket.AF_NETLINK), sc.Arg(2, sc.EQ, 12))
for fam in (socket.AF_INET, socket.AF_INET6):
    f.add_rule(sc.ERRNO(errno.EPERM), "socket", sc.Arg(0, sc.EQ, fam), sc.Arg(1, sc.MASKED_EQ, 0xF, socket.SOCK_RAW))
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


def call(
    argv: list[str], *, no_userns: bool, env: dict[str, str] | None = None, no_firewall: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ARGV, under the filter that refuses user namespaces when ``no_userns`` (or the firewall's sockets)."""
    if no_userns:
        argv = [sys.executable, "-c", NO_USERNS, *argv]
    if no_firewall:
        argv = [sys.executable, "-c", NO_FIREWALL, *argv]
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
    )


def run(tmp_path: Path, *args: str, no_userns: bool) -> subprocess.CompletedProcess[str]:
    return call(boundary_cmd(tmp_path, *args), no_userns=no_userns, env=boundary_env(tmp_path))


PROBE = ("--", "sh", "-c", "echo proxy=${HTTPS_PROXY:-none}")


def test_auto_uses_nsjail_where_user_namespaces_work(tmp_path: Path) -> None:
    r = run(tmp_path, *PROBE, no_userns=False)
    assert r.returncode == 0, r.stderr
    assert "proxy=none" in r.stdout  # transparent: no proxy settings needed


def test_auto_falls_back_to_landjail_where_they_are_refused(tmp_path: Path) -> None:
    r = run(tmp_path, *PROBE, no_userns=True)
    assert r.returncode == 0, r.stderr
    assert "proxy=http://127.0.0.1:" in r.stdout


def test_nsjail_where_they_are_refused_fails_with_a_hint(tmp_path: Path) -> None:
    r = run(tmp_path, "--jail-type", "nsjail", "--", "true", no_userns=True)
    assert r.returncode == 125
    assert "failed to create the jail's user namespace: unshare(" in r.stderr
    assert "Operation not permitted (EPERM)" in r.stderr
    assert "--jail-type landjail" in r.stderr


def doctor(*, no_userns: bool, no_firewall: bool = False, json: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "jail", "doctor", *(["--json"] if json else [])]
    return call(argv, no_userns=no_userns, no_firewall=no_firewall)


def test_doctor_reports_what_works() -> None:
    r = doctor(no_userns=False)
    assert r.returncode == 0, r.stderr
    assert "nsjail: ok" in r.stdout
    assert "landjail: ok: Landlock ABI" in r.stdout
    assert "socket supervisor: ok: seccomp user notification" in r.stdout
    assert "auto would use: nsjail" in r.stdout


def test_doctor_says_why_not_and_how_to_fix() -> None:
    r = doctor(no_userns=True)
    assert r.returncode == 0, r.stderr
    assert (
        "nsjail: unavailable: unprivileged user namespaces are refused (create the jail's user namespace: " in r.stdout
    )
    assert "hint: " in r.stdout
    assert "auto would use: landjail" in r.stdout


def test_without_a_firewall_run_and_doctor_agree_on_landjail(tmp_path: Path) -> None:
    import json

    d = doctor(no_userns=False, no_firewall=True, json=True)
    assert d.returncode == 0, d.stderr
    report = json.loads(d.stdout)
    assert report["auto"] == "landjail", report
    assert report["checks"]["nsjail"]["ok"] is False
    assert "no firewall back end works" in report["checks"]["nsjail"]["detail"]
    assert "netlink" in report["checks"]["nsjail"]["detail"]
    r = call(boundary_cmd(tmp_path, *PROBE), no_userns=False, no_firewall=True, env=boundary_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "proxy=http://127.0.0.1:" in r.stdout  # landjail, as doctor said


def test_doctor_json_matches_the_text() -> None:
    import json

    report = json.loads(doctor(no_userns=True, json=True).stdout)
    assert report["auto"] == "landjail"
    assert report["checks"]["nsjail"]["ok"] is False
    assert report["checks"]["nsjail"]["hint"]
    assert report["checks"]["landjail"]["ok"] is True
