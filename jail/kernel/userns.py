"""User namespaces: enter one and map the caller's ids (no newuidmap helper,
so single-line maps only).

``enter_as_root`` maps the caller's uid/gid to 0 inside, which the setup child
needs so exec'd helpers (nft, iptables) keep their capabilities.
``enter_nested`` maps the user's own uid back on top of that 0, which leaves the
command with no capability over any namespace the outer one owns.
Side effects: unshare(CLONE_NEWUSER | extra), writes /proc/self/{setgroups,uid_map,gid_map}.
"""

from __future__ import annotations

import os

from . import syscalls


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _map(inside_uid: int, outside_uid: int, inside_gid: int, outside_gid: int) -> None:
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{inside_uid} {outside_uid} 1\n")
    _write("/proc/self/gid_map", f"{inside_gid} {outside_gid} 1\n")


def enter_as_root(extra_flags: int = 0) -> tuple[int, int]:
    """unshare(CLONE_NEWUSER|extra_flags) and map 0 -> the caller. Returns the caller's (uid, gid).

    The ids are read before unshare: afterwards they read as the overflow id (65534).
    """
    uid, gid = os.geteuid(), os.getegid()
    syscalls.unshare(syscalls.CLONE_NEWUSER | extra_flags)
    _map(0, uid, 0, gid)
    return uid, gid


def enter_nested(uid: int, gid: int) -> None:
    """From uid 0 of an outer userns: a new userns where we are ``uid``/``gid`` again, without capabilities."""
    syscalls.unshare(syscalls.CLONE_NEWUSER)
    _map(uid, 0, gid, 0)
