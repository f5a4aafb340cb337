"""The socket supervisor, the same in both modes: boundary's side of the seccomp user-notification
filter (jail.kernel.unotify). The command's connect, sendto-with-an-address, sendmsg and sendmmsg
(and, in landjail, bind) wait while boundary decides; connect and sendto are then performed by
boundary itself on a duplicate of the command's socket (pidfd_getfd), to the address it read and
checked, so the command cannot change the address between the check and its use.

Unix sockets (network namespaces and Landlock ABI <= 7 do not cover pathname sockets):
- a pathname socket may be reached when the socket bound to that file is one of the jail's own
  (nsjail: a socket of the jail's network namespace; landjail: a socket the jail bound during the
  run), or the file is one of ``--allow-unix``; anything else fails with EACCES and is audited.
  The decision is on the socket behind the file, so links, symlinks and renames change nothing;
- abstract names: nsjail looks them up in the jail's own network namespace (always its own);
  landjail only its own bound ones (Landlock's scoping says the same).
Other families: nsjail connects as asked (the network namespace redirects); landjail only to the
proxy's loopback addresses and port (the shim sends everything there).
nsjail also hands over kill() aimed at a process group: boundary signals the group's members inside
the jail only (the command shares boundary's process group, the terminal's).

Known limit: sendmsg/sendmmsg are checked but then run by the kernel (their control messages
cannot be replayed faithfully), so a multi-threaded program that rewrites msg_name between the
check and the kernel's read can send datagrams to an outside unix datagram socket.
Side effects: a thread that serves the listener; worker threads for calls that may block.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn

from .kernel import sockdiag, unotify

log = logging.getLogger(__name__)

MAX_ADDR = 128  # sizeof(struct sockaddr_storage): the kernel refuses longer addresses
MAX_SEND = 4 << 20  # an emulated sendto sends at most this much (a partial send, as a stream may)
MAX_MMSG = 1024  # UIO_MAXIOV
_MSGHDR = struct.Struct("=QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
_MMSGHDR_SIZE = _MSGHDR.size + 8

Deny = Callable[[str, str], None]  # (what, why): audit and announce a refusal


@dataclass(frozen=True, slots=True)
class Rules:
    """What differs between the modes."""

    own_netns: bool  # nsjail: the diag socket lists only the jail's sockets; abstract names are its own
    inet: Callable[[bytes], bool]  # may an AF_INET/AF_INET6 socket connect to this raw sockaddr?
    allow_unix: tuple[str, ...] = ()  # host paths of sockets the user opened with --allow-unix
    pid_ns: int = 0  # nsjail: the jail's pid namespace (inode): kill() of a process group reaches only its members


PROXY_ADDRESSES = ("127.0.0.1", "::1")  # where landjail's proxy listens (not all of 127/8: other servers)


def proxy_only(ports: Sequence[int]) -> Callable[[bytes], bool]:
    """landjail: loopback, on the proxy's port(s) only."""

    def check(raw: bytes) -> bool:
        try:
            host, port = parse_inet(raw)
        except ValueError:
            return False
        addr = ipaddress.ip_address(host)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return port in ports and str(addr) in PROXY_ADDRESSES

    return check


def parse_inet(raw: bytes) -> tuple[str, int]:
    fam = int.from_bytes(raw[:2], "little") if len(raw) >= 2 else -1
    if fam == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if fam == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big")
    raise ValueError("not an internet address")


def unix_name(raw: bytes) -> bytes | None:
    """The bound name in a sockaddr_un: a path, b"\\0..." for an abstract name; None when there is none."""
    if len(raw) <= 2 or int.from_bytes(raw[:2], "little") != socket.AF_UNIX:
        return None
    name = raw[2:]
    if name[:1] == b"\0":
        return name
    return name.split(b"\0", 1)[0] or None


@dataclass
class _Answer:
    val: int = 0
    error: int = 0
    cont: bool = False


