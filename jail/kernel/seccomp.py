"""The seccomp baseline (libseccomp through pyseccomp).

Both modes: no terminal injection (TIOCSTI/TIOCLINUX), no new namespaces or mounts, and none
of the kernel interfaces a command has no business with (keyrings, bpf, perf, userfaultfd,
kexec, modules, io_uring).
landjail adds what Landlock does not cover on this kernel generation: every protocol over IP but
TCP and UDP (MPTCP and SMC fall back to TCP and escape Landlock's TCP rules; UDP only where the
socket supervisor routes it, jail.inet, else none), TCP fast open (MSG_FASTOPEN connects without
connect()) and exotic socket families.

Syscalls of other ABIs (i386, x32) kill the process (libseccomp's bad-arch action).
Side effects: loads a filter into the calling thread (needs no_new_privs first).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

import pyseccomp as sc

ALLOWED_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
MAX_FAMILY = 64
BAD_SOCK_TYPES = (socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_RDM, socket.SOCK_SEQPACKET, 6, 10)
MSG_FASTOPEN = 0x20000000
TCP_FASTOPEN_CONNECT = 30
SO_REUSEPORT, SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF = 15, 51, 52
# netlink protocols a command may open: routes and addresses, socket diagnostics, uevents, generic netlink (none
# lets an unprivileged sender reach another process); NETLINK_USERSOCK (2) would, to any process of any user
NETLINK_ALLOWED = (0, 4, 15, 16)
NETLINK_MAX = 32
PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
FIOSETOWN = 0x8901
SIOCSPGRP = 0x8902
F_SETOWN = 8
F_SETOWN_EX = 15
FORBIDDEN_CALLS = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "add_key", "request_key", "keyctl", "bpf",
    "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module",
)  # fmt: skip


NS_FLAGS = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
AF_VSOCK = 40  # to the hypervisor or host: not confined by a network namespace
SYSV_IPC_CALLS = ("shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop",
                  "semtimedop", "semctl")  # fmt: skip
MOUNT_CALLS = ("mount", "umount2", "pivot_root", "setns", "open_tree", "move_mount", "fsopen", "fsmount", "fspick",
               "mount_setattr")  # fmt: skip


def _eq(arg: int, value: int) -> Any:
    """Argument ``arg`` equals ``value`` as the kernel reads it: a 32-bit int (family, level, option, command). seccomp
    sees the whole 64-bit register, whose upper half the kernel drops: a plain comparison missed
    ``socket(AF_VSOCK | 1 << 32)`` (outside review)."""
    return sc.Arg(arg, sc.MASKED_EQ, 0xFFFFFFFF, value)


def build(*, network: bool, udp: bool = False, namespaces: bool = False) -> sc.SyscallFilter:
    """``network``: the landjail socket rules too (nsjail's network namespace already confines sockets);
    ``udp``: UDP sockets may be made (the socket supervisor routes them); ``namespaces`` (nsjail's
    --nested-userns): new namespaces and mounts in them are allowed (what the jail mounted stays locked in them)."""
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    _common(f, namespaces=namespaces)
    if network:
        _sockets(f, udp=udp)
        _others(f)
    return f


def _common(f: sc.SyscallFilter, *, namespaces: bool = False) -> None:
    for req in (TIOCSTI, TIOCLINUX, FIOSETOWN, SIOCSPGRP):
        f.add_rule(sc.ERRNO(errno.EPERM), "ioctl", _eq(1, req))
    # SIGIO to a process group (F_SETOWN with a negative id, F_SETOWN_EX) would reach boundary, which shares the
    # command's process group (the terminal's); the command's own processes remain allowed
    f.add_rule(sc.ERRNO(errno.EPERM), "fcntl", _eq(1, F_SETOWN), sc.Arg(2, sc.MASKED_EQ, 1 << 31, 1 << 31))
    f.add_rule(sc.ERRNO(errno.EPERM), "fcntl", _eq(1, F_SETOWN_EX))
    for name in FORBIDDEN_CALLS:
        f.add_rule(sc.ERRNO(errno.ENOSYS if name.startswith("io_uring") else errno.EPERM), name)
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", _eq(0, AF_VSOCK))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # flags sit in a struct seccomp cannot read: libc falls back to clone
    if namespaces:
        return
    # no new namespaces or mounts: neither mode needs them inside, and they are kernel attack surface
    for name in MOUNT_CALLS:
        f.add_rule(sc.ERRNO(errno.EPERM), name)
    for bit in range(32):
        if NS_FLAGS & (1 << bit):
            f.add_rule(sc.ERRNO(errno.EPERM), "unshare", sc.Arg(0, sc.MASKED_EQ, 1 << bit, 1 << bit))
            f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, 1 << bit, 1 << bit))


def _others(f: sc.SyscallFilter) -> None:
    """landjail (no pid or IPC namespace: the user's other processes are in reach): no changing another process's
    priority, I/O priority, scheduling or resource limits (same-uid processes are fair game for these otherwise),
    no SysV IPC."""
    deny = sc.ERRNO(errno.EPERM)
    for name, self_kind in (("setpriority", PRIO_PROCESS), ("ioprio_set", IOPRIO_WHO_PROCESS)):
        f.add_rule(deny, name, sc.Arg(0, sc.NE, self_kind))  # one process (not a group or a user)...
        f.add_rule(deny, name, sc.Arg(1, sc.NE, 0))  # ...the caller itself
    f.add_rule(deny, "prlimit64", sc.Arg(0, sc.NE, 0))
    for name in ("sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr"):
        f.add_rule(deny, name, sc.Arg(0, sc.NE, 0))  # another process (0 is the caller itself)
    # SysV shared memory, message queues and semaphores are the user's, machine-wide, without an IPC namespace:
    # a two-way channel to any process of the user that uses them (X11 MIT-SHM, databases)
    for name in SYSV_IPC_CALLS:
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            f.add_rule(deny, name)
    # Landlock does not govern chmod: no widening any file to group/others or setting setuid/setgid/sticky
    # (~/.bashrc 0666 or ~ 0777 would open the user's account to every local user); chmod that narrows is left
    for name, arg in (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2)):
        with contextlib.suppress(RuntimeError, ValueError, OSError):  # fchmodat2: libseccomp may not know it
            for bit in (0o4000, 0o2000, 0o1000, 0o020, 0o002):
                f.add_rule(deny, name, sc.Arg(arg, sc.MASKED_EQ, bit, bit))


def _sockets(f: sc.SyscallFilter, *, udp: bool) -> None:
    deny = sc.ERRNO(errno.EACCES)
    for fam in range(MAX_FAMILY):
        if fam not in ALLOWED_FAMILIES:
            f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", _eq(0, fam))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GE, MAX_FAMILY))
    bad_types = [t for t in BAD_SOCK_TYPES if not (udp and t == socket.SOCK_DGRAM)]
    for fam in (socket.AF_INET, socket.AF_INET6):
        for t in bad_types:
            f.add_rule(deny, "socket", _eq(0, fam), sc.Arg(1, sc.MASKED_EQ, 0xF, t))
        # protocol 0 (the type's default) and TCP; UDP (17) only as a datagram socket, when it is routed
        for proto in (*range(1, socket.IPPROTO_TCP), *range(socket.IPPROTO_TCP + 1, socket.IPPROTO_UDP)):
            f.add_rule(deny, "socket", _eq(0, fam), _eq(2, proto))
        f.add_rule(deny, "socket", _eq(0, fam), sc.Arg(2, sc.GT, socket.IPPROTO_UDP))
        f.add_rule(deny, "socket", _eq(0, fam), sc.Arg(1, sc.MASKED_EQ, 0xF, socket.SOCK_STREAM),
                   _eq(2, socket.IPPROTO_UDP))  # fmt: skip
        if not udp:
            f.add_rule(deny, "socket", _eq(0, fam), _eq(2, socket.IPPROTO_UDP))
    f.add_rule(deny, "sendto", sc.Arg(3, sc.MASKED_EQ, MSG_FASTOPEN, MSG_FASTOPEN))
    f.add_rule(deny, "sendmsg", sc.Arg(2, sc.MASKED_EQ, MSG_FASTOPEN, MSG_FASTOPEN))
    f.add_rule(deny, "sendmmsg", sc.Arg(3, sc.MASKED_EQ, MSG_FASTOPEN, MSG_FASTOPEN))
    f.add_rule(deny, "setsockopt", _eq(1, socket.IPPROTO_TCP), _eq(2, TCP_FASTOPEN_CONNECT))
    # a socket sharing a port with one of the user's servers outside (same uid) would take over its connections
    for opt in (SO_REUSEPORT, SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF):
        f.add_rule(sc.ERRNO(errno.EPERM), "setsockopt", _eq(1, socket.SOL_SOCKET), _eq(2, opt))
    for proto in range(NETLINK_MAX):
        if proto not in NETLINK_ALLOWED:
            f.add_rule(deny, "socket", _eq(0, socket.AF_NETLINK), _eq(2, proto))
    f.add_rule(deny, "socket", _eq(0, socket.AF_NETLINK), sc.Arg(2, sc.GE, NETLINK_MAX))


def load(*, network: bool, udp: bool = False, namespaces: bool = False) -> None:
    build(network=network, udp=udp, namespaces=namespaces).load()
