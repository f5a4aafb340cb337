"""Landlock through ctypes (syscalls 444-446 on x86_64 and aarch64): a ruleset that handles
every right the running ABI knows, then grants some back.

Vendored rather than a PyPI binding: `landlock` 1.0.0.dev5 has no network rules; this module
shows exactly which right is enforced at which ABI. Rights used (ABI: what it adds):
1 filesystem basics, 2 REFER, 3 TRUNCATE, 4 TCP bind/connect by port, 5 IOCTL_DEV,
6 scoping of abstract unix sockets and signals. Landlock is per thread and irreversible:
call :func:`restrict` single-threaded, after every import, right before exec.
Side effects: landlock(2) syscalls, opening the granted paths with O_PATH.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from .syscalls import libc as _libc

NR_CREATE_RULESET, NR_ADD_RULE, NR_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2
MIN_ABI = 4  # below this Landlock cannot restrict TCP: refuse, never run unconfined

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV  # valid on a non-directory
READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
WRITE = (1 << 16) - 1  # everything; masked to the ABI
DEVICE = FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))  # fmt: skip


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPort(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


def _sys(nr: int, *args: object) -> int:
    ret = int(_libc.syscall(ctypes.c_long(nr), *args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def abi_version() -> int:
    """0 when Landlock is absent or disabled."""
    try:
        return _sys(NR_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError:
        return 0


def fs_rights(abi: int) -> int:
    return FS_BY_ABI[max(k for k in FS_BY_ABI if k <= abi)] if abi >= 1 else 0


@dataclass
class Policy:
    """What the command may do; everything else that the ABI can handle is denied."""

    read: list[str] = field(default_factory=list)  # read + execute
    write: list[str] = field(default_factory=list)  # everything
    devices: list[str] = field(default_factory=list)  # read/write/ioctl on device files
    connect_ports: list[int] = field(default_factory=list)
    bind_ports: list[int] | None = None  # None: any port (not handled)


@dataclass(frozen=True, slots=True)
class Applied:
    abi: int
    skipped: tuple[str, ...]  # granted paths that do not exist


def restrict(policy: Policy, abi: int | None = None) -> Applied:
    """Build the ruleset and restrict the calling thread (and whatever it execs)."""
    abi = abi_version() if abi is None else abi
    if abi < MIN_ABI:
        raise OSError(95, f"Landlock ABI {abi} cannot restrict TCP connections (ABI {MIN_ABI}+ needed)")
    fs = fs_rights(abi)
    net = NET_CONNECT_TCP | (NET_BIND_TCP if policy.bind_ports is not None else 0)
    scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0
    size = 24 if abi >= 6 else 16
    attr = _RulesetAttr(fs, net, scoped)
    fd = _sys(NR_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    skipped: list[str] = []
    try:
        grants = ((policy.read, READ), (policy.write, WRITE), (policy.devices, DEVICE))
        for paths, rights in grants:
            skipped += _add_paths(fd, paths, rights & fs)
        for port in policy.connect_ports:
            _add_port(fd, NET_CONNECT_TCP, port)
        for port in policy.bind_ports or ():
            _add_port(fd, NET_BIND_TCP, port)
        _sys(NR_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0))
    finally:
        os.close(fd)
    return Applied(abi, tuple(skipped))


def _add_paths(ruleset: int, paths: Iterable[str], rights: int) -> list[str]:
    skipped = []
    for path in paths:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            skipped.append(path)
            continue
        try:
            allowed = rights if stat.S_ISDIR(os.fstat(pfd).st_mode) else rights & FILE_RIGHTS
            rule = _PathBeneath(allowed, pfd)
            _sys(NR_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH), ctypes.byref(rule),
                 ctypes.c_uint32(0))  # fmt: skip
        finally:
            os.close(pfd)
    return skipped


def _add_port(ruleset: int, right: int, port: int) -> None:
    rule = _NetPort(right, port)
    _sys(NR_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_NET_PORT), ctypes.byref(rule), ctypes.c_uint32(0))
