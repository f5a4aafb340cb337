"""The nsjail mount plan: built as data by a pure function, applied by the setup child in the
jail's private mount namespace, in one flat order:

1. every mount propagation private; handles (O_PATH) kept on what later mounts will cover;
2. writable paths bound onto themselves, so they stay writable when
3. every other mount is remounted read-only (its locked flags kept);
4. explicit read-only paths bound read-only;
5. a fresh sysfs on /sys (read-only, nosuid/nodev/noexec), mounted from the jail's network namespace so
   /sys/class/net and the devices' net/ directories show the jail's interfaces, not the host's; the
   mounts that lived under /sys (cgroups, securityfs, ...) bound back. If the kernel refuses it, the
   host's net directories are hidden instead (step 8);
6. a minimal /dev: a tmpfs with null, zero, full, random, urandom, tty, ptmx and the
   caller's devpts bound in (so the terminal works);
7. private tmpfs on /tmp, /dev/shm (1777, size and inodes capped), with writable paths that lived there
   bound back;
8. hidden paths: an empty read-only tmpfs (directories) or /dev/null (files, sockets);
9. generated files (resolv.conf, the CA bundle) bound read-only over their targets (written to a
   staging directory in the private /tmp, which is removed again: nothing is written on the host);
10. --tmpfs excludes: empty tmpfs, mode 1777, exec allowed, capped like /tmp;
11. the working directory resolved again, so it lands in the new mounts (a writable workspace stays writable).

The command cannot undo any of it: it holds no capability over this mount namespace, and in a
namespace of its own these mounts are locked. Side effects: mount(2) in the caller's namespace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import syscalls

log = logging.getLogger(__name__)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx")
HIDDEN_DIR_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
# per-mount flags a remount must repeat (an unprivileged remount may not clear locked ones)
KEPT_FLAGS = {
    "nosuid": syscalls.MS_NOSUID, "nodev": syscalls.MS_NODEV, "noexec": syscalls.MS_NOEXEC,
    "noatime": syscalls.MS_NOATIME, "nodiratime": syscalls.MS_NODIRATIME, "relatime": syscalls.MS_RELATIME,
}  # fmt: skip
NOT_REMOUNTED = ("/proc", "/dev")  # replaced (a fresh proc by pid 1, a minimal /dev)
# an inode (an empty file, a directory) costs the kernel about 1 KiB outside tmpfs's size: one per KiB of the
# cap bounds a capped tmpfs's whole footprint to about twice the cap
INODE_BYTES = 1024
# the host's network devices in its sysfs, hidden when a fresh sysfs cannot be mounted
HOST_NET_DIRS = ("/sys/class/net", "/sys/devices/virtual/net")


@dataclass(frozen=True, slots=True)
class Plan:
    writable: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    private_tmp: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    files: Mapping[str, bytes] = field(default_factory=dict)  # target -> content (read-only)
    tmpfs: tuple[str, ...] = ()
    tmp_files: Mapping[str, bytes] = field(default_factory=dict)  # made inside the private /tmp (never the host's)
    tmpfs_size: int | None = None  # bytes, for private_tmp and tmpfs; None: the kernel's default (half of RAM)
    minimal_dev: bool = True
    fresh_sys: bool = True


def resolv_conf(nameservers: Iterable[str]) -> bytes:
    return "".join(f"nameserver {ns}\n" for ns in nameservers).encode() + b"options attempts:2 timeout:2\n"


def tmpfs_options(size: int | None) -> str:
    """Mount options of a tmpfs the command writes: mode 1777, ``size`` bytes and one inode per KiB of it
    (None: the kernel's defaults, half of RAM and an inode per two pages of RAM)."""
    if not size:
        return "mode=1777"
    return f"mode=1777,size={size},nr_inodes={max(size // INODE_BYTES, 16)}"


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def mountpoints(mountinfo: str) -> list[tuple[str, int]]:
    """(mount point, flags to keep) per line of /proc/self/mountinfo, in order."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces and friends
        flags = 0
        for opt in fields[5].split(","):
            flags |= KEPT_FLAGS.get(opt, 0)
        out.append((point, flags))
    return out


def _existing(path: str) -> tuple[str, os.stat_result] | None:
    real = os.path.realpath(path)
    try:
        return real, os.stat(real)
    except OSError:
        return None


def _bind(source: str, target: str, *, recursive: bool = True) -> None:
    syscalls.mount(source, target, None, syscalls.MS_BIND | (syscalls.MS_REC if recursive else 0))


def _remount_ro(target: str, keep: int) -> None:
    syscalls.mount(None, target, None, syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY | keep)


def _bind_ro(source: str, target: str) -> None:
    _bind(source, target, recursive=False)
    _remount_ro(target, _flags_of(target))


def _flags_of(target: str) -> int:
    st = os.statvfs(target)
    flags = 0
    for bit, ms in ((os.ST_NOSUID, syscalls.MS_NOSUID), (os.ST_NODEV, syscalls.MS_NODEV),
                    (os.ST_NOEXEC, syscalls.MS_NOEXEC), (os.ST_NOATIME, syscalls.MS_NOATIME),
                    (os.ST_NODIRATIME, syscalls.MS_NODIRATIME), (os.ST_RELATIME, syscalls.MS_RELATIME)):  # fmt: skip
        if st.f_flag & bit:
            flags |= ms
    return flags


def _touch(path: str, directory: bool) -> None:
    os.makedirs(path if directory else os.path.dirname(path), exist_ok=True)
    if not directory and not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


class _Kept:
    """O_PATH handles on sources a later mount covers; bound back through /proc/self/fd."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def keep(self, path: str) -> None:
        if path not in self.fds:
            with contextlib.suppress(OSError):
                self.fds[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)

    def source(self, path: str) -> str:
        return f"/proc/self/fd/{self.fds[path]}"

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def apply(plan: Plan) -> None:
    """Apply in the current (private) mount namespace. Raises OSError naming the mount that failed."""
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    cwd = os.getcwd()
    writable = [
        f[0] for p in plan.writable if (f := _existing(p)) and stat.S_ISDIR(f[1].st_mode) | stat.S_ISREG(f[1].st_mode)
    ]  # files too: a home split into its entries has some at its top level
    read_only = [f[0] for p in plan.read_only if (f := _existing(p))]
    kept = _Kept()
    try:
        for p in (*writable, *read_only):
            kept.keep(p)
        if plan.minimal_dev:
            for d in DEVICES:
                kept.keep(f"/dev/{d}")
            kept.keep("/dev/pts")
        for w in writable:
            _bind(w, w)
        with open("/proc/self/mountinfo", encoding="utf-8") as info:
            points = mountpoints(info.read())
        for point, keep in points:
            if any(under(point, n) for n in NOT_REMOUNTED) or any(under(point, w) for w in writable):
                continue
            with contextlib.suppress(FileNotFoundError):  # covered by a later mount in the list
                _remount_ro(point, keep)
        for r in read_only:
            _bind_ro(r, r)
        hide = plan.hide
        if plan.fresh_sys and not _fresh_sys():
            hide = (*hide, *_host_net_dirs())
        if plan.minimal_dev:
            _minimal_dev(kept)
        writable_tmpfs = tmpfs_options(plan.tmpfs_size)
        for t in plan.private_tmp:
            _private_tmp(t, kept, writable, read_only, writable_tmpfs)
        _write_tmp_files(plan.tmp_files, plan.private_tmp)
        hidden_dirs = _hide(hide)
        if plan.files:
            _place_files(plan.files, hidden_dirs)
        for d in hidden_dirs:
            syscalls.mount(None, d, None, syscalls.MS_REMOUNT | HIDDEN_DIR_FLAGS | syscalls.MS_RDONLY, "mode=755")
        for t in plan.tmpfs:
            _touch(t, directory=True)
            syscalls.mount("tmpfs", t, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, writable_tmpfs)
    finally:
        kept.close()
    # the working directory still points into the mounts it was resolved in: resolve it again
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")


def _minimal_dev(kept: _Kept) -> None:
    syscalls.mount("tmpfs", "/dev", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NOEXEC, "mode=755,size=64k")
    for d in DEVICES:
        if f"/dev/{d}" in kept.fds:
            _touch(f"/dev/{d}", directory=False)
            _bind(kept.source(f"/dev/{d}"), f"/dev/{d}", recursive=False)
    if "/dev/pts" in kept.fds:
        _touch("/dev/pts", directory=True)
        _bind(kept.source("/dev/pts"), "/dev/pts", recursive=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"/dev/{name}")
    os.makedirs("/dev/shm", exist_ok=True)


def _fresh_sys() -> bool:
    """A sysfs of the current network namespace on /sys, the mounts under the old one bound back.
    False (nothing changed) when the kernel refuses it, e.g. no fully visible sysfs to vouch for it."""
    if not os.path.isdir("/sys"):
        return False
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        below = [p for p, _ in mountpoints(info.read()) if under(p, "/sys") and p != "/sys"]
    tops = [p for p in dict.fromkeys(below) if not any(under(p, q) and p != q for q in below)]
    kept = _Kept()
    try:
        for p in tops:
            kept.keep(p)
        flags = _flags_of("/sys") | HIDDEN_DIR_FLAGS | syscalls.MS_RDONLY  # same atime flags: they may be locked
        try:
            syscalls.mount("sysfs", "/sys", "sysfs", flags)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENODEV):
                raise
            log.info("a fresh sysfs was refused (%s): hiding the host's network devices in /sys instead", e.strerror)
            return False
        for p in tops:  # cgroups, securityfs, ...: their mount points are directories of every sysfs
            if p in kept.fds and os.path.isdir(p):
                _bind(kept.source(p), p)  # recursive: nested mounts and their read-only flags come along
    finally:
        kept.close()
    return True


