"""No process the command can see, other than its own, can be taken over: ptrace (attach and
seize), writes to /proc/PID/mem, process_vm_writev and pidfd_getfd are tried against every
visible process that is not the probe itself (nsjail: the jail's pid 1, boundary's init;
landjail: boundary, its keeper and every other process of the user, this test runner included).
Each attempt is also made against a sibling the probe started itself, which must succeed: a
refusal then is the jail's doing, not a bad attempt."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support import boundary_run

PROBE = r"""
import ctypes, errno, json, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 16, 17, 0x4206

class IOVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))

def err():
    return errno.errorcode.get(ctypes.get_errno(), "?")

def a_stack_address(pid):
    with open("/proc/%d/maps" % pid) as f:  # readable only where the process is open to us
        for line in f:
            if line.rstrip().endswith("[stack]"):
                return int(line.split("-")[0], 16)
    return 0x10000

def attempts(pid):
    out = {}
    for name, req in (("attach", PTRACE_ATTACH), ("seize", PTRACE_SEIZE)):
        if libc.ptrace(ctypes.c_long(req), ctypes.c_long(pid), None, None) == 0:
            out["ptrace " + name] = "ok"
            if req == PTRACE_ATTACH:
                os.waitpid(pid, 0x40000000)  # __WALL: the attach stop, so that DETACH works
            libc.ptrace(ctypes.c_long(PTRACE_DETACH), ctypes.c_long(pid), None, None)
            libc.syscall(ctypes.c_long(62), ctypes.c_long(pid), ctypes.c_long(18))  # SIGCONT, in case
        else:
            out["ptrace " + name] = err()
    try:
        fd = os.open("/proc/%d/mem" % pid, os.O_RDWR)
        out["mem open"] = "ok"
        os.close(fd)
    except OSError as e:
        out["mem open"] = errno.errorcode.get(e.errno, "?")
    try:
        addr = a_stack_address(pid)
    except OSError:
        addr = 0x10000
    buf = ctypes.create_string_buffer(1)
    local, remote = IOVec(ctypes.addressof(buf), 1), IOVec(addr, 1)
    r = libc.syscall(ctypes.c_long(311), ctypes.c_long(pid), ctypes.byref(local), ctypes.c_long(1),
                     ctypes.byref(remote), ctypes.c_long(1), ctypes.c_long(0))  # process_vm_writev
    # EFAULT means the permission check passed (only the address was bad)
    out["process_vm_writev"] = "ok" if r >= 0 else err()
    pidfd = libc.syscall(ctypes.c_long(434), ctypes.c_long(pid), ctypes.c_long(0))  # pidfd_open
    if pidfd < 0:
        out["pidfd_getfd"] = err()
    else:
        got = libc.syscall(ctypes.c_long(438), ctypes.c_long(pidfd), ctypes.c_long(0), ctypes.c_long(0))
        out["pidfd_getfd"] = "ok" if got >= 0 else err()
    return out

me = os.getpid()
sibling = subprocess.Popen(["sleep", "60"])
result = {"control": attempts(sibling.pid), "others": {}}
sibling.kill()
sibling.wait()
for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) not in (me, sibling.pid):
        try:
            with open("/proc/%s/status" % entry) as f:
                uid = [l.split()[1] for l in f if l.startswith("Uid:")][0]
        except (OSError, IndexError):
            continue
        if int(uid) != os.getuid():
            continue  # another user's: the kernel's ordinary checks refuse these anyway
        result["others"][entry] = attempts(int(entry))
print(json.dumps(result))
"""

TAKEOVER = ("ok", "EFAULT")  # EFAULT: process_vm_writev got past the permission check


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_no_visible_process_can_be_taken_over(tmp_path: Path, mode: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    r = boundary_run(tmp_path, "--jail-type", mode, "--", sys.executable, str(probe), timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # the same attempts work against the probe's own child: a refusal below is the jail's doing
    assert out["control"]["ptrace attach"] == "ok", out["control"]
    # landjail: Landlock grants no write access to /proc, so this one is refused even for the control
    assert out["control"]["mem open"] == ("ok" if mode == "nsjail" else "EACCES"), out["control"]
    assert out["control"]["process_vm_writev"] in TAKEOVER, out["control"]
    assert out["control"]["pidfd_getfd"] == "ok", out["control"]
    assert out["others"], "the probe saw no other process of its user (nsjail: pid 1 at least)"
    if mode == "nsjail":
        assert "1" in out["others"], out["others"]
    taken = {pid: {k: v for k, v in res.items() if v in TAKEOVER} for pid, res in out["others"].items()}
    assert not any(taken.values()), taken
