"""seccomp user notification (SECCOMP_RET_USER_NOTIF, Linux 5.0+): a filter that hands the
command's address-taking socket calls (connect, bind, sendto with an address, sendmsg,
sendmmsg) to boundary, and the supervisor's side of it: receive a notification, read the
target's memory, take a duplicate of its file descriptor (pidfd_getfd, 5.6+), resolve a path
as the target would (openat2, 5.6+), answer.

The filter is a few BPF instructions written here (pure, testable); the syscall numbers are
per architecture. It is loaded with SECCOMP_FILTER_FLAG_NEW_LISTENER, and where the kernel
has it (5.19+) SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, so that once boundary has taken a
notification only a fatal signal interrupts the call (an emulated connect is never replayed).
A second filter (jail.kernel.seccomp) is loaded beside it: when both match, its ERRNO answers
win over USER_NOTIF (the kernel takes the most restrictive action of all filters).

Side effects: seccomp(2) in the calling thread; ioctl, process_vm_readv, pidfd_* on the
supervisor side.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .syscalls import libc

SECCOMP_SET_MODE_FILTER = 1
FLAG_NEW_LISTENER = 1 << 3
FLAG_WAIT_KILLABLE_RECV = 1 << 5
RET_ALLOW = 0x7FFF0000
RET_USER_NOTIF = 0x7FC00000
USER_NOTIF_FLAG_CONTINUE = 1
IOCTL_NOTIF_RECV = 0xC0502100
IOCTL_NOTIF_SEND = 0xC0182101
IOCTL_NOTIF_ID_VALID = 0x40082102
PIDFD_THREAD = os.O_EXCL
RESOLVE_IN_ROOT = 0x10
RESOLVE_NO_MAGICLINKS = 0x02

# BPF opcodes and the offsets of struct seccomp_data
LD_W_ABS, JEQ_K, JSET_K, RET_K = 0x20, 0x15, 0x45, 0x06
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16


@dataclass(frozen=True, slots=True)
class Arch:
    audit: int
    nr: dict[str, int]


ARCHES = {
    "x86_64": Arch(0xC000003E, {
        "connect": 42, "sendto": 44, "recvfrom": 45, "sendmsg": 46, "bind": 49, "listen": 50, "kill": 62,
        "sendmmsg": 307, "seccomp": 317, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_open": 434,
        "openat2": 437, "pidfd_getfd": 438,
    }),
    "aarch64": Arch(0xC00000B7, {
        "connect": 203, "sendto": 206, "recvfrom": 207, "sendmsg": 211, "bind": 200, "listen": 201, "kill": 129,
        "sendmmsg": 269, "seccomp": 277, "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_open": 434,
        "openat2": 437, "pidfd_getfd": 438,
    }),
}  # fmt: skip
NOTIFIED = ("connect", "sendmsg", "sendmmsg")  # always; sendto only with an address; the rest on request


@functools.cache
def arch() -> Arch:
    machine = platform.machine()
    if machine not in ARCHES:
        raise OSError(errno.ENOSYS, f"no seccomp notification support for {machine}")
    return ARCHES[machine]


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(a: Arch, *, inet: bool, groups: bool = False) -> bytes:
    """The filter as struct sock_filter[]: notify connect, sendmsg, sendmmsg, sendto with a non-NULL
    address; when ``inet`` (landjail, where boundary routes internet sockets too) also bind, listen and
    recvfrom with a non-NULL address; when ``groups``, kill aimed at a process group (pid 0 or < -1,
    which reach every member of the group, boundary included when the command shares its group); allow
    everything else (the other filter decides the rest, including calls of other ABIs)."""
    lo4, hi4 = _arg(4)
    lo0, _ = _arg(0)
    code: list[tuple[int, int, str | None, str | None]] = [
        (LD_W_ABS, OFF_ARCH, None, None), (JEQ_K, a.audit, None, "allow"), (LD_W_ABS, OFF_NR, None, None),
    ]  # fmt: skip
    for name in (*NOTIFIED, *(("bind", "listen") if inet else ())):
        code.append((JEQ_K, a.nr[name], "notify", None))
    code.append((JEQ_K, a.nr["sendto"], "addr4", None))
    if inet:
        code.append((JEQ_K, a.nr["recvfrom"], "addr4", None))
    if groups:
        code.append((JEQ_K, a.nr["kill"], "kill", None))
    code.append((RET_K, RET_ALLOW, None, None))  # none of those
    labels = {"addr4": len(code)}  # argument 4 (the address) NULL: allowed, else notified
    code += [(LD_W_ABS, lo4, None, None), (JEQ_K, 0, None, "notify"), (LD_W_ABS, hi4, None, None),
             (JEQ_K, 0, "allow", "notify")]  # fmt: skip
    if groups:
        labels["kill"] = len(code)
        code += [(LD_W_ABS, lo0, None, None), (JEQ_K, 0, "notify", None), (JEQ_K, 0xFFFFFFFF, "allow", None),
                 (JSET_K, 0x80000000, "notify", "allow")]  # fmt: skip
    labels["allow"] = len(code)  # BPF jumps only forward: the blocks above end here or at notify
    code.append((RET_K, RET_ALLOW, None, None))
    labels["notify"] = len(code)
    code.append((RET_K, RET_USER_NOTIF, None, None))
    out = []
    for i, (op, k, jt, jf) in enumerate(code):
        t = labels[jt] - i - 1 if jt else 0
        f = labels[jf] - i - 1 if jf else 0
        out.append(_ins(op, k, t, f))
    return b"".join(out)


def _arg(n: int) -> tuple[int, int]:
    """Offsets of the low and high 32 bits of syscall argument ``n`` in struct seccomp_data."""
    base = OFF_ARGS + 8 * n
    return (base, base + 4) if _little() else (base + 4, base)


def _little() -> bool:
    import sys

    return sys.byteorder == "little"


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _syscall(name: str, *args: object) -> int:
    ret = int(libc.syscall(ctypes.c_long(arch().nr[name]), *args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


def install(*, inet: bool, groups: bool = False) -> int:
    """Load the notification filter into the calling thread (no_new_privs must be set); return
    the listener fd. Raises OSError (ENOSYS/EINVAL where the kernel lacks user notification)."""
    code = program(arch(), inet=inet, groups=groups)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    flags = FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV
    try:
        return _syscall("seccomp", ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags), ctypes.byref(prog))
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    # before 5.19: no WAIT_KILLABLE_RECV (a signal may then replay an answered call)
    return _syscall(
        "seccomp", ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(FLAG_NEW_LISTENER), ctypes.byref(prog)
    )


# -- the supervisor's side -------------------------------------------------
_NOTIF = struct.Struct("=QII iIQ 6Q")  # id, pid, flags, nr, arch, ip, args[6]
_RESP = struct.Struct("=QqiI")  # id, val, error, flags


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    pid: int  # the calling thread, as seen from the supervisor's pid namespace
    nr: int
    args: tuple[int, ...]


def receive(listener: int) -> Notification | None:
    """The next notification (call when the listener is readable); None when the caller vanished."""
    buf = ctypes.create_string_buffer(_NOTIF.size)  # zeroed, as the kernel requires
    if libc.ioctl(ctypes.c_int(listener), ctypes.c_ulong(IOCTL_NOTIF_RECV), buf) < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOENT, errno.EINTR):
            return None
        raise OSError(err, f"SECCOMP_IOCTL_NOTIF_RECV: {os.strerror(err)}")
    nid, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf.raw)
    return Notification(nid, pid, nr, tuple(args))


def respond(listener: int, nid: int, *, val: int = 0, error: int = 0, cont: bool = False) -> None:
    """Answer: ``error`` an errno (the call fails with it), else ``val`` is its return value;
    ``cont``: let the kernel run the call itself. A caller that vanished meanwhile is ignored."""
    buf = ctypes.create_string_buffer(_RESP.pack(nid, val, -error, USER_NOTIF_FLAG_CONTINUE if cont else 0))
    if libc.ioctl(ctypes.c_int(listener), ctypes.c_ulong(IOCTL_NOTIF_SEND), buf) < 0:
        err = ctypes.get_errno()
        if err != errno.ENOENT:
            raise OSError(err, f"SECCOMP_IOCTL_NOTIF_SEND: {os.strerror(err)}")


def still_waiting(listener: int, nid: int) -> bool:
    """True while the notifying thread still waits for this answer (so its pid was not reused)."""
    cid = ctypes.c_uint64(nid)
    return bool(libc.ioctl(ctypes.c_int(listener), ctypes.c_ulong(IOCTL_NOTIF_ID_VALID), ctypes.byref(cid)) == 0)


class _IOVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


def read_memory(pid: int, addr: int, size: int) -> bytes:
    """``size`` bytes at ``addr`` in process ``pid`` (process_vm_readv). Raises OSError (EFAULT)."""
    if size <= 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local, remote = _IOVec(ctypes.addressof(buf), size), _IOVec(addr, size)
    got = _syscall(
        "process_vm_readv", ctypes.c_long(pid), ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote),
        ctypes.c_ulong(1), ctypes.c_ulong(0),
    )  # fmt: skip
    if got != size:
        raise OSError(errno.EFAULT, "short read of the caller's memory")
    return buf.raw


def write_memory(pid: int, addr: int, data: bytes) -> None:
    """Write ``data`` at ``addr`` in process ``pid`` (process_vm_writev). Raises OSError (EFAULT)."""
    if not data:
        return
    buf = ctypes.create_string_buffer(data, len(data))
    local, remote = _IOVec(ctypes.addressof(buf), len(data)), _IOVec(addr, len(data))
    got = _syscall(
        "process_vm_writev", ctypes.c_long(pid), ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote),
        ctypes.c_ulong(1), ctypes.c_ulong(0),
    )  # fmt: skip
    if got != len(data):
        raise OSError(errno.EFAULT, "short write to the caller's memory")


def pidfd_open_thread(tid: int) -> int:
    """A pidfd for the thread ``tid`` (PIDFD_THREAD, 6.9+; else the thread-group leader only)."""
    try:
        return _syscall("pidfd_open", ctypes.c_int(tid), ctypes.c_uint(PIDFD_THREAD))
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    return _syscall("pidfd_open", ctypes.c_int(tid), ctypes.c_uint(0))


def take_fd(pidfd: int, fd: int) -> int:
    """A duplicate, in this process, of the target's ``fd`` (same open file: same socket)."""
    return _syscall("pidfd_getfd", ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def open_in_root(root_fd: int, path: bytes) -> int:
    """O_PATH fd of ``path`` resolved with ``root_fd`` as "/" (RESOLVE_IN_ROOT: absolute symlinks and
    ".." stay inside it, as they do for a process whose root that is)."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    return _syscall(
        "openat2", ctypes.c_int(root_fd), ctypes.c_char_p(path), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
    )


def raw_call(fn: str, fd: int, *args: object) -> int:
    """``fn`` (connect, bind, sendto) of libc on ``fd`` with raw arguments: the result, or -errno."""
    ret = int(getattr(libc, fn)(ctypes.c_int(fd), *args))
    return ret if ret >= 0 else -ctypes.get_errno()


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint), ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int),
    )  # fmt: skip


def sendmsg(fd: int, name: bytes | None, data: bytes, control: bytes, flags: int) -> int:
    """sendmsg(2) of one buffer with raw address and control bytes: bytes sent, or -errno."""
    nbuf = ctypes.create_string_buffer(name, len(name)) if name else None
    dbuf = ctypes.create_string_buffer(data, max(len(data), 1))
    cbuf = ctypes.create_string_buffer(control, len(control)) if control else None
    iov = _IOVec(ctypes.addressof(dbuf), len(data))
    msg = _MsgHdr(
        ctypes.addressof(nbuf) if nbuf else None, len(name) if name else 0, ctypes.addressof(iov), 1,
        ctypes.addressof(cbuf) if cbuf else None, len(control), 0,
    )  # fmt: skip
    ret = int(libc.sendmsg(ctypes.c_int(fd), ctypes.byref(msg), ctypes.c_int(flags)))
    return ret if ret >= 0 else -ctypes.get_errno()


def recvfrom(fd: int, size: int, flags: int) -> tuple[int, bytes, bytes]:
    """recvfrom(2): (the call's result or -errno, the bytes received, the sender's raw address)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    addr = ctypes.create_string_buffer(128)
    alen = ctypes.c_uint(128)
    ret = int(
        libc.recvfrom(ctypes.c_int(fd), buf, ctypes.c_size_t(size), ctypes.c_int(flags), addr, ctypes.byref(alen))
    )
    if ret < 0:
        return -ctypes.get_errno(), b"", b""
    return ret, buf.raw[: min(ret, size)], addr.raw[: min(alen.value, 128)]


def sockaddr_args(raw: bytes) -> Sequence[object]:
    return (ctypes.c_char_p(raw), ctypes.c_uint(len(raw)))