@dataclass
class Supervisor:
    listener: int
    diag: socket.socket
    rules: Rules
    on_deny: Deny
    binds: set[int] = field(default_factory=set)  # landjail: socket inodes the jail bound
    _stopping: bool = False
    _thread: threading.Thread | None = None
    _pool: ThreadPoolExecutor | None = None
    _diag_lock: threading.Lock = field(default_factory=threading.Lock)
    _inline: set[int] = field(default_factory=set)

    def start(self) -> None:
        nr = unotify.arch().nr
        self._inline = {nr["sendmsg"], nr["sendmmsg"], nr["bind"]}
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="boundary-sock")
        self._thread = threading.Thread(target=self._serve, name="boundary-sockets", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        if self._thread is not None:
            # the jail is gone by now, so the receive fails at once (a caller killed mid-call included);
            # should one still be waiting, the thread stays blocked (a daemon) rather than holding us up
            self._thread.join(1)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with contextlib.suppress(OSError):
            os.close(self.listener)
        self.diag.close()

    # -- the loop ----------------------------------------------------------
    def _serve(self) -> None:
        """Blocks in the receive ioctl itself (one wake-up per call, not two): it fails once every process
        under the filter is gone, or the listener is closed at stop()."""
        while not self._stopping:
            try:
                n = unotify.receive(self.listener)
            except OSError as e:
                if not self._stopping and e.errno not in (errno.EBADF, errno.ENOTCONN):
                    log.warning("socket supervisor stopped: %s", e)
                return
            if n is None or self._pool is None:
                continue
            if n.nr in self._inline:  # never blocks: answered here, without a thread hop
                self._handle(n)
            else:
                self._pool.submit(self._handle, n)

    def _handle(self, n: unotify.Notification) -> None:
        try:
            answer = self._decide(n)
        except OSError as e:
            answer = _Answer(error=e.errno or errno.EACCES)
        except Exception:  # a bug here must fail closed, never hang the caller
            log.exception("socket supervisor")
            answer = _Answer(error=errno.EACCES)
        if answer is None:
            return
        with contextlib.suppress(OSError):
            unotify.respond(self.listener, n.id, val=answer.val, error=answer.error, cont=answer.cont)

    def _decide(self, n: unotify.Notification) -> _Answer | None:
        nr = unotify.arch().nr
        if n.nr == nr["kill"]:
            return self._kill_group(n)
        names: list[tuple[int, int]] = []
        if n.nr in (nr["sendmsg"], nr["sendmmsg"]):
            names = self._msg_names(n)
            if not names:
                return _Answer(cont=True)  # the common case: a connected socket, no address
        pidfd = unotify.pidfd_open_thread(n.pid)
        try:
            if not unotify.still_waiting(self.listener, n.id):
                return None  # gone: the pid may already be someone else's
            try:
                dup = unotify.take_fd(pidfd, int(n.args[0]) & 0xFFFFFFFF)
            except OSError as e:
                return _Answer(error=e.errno or errno.EBADF)
        finally:
            os.close(pidfd)
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            return _Answer(error=errno.ENOTSOCK)
        with sock:
            if n.nr == nr["connect"]:
                return self._connect(n, sock)
            if n.nr == nr["sendto"]:
                return self._sendto(n, sock)
            if n.nr == nr["bind"]:
                if sock.family == socket.AF_UNIX:
                    self.binds.add(os.fstat(sock.fileno()).st_ino)
                return _Answer(cont=True)
            if n.nr in (nr["sendmsg"], nr["sendmmsg"]) and sock.family == socket.AF_UNIX:
                for ptr, size in names:
                    _close(self._checked(n, sock, self._address(n, ptr, size), "send to")[1])
        return _Answer(cont=True)

    def _address(self, n: unotify.Notification, ptr: int, size: int) -> bytes:
        if size > MAX_ADDR:
            raise OSError(errno.EINVAL, "address too long")
        raw = unotify.read_memory(n.pid, ptr, size)
        if not unotify.still_waiting(self.listener, n.id):
            raise OSError(errno.ESRCH, "caller gone")
        return raw

    # -- connect and sendto: checked, then done here -----------------------
    def _connect(self, n: unotify.Notification, sock: socket.socket) -> _Answer:
        raw, keep = self._checked(n, sock, self._address(n, n.args[1], n.args[2] & 0xFFFFFFFF), "connect")
        try:
            ret = unotify.raw_call("connect", sock.fileno(), *unotify.sockaddr_args(raw))
        finally:
            _close(keep)
        return _Answer(error=-ret) if ret < 0 else _Answer(val=ret)

    def _sendto(self, n: unotify.Notification, sock: socket.socket) -> _Answer:
        raw, keep = self._checked(n, sock, self._address(n, n.args[4], n.args[5] & 0xFFFFFFFF), "send to")
        try:
            size = min(n.args[2], MAX_SEND)
            data = unotify.read_memory(n.pid, n.args[1], size) if size else b""
            ret = unotify.raw_call(
                "sendto", sock.fileno(), ctypes.c_char_p(data), ctypes.c_size_t(len(data)),
                ctypes.c_int(n.args[3] & 0xFFFFFFFF), *unotify.sockaddr_args(raw),
            )  # fmt: skip
        finally:
            _close(keep)
        return _Answer(error=-ret) if ret < 0 else _Answer(val=ret)

    # -- sendmsg/sendmmsg: checked, then run by the kernel -----------------
    def _msg_names(self, n: unotify.Notification) -> list[tuple[int, int]]:
        """(pointer, length) of each address a sendmsg/sendmmsg call carries."""
        if n.nr == unotify.arch().nr["sendmsg"]:
            headers = [unotify.read_memory(n.pid, n.args[1], _MSGHDR.size)]
        else:
            count = min(n.args[2] & 0xFFFFFFFF, MAX_MMSG)
            blob = unotify.read_memory(n.pid, n.args[1], count * _MMSGHDR_SIZE) if count else b""
            headers = [blob[i * _MMSGHDR_SIZE : i * _MMSGHDR_SIZE + _MSGHDR.size] for i in range(count)]
        out = []
        for h in headers:
            name, namelen = _MSGHDR.unpack(h)[:2]
            if name and namelen:
                out.append((name, namelen))
        return out

    # -- kill() of a process group (nsjail) ----------------------------------
    def _kill_group(self, n: unotify.Notification) -> _Answer | None:
        """kill(0, sig) or kill(-pgid, sig), done here for the group's members inside the jail only: the command
        shares boundary's process group (the terminal's), and a group signal would reach boundary itself."""
        pid = ctypes.c_int32(n.args[0] & 0xFFFFFFFF).value
        sig = n.args[1] & 0xFFFFFFFF
        if not unotify.still_waiting(self.listener, n.id):
            return None
        if pid == 0:
            group = _stat_pgrp(n.pid)
            members = [p for p in self._jail_pids() if _stat_pgrp(p) == group]
        else:
            members = [p for p in self._jail_pids() if _ns_pgid(p) == -pid]
        if not members:
            return _Answer(error=errno.ESRCH)
        for p in members:
            with contextlib.suppress(OSError):
                os.kill(p, sig)
        return _Answer(val=0)

    def _jail_pids(self) -> list[int]:
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/pid").st_ino == self.rules.pid_ns:
                        out.append(int(entry))
        return out

    # -- the decision ------------------------------------------------------
    def _checked(self, n: unotify.Notification, sock: socket.socket, raw: bytes, verb: str) -> tuple[bytes, int]:
        """The address to use in place of ``raw`` and an fd to close once it has been used (-1: none);
        or OSError(EACCES) after auditing the refusal."""
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            if self.rules.inet(raw):
                return raw, -1
            try:
                host, port = parse_inet(raw)
                what = f"tcp {verb} {host}:{port}"
            except ValueError:
                what = f"tcp {verb}"
            self.on_deny(what, "only the proxy's port on loopback is reachable; use the proxy")
            raise OSError(errno.EACCES, "refused")
        if sock.family != socket.AF_UNIX:
            return raw, -1
        name = unix_name(raw)
        if name is None:
            return raw, -1  # unnamed or malformed: the kernel answers as it would
        if name[:1] == b"\0":
            if not self._abstract_ok(name):
                self._refuse(f"{verb} abstract unix socket @{name[1:]!r}")
            return raw, -1
        fd = self._resolve(n.pid, name)
        try:
            st = os.fstat(fd)
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.ECONNREFUSED, "not a socket")
            if not self._file_ok(st):
                shown = os.readlink(f"/proc/self/fd/{fd}")  # the path as boundary sees it, links resolved
                self._refuse(f"{verb} unix socket {shown}", hint=shown)
        except BaseException:
            os.close(fd)
            raise
        # the very file checked, whatever the name leads to by now
        return socket.AF_UNIX.to_bytes(2, "little") + f"/proc/self/fd/{fd}".encode() + b"\0", fd

    def _refuse(self, what: str, hint: str = "") -> NoReturn:
        why = "not a socket of this jail" + (f"; to allow: --allow-unix {hint}" if hint else "")
        self.on_deny(what, why)
        raise OSError(errno.EACCES, "refused")

    def _abstract_ok(self, name: bytes) -> bool:
        if self.rules.own_netns:
            return True
        with self._diag_lock:
            bound = sockdiag.find(self.diag, name=name)
        return bound is not None and bound.ino in self.binds

    def _file_ok(self, st: os.stat_result) -> bool:
        for p in self.rules.allow_unix:
            with contextlib.suppress(OSError):
                a = os.stat(p)
                if (a.st_dev, a.st_ino) == (st.st_dev, st.st_ino):
                    return True
        with self._diag_lock:
            bound = sockdiag.find(self.diag, vfs=(st.st_dev, st.st_ino))
        if bound is None:
            return False
        return self.rules.own_netns or bound.ino in self.binds

    def _resolve(self, pid: int, name: bytes) -> int:
        """O_PATH fd of the socket file the caller named, resolved in its root (and cwd)."""
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not name.startswith(b"/"):
                cwd = os.readlink(f"/proc/{pid}/cwd").encode()
                name = cwd.rstrip(b"/") + b"/" + name
            return unotify.open_in_root(root, name)
        finally:
            os.close(root)


