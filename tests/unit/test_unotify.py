"""The notification filter (pure): a small interpreter runs its BPF on seccomp_data for each case."""

from __future__ import annotations

import struct

import pytest

from jail.kernel import unotify

A = unotify.ARCHES["x86_64"]
ALLOW, NOTIFY = unotify.RET_ALLOW, unotify.RET_USER_NOTIF


def run(prog: bytes, nr: int, args: tuple[int, ...] = (0,) * 6, arch: int = A.audit) -> int:
    data = struct.pack("=iIQ6Q", nr, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in (*args, *(0,) * (6 - len(args)))])
    ins = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == unotify.LD_W_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == unotify.JEQ_K:
            pc += jt if acc == k else jf
        elif code == unotify.JSET_K:
            pc += jt if acc & k else jf
        elif code == unotify.RET_K:
            return k
        else:
            raise AssertionError(f"unknown opcode {code:#x}")
        pc += 1


CASES = [
    ("connect", (3, 0, 16), False, False, NOTIFY),
    ("sendmsg", (3, 0, 0), False, False, NOTIFY),
    ("sendmmsg", (3, 0, 1), False, False, NOTIFY),
    ("sendto", (3, 0, 1, 0, 0, 0), False, False, ALLOW),  # no address: a connected socket
    ("sendto", (3, 0, 1, 0, 0x7FFF00001000, 16), False, False, NOTIFY),
    ("sendto", (3, 0, 1, 0, 1 << 32, 16), False, False, NOTIFY),  # an address above 4 GiB
    ("bind", (3, 0, 16), False, False, ALLOW),
    ("bind", (3, 0, 16), True, False, NOTIFY),
    ("kill", (1234, 9), False, True, ALLOW),
    ("kill", (0, 9), False, True, NOTIFY),  # the caller's process group
    ("kill", (-1, 9), False, True, ALLOW),  # every process it may signal: its own pid namespace only
    ("kill", (-77, 9), False, True, NOTIFY),  # a process group
    ("kill", (0, 9), False, False, ALLOW),
    ("listen", (3, 5), False, False, ALLOW),
    ("listen", (3, 5), True, False, NOTIFY),
    ("recvfrom", (3, 0, 512, 0, 0, 0), True, False, ALLOW),  # no address wanted: the common read
    ("recvfrom", (3, 0, 512, 0, 0x7FFF00001000, 0x7FFF00002000), True, False, NOTIFY),
    ("recvfrom", (3, 0, 512, 0, 0x7FFF00001000, 0x7FFF00002000), False, False, ALLOW),
]


@pytest.mark.parametrize(("name", "args", "inet", "groups", "want"), CASES)
def test_the_filter(name: str, args: tuple[int, ...], inet: bool, groups: bool, want: int) -> None:
    prog = unotify.program(A, inet=inet, groups=groups)
    assert run(prog, A.nr[name], args) == want


def test_other_calls_and_other_abis_pass_to_the_other_filter() -> None:
    prog = unotify.program(A, inet=True, groups=True)
    assert run(prog, 1, (1, 0, 5)) == ALLOW  # write
    assert run(prog, A.nr["connect"], (3, 0, 16), arch=0x40000003) == ALLOW  # i386: the other filter kills it