def _host_net_dirs() -> list[str]:
    """/sys/class/net, /sys/devices/virtual/net and each physical NIC's net/ directory (its MAC address)."""
    out = list(HOST_NET_DIRS)
    with contextlib.suppress(OSError):
        for nic in os.listdir("/sys/class/net"):
            parent = os.path.dirname(os.path.realpath(f"/sys/class/net/{nic}"))
            if under(parent, "/sys/devices") and parent not in out:
                out.append(parent)
    return out


def _private_tmp(t: str, kept: _Kept, writable: list[str], read_only: list[str], options: str) -> None:
    found = _existing(t)
    if found is None or not stat.S_ISDIR(found[1].st_mode):
        return
    real = found[0]
    syscalls.mount("tmpfs", real, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, options)
    done: list[str] = []
    for p in (*writable, *read_only):  # what lived in the old /tmp and must stay visible
        if under(p, real) and p != real and p in kept.fds:
            if any(under(p, d) for d in done):
                continue  # came along with its ancestor's recursive bind (as it is there: writable or not)
            done.append(p)
            _touch(p, directory=os.path.isdir(kept.source(p)))
            _bind(kept.source(p), p)
            if p in read_only:
                _remount_ro(p, _flags_of(p))


def _hide(paths: Iterable[str]) -> list[str]:
    hidden_dirs: list[str] = []
    for path in paths:
        found = _existing(path)
        if found is None:
            continue
        real, st = found
        if stat.S_ISDIR(st.st_mode):
            syscalls.mount("tmpfs", real, "tmpfs", HIDDEN_DIR_FLAGS, "size=16k,mode=755")
            hidden_dirs.append(real)
        else:
            _bind_ro("/dev/null", real)
    return hidden_dirs