def _stat_pgrp(pid: int) -> int:
    """The process group of ``pid`` as the host numbers it (/proc/PID/stat, field 5)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2 :].split()[2])


def _ns_pgid(pid: int) -> int:
    """The process group of ``pid`` as its own (innermost) pid namespace numbers it."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("NSpgid:"):
                return int(line.split()[-1])
    return -1


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


# -- handing the listener over ---------------------------------------------------------------
def hand_over_listener(chan: socket.socket, *, bind: bool, groups: bool = False) -> None:
    """In the jail, last step before the command's own: load the notification filter and let the
    supervisor take its listener from this process (pidfd_getfd; this process must be dumpable
    until the answer). ``chan``: a SOCK_SEQPACKET socket to the supervisor; plain send/recv only
    (sendmsg is notified from here on). Where the kernel lacks user notification, says why."""
    try:
        fd = unotify.install(bind=bind, groups=groups)
    except OSError as e:
        chan.send(json.dumps({"notify": None, "why": e.strerror or str(e), "pid": os.getpid()}).encode())
        return
    chan.send(json.dumps({"notify": fd, "pid": os.getpid()}).encode())
    chan.recv(64)  # the supervisor has its duplicate (or gave up)
    os.close(fd)


def take_listener(pid: int, fd: int) -> int:
    """The supervisor's duplicate of the listener ``fd`` of process ``pid``."""
    pidfd = os.pidfd_open(pid)
    try:
        return unotify.take_fd(pidfd, fd)
    finally:
        os.close(pidfd)


