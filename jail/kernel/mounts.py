"""The mount plan: built as data by a pure function, applied in the jail's
private mount namespace by the setup child.

Generated files (resolv.conf) are written to a staging tmpfs mounted over /tmp
in the private namespace, bind-mounted onto their targets, and the staging
mount is detached again: nothing is ever written on the host.
Hidden paths get an empty read-only tmpfs (directories) or /dev/null (files,
sockets). The command cannot undo any of it: it holds no capability over this
mount namespace, and in a namespace of its own these mounts are locked.
Side effects: mount(2) in the caller's mount namespace.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import syscalls

STAGING = "/tmp"


@dataclass(frozen=True, slots=True)
class Plan:
    files: Mapping[str, bytes] = field(default_factory=dict)  # target -> content (read-only)
    hide: tuple[str, ...] = ()


def dns_and_socket_holes(uid: int) -> tuple[str, ...]:
    """Paths that would carry traffic around a network namespace: pathname unix
    sockets of resolvers (hosts: resolve / nscd), the session bus and agents,
    and container engines."""
    return (
        "/run/nscd", "/var/run/nscd", "/run/systemd/resolve", "/run/dbus/system_bus_socket",
        f"/run/user/{uid}", "/run/docker.sock", "/var/run/docker.sock", "/run/podman", "/run/containerd",
        "/var/run/containerd", "/run/crio",
    )  # fmt: skip


def resolv_conf(nameservers: Iterable[str]) -> bytes:
    return "".join(f"nameserver {ns}\n" for ns in nameservers).encode() + b"options attempts:2 timeout:2\n"


def plan_for(uid: int, nameservers: Iterable[str], extra_hide: Iterable[str] = ()) -> Plan:
    return Plan(files={"/etc/resolv.conf": resolv_conf(nameservers)}, hide=(*dns_and_socket_holes(uid), *extra_hide))


def _existing(path: str) -> tuple[str, os.stat_result] | None:
    real = os.path.realpath(path)
    try:
        return real, os.stat(real)
    except OSError:
        return None


def _bind_ro(source: str, target: str) -> None:
    syscalls.mount(source, target, None, syscalls.MS_BIND)
    syscalls.mount(None, target, None, syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY)


HIDDEN_DIR_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


def apply(plan: Plan) -> None:
    """Apply in the current (private) mount namespace. Raises OSError naming the mount that failed.

    Order: hide, then place the files, then make the hiding tmpfs read-only. A file whose real
    path lies in a hidden directory (resolv.conf -> /run/systemd/resolve/stub-resolv.conf) is
    created inside that empty tmpfs first, so the symlink still leads to our content.
    """
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    hidden_dirs: list[str] = []
    for path in plan.hide:
        found = _existing(path)
        if found is None:
            continue
        real, st = found
        if stat.S_ISDIR(st.st_mode):
            syscalls.mount("tmpfs", real, "tmpfs", HIDDEN_DIR_FLAGS, "size=16k,mode=755")
            hidden_dirs.append(real)
        else:
            _bind_ro("/dev/null", real)
    if plan.files:
        _place_files(plan.files, hidden_dirs)
    for d in hidden_dirs:
        syscalls.mount(None, d, None, syscalls.MS_REMOUNT | HIDDEN_DIR_FLAGS | syscalls.MS_RDONLY, "size=16k,mode=755")


def _place_files(files: Mapping[str, bytes], hidden_dirs: list[str]) -> None:
    syscalls.mount("tmpfs", STAGING, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=1m,mode=700")
    try:
        for n, (target, content) in enumerate(files.items()):
            real = os.path.realpath(target)
            if not os.path.exists(real) and any(real.startswith(d + "/") for d in hidden_dirs):
                os.makedirs(os.path.dirname(real), exist_ok=True)  # inside our own empty tmpfs
                open(real, "wb").close()
            found = _existing(real)
            if found is None or not stat.S_ISREG(found[1].st_mode):
                continue  # nothing to cover (and never create files on the host)
            src = f"{STAGING}/f{n}"
            with open(src, "wb") as f:
                f.write(content)
            os.chmod(src, 0o644)
            _bind_ro(src, found[0])
    finally:
        syscalls.umount2(STAGING, syscalls.MNT_DETACH)


def mount_proc() -> None:
    """A fresh /proc for the current pid namespace (call as its pid 1)."""
    syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
