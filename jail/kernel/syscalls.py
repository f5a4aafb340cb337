"""Thin ctypes wrappers for the syscalls Python 3.11's ``os`` lacks: unshare,
setns, mount, umount2, prctl. Every failure raises OSError with the errno and
the call's name, so callers can wrap it as "failed to <step>".

Side effects: exactly the syscalls named.
"""

from __future__ import annotations

import ctypes
import os

# CDLL("libc.so.6"), not find_library: find_library forks ldconfig (+10 ms)
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_RELATIME = 1 << 21
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def _check(ret: int, call: str, arg: str = "") -> None:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}({arg}): {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(libc.unshare(ctypes.c_int(flags)), "unshare", hex(flags))


def setns(fd: int, nstype: int) -> None:
    _check(libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", hex(nstype))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    ret = libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(ret, "mount", f"{source!r} on {target!r}")


def umount2(target: str, flags: int) -> None:
    _check(libc.umount2(os.fsencode(target), ctypes.c_int(flags)), "umount2", repr(target))


def prctl(option: int, arg: int) -> None:
    ret = libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(ret, "prctl", str(option))
