"""The seccomp filter both modes load, tried for real: each call is first made unconfined (so a
refusal inside is the filter's doing, not bad arguments) and then from inside each jail.
Keyrings, bpf, perf, userfaultfd, module and kexec calls, new namespaces, mounts and setns get
EPERM; clone3 and io_uring ENOSYS; a syscall through another ABI (x32) kills the process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import boundary_run

PROBE = r"""
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(json.dumps({
    "add_key": call(248, 0, 0, 0, 0, 0), "keyctl": call(250, 0, 0), "bpf": call(321, 0, 0, 0),
    "perf_event_open": call(298, 0, 0, -1, -1, 0), "userfaultfd": call(323, 1),  # user-mode-only: allowed unprivileged
    "unshare user": call(272, 0x10000000), "unshare mount": call(272, 0x00020000),
    "unshare net": call(272, 0x40000000), "mount": call(165, 0, 0, 0, 0, 0), "setns": call(308, 0, 0),
    "clone3": call(435, 0, 0), "init_module": call(175, 0, 0, 0), "kexec_load": call(246, 0, 0, 0, 0),
    "io_uring_setup": call(425, 0, 0),
}), flush=True)
if sys.argv[1:] == ["x32"]:
    call(39 | 0x40000000)  # getpid through the x32 ABI
    print("x32 survived", flush=True)
"""
DENIED = ("add_key", "keyctl", "bpf", "perf_event_open", "userfaultfd", "unshare user", "unshare mount",
          "unshare net", "mount", "setns", "init_module", "kexec_load")  # fmt: skip


def probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return path


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_the_filter_refuses_what_it_claims(tmp_path: Path, mode: str) -> None:
    script = probe(tmp_path)
    baseline = json.loads(subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                         check=True, timeout=60).stdout)  # fmt: skip
    for name in DENIED:
        assert baseline[name] != "EPERM", (name, baseline)  # the call itself is not what fails
    r = boundary_run(tmp_path, "--jail-type", mode, "--", sys.executable, str(script))
    assert r.returncode == 0, r.stderr
    inside = json.loads(r.stdout)
    for name in DENIED:
        assert inside[name] == "EPERM", (name, inside)
    assert inside["clone3"] == "ENOSYS"  # libc falls back to clone, whose flags the filter can read
    assert inside["io_uring_setup"] == "ENOSYS"


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_a_syscall_through_another_abi_kills_the_process(tmp_path: Path, mode: str) -> None:
    script = probe(tmp_path)
    outside = subprocess.run([sys.executable, str(script), "x32"], capture_output=True, text=True, timeout=60)
    assert "x32 survived" in outside.stdout  # unconfined, the call just fails
    r = boundary_run(tmp_path, "--jail-type", mode, "--", sys.executable, str(script), "x32")
    assert r.returncode == 128 + signal.SIGSYS, (r.stdout, r.stderr)
    assert "x32 survived" not in r.stdout


VSOCK = (
    "import socket\n"
    "try:\n    socket.socket(40, socket.SOCK_STREAM)\n    print('made')\n"
    "except OSError as e:\n    print('refused', e.errno)\n"
)


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_no_vsock_socket(tmp_path: Path, mode: str) -> None:
    """vsock reaches the hypervisor or the host, and no network namespace confines it (an outside review made one
    in nsjail)."""
    r = boundary_run(tmp_path, "--jail-type", mode, "--", sys.executable, "-c", VSOCK)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "refused 97", r.stdout  # EAFNOSUPPORT


HIGH_BITS = r"""
import ctypes, errno, json, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
HIGH = 1 << 32  # the kernel reads these arguments as 32-bit ints: bits above are dropped, not refused
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args])
    if r >= 0 and nr == 41:
        os.close(r)
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
one = ctypes.c_int(1)
p_one = ctypes.c_void_p(ctypes.addressof(one))
tcp = socket.socket()
owner = ctypes.create_string_buffer(struct.pack("ii", 2, os.getpgrp()))  # F_OWNER_PGRP
print(json.dumps({
    "socket vsock": call(41, 40 | HIGH, socket.SOCK_STREAM, 0),
    "setsockopt SO_REUSEPORT": call(54, tcp.fileno(), socket.SOL_SOCKET | HIGH, 15, p_one, 4),
    "setsockopt TCP_FASTOPEN_CONNECT": call(54, tcp.fileno(), socket.IPPROTO_TCP | HIGH, 30, p_one, 4),
    "fcntl F_SETOWN to the group": call(72, tcp.fileno(), 8 | HIGH, -max(os.getpgrp(), 1)),  # (0 in nsjail)
    "fcntl F_SETOWN_EX": call(72, tcp.fileno(), 15 | HIGH, ctypes.c_void_p(ctypes.addressof(owner))),
}), flush=True)
"""
# what each mode refuses when the argument is plain (the filter's own claims): the same with high bits set
HIGH_BITS_REFUSED = {
    "nsjail": {"socket vsock": "EAFNOSUPPORT", "fcntl F_SETOWN to the group": "EPERM", "fcntl F_SETOWN_EX": "EPERM"},
    "landjail": {"socket vsock": "EAFNOSUPPORT", "setsockopt SO_REUSEPORT": "EPERM",
                 "setsockopt TCP_FASTOPEN_CONNECT": "EACCES", "fcntl F_SETOWN to the group": "EPERM",
                 "fcntl F_SETOWN_EX": "EPERM"},
}  # fmt: skip


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_high_bits_in_a_32_bit_argument_do_not_slip_past_the_filter(tmp_path: Path, mode: str) -> None:
    """seccomp sees all 64 bits of an argument the kernel reads as an int: a rule comparing the whole register
    missed socket(AF_VSOCK | 1 << 32) in nsjail (outside review), and setsockopt/fcntl the same way."""
    (tmp_path / "high.py").write_text(HIGH_BITS)
    outside = json.loads(subprocess.run([sys.executable, str(tmp_path / "high.py")], capture_output=True, text=True,
                                        check=True, timeout=60).stdout)  # fmt: skip
    for name in ("setsockopt SO_REUSEPORT", "setsockopt TCP_FASTOPEN_CONNECT", "fcntl F_SETOWN to the group",
                 "fcntl F_SETOWN_EX"):  # fmt: skip
        assert outside[name] == "ok", (name, outside)  # unconfined, the kernel takes them (high bits dropped)
    r = boundary_run(tmp_path, "--jail-type", mode, "--", sys.executable, str(tmp_path / "high.py"))
    assert r.returncode == 0, r.stderr
    inside = json.loads(r.stdout)
    for name, want in HIGH_BITS_REFUSED[mode].items():
        assert inside[name] == want, (name, inside)