def _write_tmp_files(files: Mapping[str, bytes], private: Iterable[str]) -> None:
    """Files written straight into the private tmpfs (after it is mounted): nothing on the host."""
    roots = [os.path.realpath(p) for p in private]
    for path, content in files.items():
        if not any(under(path, r) for r in roots):
            continue  # only in the jail's own /tmp
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(content)


def _place_files(files: Mapping[str, bytes], hidden_dirs: list[str]) -> None:
    """A file whose real path lies in a hidden directory (resolv.conf -> /run/systemd/resolve/...) is
    created inside that empty tmpfs first, so the symlink still leads to our content."""
    staging = f"/tmp/.boundary-staging-{os.getpid()}"
    os.makedirs(staging, mode=0o700)
    try:
        for n, (target, content) in enumerate(files.items()):
            real = os.path.realpath(target)
            if not os.path.exists(real) and any(under(real, d) for d in hidden_dirs):
                _touch(real, directory=False)  # inside our own empty tmpfs
            found = _existing(real)
            if found is None or not stat.S_ISREG(found[1].st_mode):
                continue  # nothing to cover (and never create files on the host)
            src = f"{staging}/f{n}"
            with open(src, "wb") as f:
                f.write(content)
            os.chmod(src, 0o644)
            _bind_ro(src, found[0])
    finally:
        for name in os.listdir(staging):
            os.unlink(os.path.join(staging, name))
        os.rmdir(staging)


SCRATCH = "/dev/shm"  # covered again by the minimal /dev


def scratch() -> str:
    """A private tmpfs for helpers' files (iptables-legacy's lock) before the plan is applied."""
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    syscalls.mount("tmpfs", SCRATCH, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, "size=64k")
    return SCRATCH


def mount_proc() -> None:
    """A fresh /proc for the current pid namespace (call as its pid 1)."""
    syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