class DenyLog:
    """Refusals, held until the audit sink exists (the command may connect before the proxy runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[tuple[str, str]] = []
        self._sink: Deny | None = None

    def __call__(self, what: str, why: str) -> None:
        with self._lock:
            if self._sink is None:
                self._held.append((what, why))
                return
            sink = self._sink
        sink(what, why)

    def attach(self, sink: Deny) -> None:
        with self._lock:
            held, self._held, self._sink = self._held, [], sink
        for what, why in held:
            sink(what, why)


def start_supervisor(
    msg: dict[str, object], pid: int, diag: socket.socket | None, rules: Rules, denials: DenyLog
) -> Supervisor | None:
    """Take the listener announced in ``msg`` ({"notify": fd|None, "why": ...}) from ``pid`` and serve it.
    None (with a warning) where the kernel could not give one: unix sockets are then not supervised."""
    fd = msg.get("notify")
    if not isinstance(fd, int) or diag is None:
        log.warning(
            "unix sockets outside the jail stay reachable: the kernel refused seccomp user notification (%s)",
            msg.get("why", "no sock_diag"),
        )
        if diag is not None:
            diag.close()
        return None
    if rules.pid_ns == -1:  # nsjail: the pid namespace of the (still dumpable) process handing the listener over
        rules = dataclasses.replace(rules, pid_ns=os.stat(f"/proc/{pid}/ns/pid").st_ino)
    sup = Supervisor(take_listener(pid, fd), diag, rules, denials)
    sup.start()
    return sup
