"""The socket supervisor, the same in both modes: boundary's side of the seccomp user-notification
filter (jail.kernel.unotify), served in a process of its own (SupervisorProcess). The command's
address-taking socket calls wait while it decides; connect and sendto are then performed by it on a
duplicate of the command's socket (pidfd_getfd), to the address it read and checked, so the command
cannot change the address between the check and its use.

Unix sockets (network namespaces and Landlock ABI <= 7 do not cover pathname sockets):
- a pathname socket may be reached when the socket bound to that file is one of the jail's own
  (nsjail: a socket of the jail's network namespace; landjail: a socket the jail bound during the
  run), or the file is one of ``--allow-unix``; anything else fails with EACCES and is audited.
  The decision is on the socket behind the file, so links, symlinks and renames change nothing;
- abstract names: nsjail looks them up in the jail's own network namespace (always its own);
  landjail only its own bound ones (Landlock's scoping says the same).
Internet sockets: nsjail connects as asked (its network namespace redirects everything); in landjail
boundary routes them itself (jail.inet): every TCP connect to the proxy (its transparent listener, the
destination recorded in proxy.origins) unless it is to a loopback server the jail itself started,
UDP to port 53 to the DNS responder (and its replies, read through an emulated recvfrom, appear to
come from the server asked), other UDP refused, binds kept on loopback. In landjail bind, listen,
sendmsg and sendmmsg are carried out here too, whatever the socket (never handed back to the kernel,
which would look the descriptor up again), and Landlock refuses every TCP connect and bind the
command would make itself.
nsjail also hands over kill() aimed at a process group: boundary signals the group's members inside
the jail only (the command shares boundary's process group, the terminal's).

sendmsg and sendmmsg on unix sockets are carried out here in nsjail too (answered "continue", the kernel would
look each address up again, after the check); on its other sockets (netlink, internet: confined by its network
namespace) they are answered "continue", as this process would send them with capabilities the jail lacks.
Known limit (nsjail): a multi-threaded program that dup2()s a unix datagram socket over such a descriptor
between boundary's look and the kernel's can send a datagram to an outside unix datagram socket.
Side effects: a process that serves the listener, with worker threads for calls that may block.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn

from proxy.origins import Origins

from . import inet
from .kernel import sockdiag, unotify
from .kernel.mounts import under

log = logging.getLogger(__name__)

MAX_ADDR = 128  # sizeof(struct sockaddr_storage): the kernel refuses longer addresses
MAX_SEND = 4 << 20  # an emulated sendto sends at most this much (a partial send, as a stream may)
MAX_MMSG = 1024  # UIO_MAXIOV
MAX_DATAGRAM = 65535  # an emulated datagram send reads at most this much (UDP's own limit)
MAX_CONTROL = 4096  # control messages of an emulated datagram send
MAX_PEERS = 4096  # DNS sockets whose replies are shown as coming from the server asked
RECV_SLICE = 1.0  # an emulated blocking recvfrom rechecks that its caller still waits this often
MSG_DONTWAIT = 0x40
MSG_NOSIGNAL = 0x4000
SCM_CREDENTIALS = 2
_CMSG = struct.Struct("=Qii")  # struct cmsghdr: len, level, type
_MSGHDR = struct.Struct("=QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
_MMSGHDR_SIZE = _MSGHDR.size + 8

Deny = Callable[[str, str], None]  # (what, why): audit and announce a refusal


@dataclass(frozen=True, slots=True)
class Rules:
    """What differs between the modes."""

    own_netns: bool  # nsjail: the diag socket lists only the jail's sockets; abstract names are its own
    inet: inet.Targets | None = None  # landjail: where internet sockets go (None: as asked)
    allow_unix: tuple[str, ...] = ()  # host paths of sockets the user opened with --allow-unix
    write_roots: tuple[str, ...] = ()  # landjail: where the command may create files (its Landlock write grants)
    pid_ns: int = 0  # nsjail: the jail's pid namespace (inode): kill() of a process group reaches only its members


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
    after: Callable[[], None] | None = None  # runs once the caller has its answer (off its critical path)


Origin = Callable[[tuple[str, int], tuple[str, int]], None]  # (the command's socket address, its destination)


@dataclass
class Supervisor:
    """Serves the listener in a process of its own (see start_supervisor): one thread receives, a pool does
    what may block."""

    listener: int
    diag: socket.socket
    rules: Rules
    on_deny: Deny
    on_origin: Origin | None = None  # landjail: where a connection sent to the transparent listener meant to go
    binds: set[int] = field(default_factory=set)  # landjail: socket inodes the jail bound
    _peers: OrderedDict[int, bytes] = field(default_factory=OrderedDict)  # landjail: DNS socket inode -> server asked
    _peers_lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = None
    _diag_lock: threading.Lock = field(default_factory=threading.Lock)
    _inline: set[int] = field(default_factory=set)

    def serve(self) -> None:
        """Until every process under the filter is gone: blocks in the receive ioctl itself (one wake-up per
        call, not two). Calls are answered in this thread (a thread hop costs more than most decisions); one
        that could block (a blocking connect to a unix or the jail's own socket, a blocking receive with nothing
        to read) moves to the pool, so that a slow call never holds up the jail's other threads."""
        nr = unotify.arch().nr
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="boundary-sock")
        try:
            while True:
                try:
                    n = unotify.receive(self.listener)
                except OSError as e:
                    if e.errno not in (errno.EBADF, errno.ENOTCONN):
                        log.warning("socket supervisor stopped: %s", e)
                    return
                if n is None:
                    continue
                if n.nr == nr["kill"]:
                    self._pool.submit(self._handle, n)  # walks /proc
                else:
                    self._handle(n, inline=True)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _handle(self, n: unotify.Notification, *, inline: bool = False) -> None:
        try:
            answer = self._decide(n, inline)
        except _Defer:
            assert self._pool is not None
            self._pool.submit(self._handle, n)
            return
        except OSError as e:
            answer = _Answer(error=e.errno or errno.EACCES)
        except Exception:  # a bug here must fail closed, never hang the caller
            log.exception("socket supervisor")
            answer = _Answer(error=errno.EACCES)
        if answer is None:
            return
        with contextlib.suppress(OSError):
            unotify.respond(self.listener, n.id, val=answer.val, error=answer.error, cont=answer.cont)
        if answer.after is not None:
            try:
                answer.after()
            except Exception:
                log.exception("socket supervisor")

    def _decide(self, n: unotify.Notification, inline: bool = False) -> _Answer | None:
        """The answer; raises _Defer (before any side effect) when ``inline`` and the call may block."""
        nr = unotify.arch().nr
        if n.nr == nr["kill"]:
            return self._kill_group(n)
        routed = self.rules.inet is not None  # landjail: every socket's family and type matters
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
            if routed and n.nr in (nr["bind"], nr["listen"], nr["sendmsg"], nr["sendmmsg"]):
                return self._carried(n, sock, inline)  # whatever the socket: the kernel never runs it by fd
            if routed and sock.family in (socket.AF_INET, socket.AF_INET6):
                return self._inet(n, sock, inline)  # always to boundary's own listeners: never blocks long
            if n.nr == nr["recvfrom"]:
                return _Answer(cont=True)  # landjail: not a socket that asked a DNS server; receiving only
            if n.nr == nr["connect"]:
                if inline and _blocking(sock):
                    raise _Defer
                return self._connect(n, sock)
            if n.nr == nr["sendto"]:
                if inline and _blocking(sock):
                    raise _Defer
                return self._sendto(n, sock)
            if n.nr == nr["bind"]:
                if sock.family == socket.AF_UNIX:
                    self.binds.add(os.fstat(sock.fileno()).st_ino)
                return _Answer(cont=True)
            if n.nr in (nr["sendmsg"], nr["sendmmsg"]) and sock.family == socket.AF_UNIX:
                # carried out here on the socket that was checked, never handed back to the kernel: it would look
                # each address up again, and a path swapped in between (a symlink renamed over it) would send
                # datagrams to an outside unix socket. Only unix sockets: this process holds every capability in
                # the jail's namespaces, and a netlink message sent from here would reconfigure the jail's network
                return self._send_messages(n, sock, inet.Kind.OTHER, inline)
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
            return self._send_to(n, sock, raw)
        finally:
            _close(keep)

    def _send_to(self, n: unotify.Notification, sock: socket.socket, target: bytes) -> _Answer:
        """The caller's sendto (its buffer, length, flags) done here, to ``target``."""
        size = min(n.args[2], MAX_SEND)
        data = unotify.read_memory(n.pid, n.args[1], size) if size else b""
        ret = unotify.raw_call(
            "sendto", sock.fileno(), ctypes.c_char_p(data), ctypes.c_size_t(len(data)),
            ctypes.c_int(n.args[3] & 0xFFFFFFFF), *unotify.sockaddr_args(target),
        )  # fmt: skip
        return _result(ret)

    # -- landjail's internet sockets (jail.inet decides, this carries it out) ------
    def _inet(self, n: unotify.Notification, sock: socket.socket, inline: bool) -> _Answer | None:
        nr = unotify.arch().nr
        targets = self.rules.inet
        assert targets is not None
        if n.nr == nr["recvfrom"]:
            return self._recvfrom(n, sock, inline)
        kind = _kind(sock)
        if n.nr == nr["connect"]:
            raw = self._address(n, n.args[1], n.args[2] & 0xFFFFFFFF)
            plan = targets.connect(kind, sock.family, raw)
            if plan.route is inet.Route.PROXY and self._own_listener(plan.host, plan.port):
                plan = inet.Plan(inet.Route.AS_ASKED, raw, plan.host, plan.port)  # the jail's own server
            target = self._carry(plan, sock)
            ret = unotify.raw_call("connect", sock.fileno(), *unotify.sockaddr_args(target))
            answer = _result(ret)
            if plan.route is inet.Route.PROXY and ret in (0, -errno.EINPROGRESS) and self.on_origin is not None:
                # the proxy waits for this record; the command need not (its socket's address is fixed now)
                local, report = sock.getsockname(), self.on_origin
                answer.after = lambda: report((str(local[0]), int(local[1])), (plan.host, plan.port))
            return answer
        # sendto with an address
        plan = targets.send(kind, sock.family, self._address(n, n.args[4], n.args[5] & 0xFFFFFFFF))
        return self._send_to(n, sock, self._carry(plan, sock))

    def _carry(self, plan: inet.Plan, sock: socket.socket | None = None) -> bytes:
        """The address to use for ``plan``, or OSError (EACCES audited, EINVAL). A DNS plan binds an unbound
        socket to loopback first (an automatic bind would take the wildcard address) and remembers the server."""
        if plan.route is inet.Route.DENY:
            self.on_deny(plan.what, "boundary routes only TCP (through the proxy) and DNS (port 53) out of landjail")
            raise OSError(errno.EACCES, "refused")
        if plan.route is inet.Route.INVALID:
            raise OSError(errno.EINVAL, "not an internet address")
        if plan.route is inet.Route.DNS and sock is not None and self.rules.inet is not None:
            if sock.getsockname()[1] == 0:
                sock.bind((self.rules.inet.loopback(sock.family), 0))
            with self._peers_lock:
                self._peers[os.fstat(sock.fileno()).st_ino] = inet.encode(sock.family, plan.host, plan.port)
                while len(self._peers) > MAX_PEERS:
                    self._peers.popitem(last=False)
        return plan.target

    # -- landjail: bind, listen, sendmsg and sendmmsg are carried out here, on the socket that was checked ----
    # (answering "continue" would let the kernel look fd N up again: another thread may have put a different
    # socket there by then, and the kernel would bind, listen or send with it unchecked)
    def _carried(self, n: unotify.Notification, sock: socket.socket, inline: bool) -> _Answer:
        nr = unotify.arch().nr
        targets = self.rules.inet
        assert targets is not None
        is_inet = sock.family in (socket.AF_INET, socket.AF_INET6)
        kind = _kind(sock) if is_inet else inet.Kind.OTHER
        fd = sock.fileno()
        if n.nr == nr["bind"]:
            raw = self._address(n, n.args[1], n.args[2] & 0xFFFFFFFF)
            if is_inet:
                target = self._carry(targets.bind(kind, sock.family, raw))
                if kind is inet.Kind.UDP and self._shared_with_outside(sock, target):
                    return _Answer(error=errno.EADDRINUSE)
                ret = unotify.raw_call("bind", fd, *unotify.sockaddr_args(target))
            elif sock.family == socket.AF_UNIX:
                ret = self._bind_unix(n, sock, raw)
            else:  # netlink and the like: an address of the kernel's, nothing outside
                ret = unotify.raw_call("bind", fd, *unotify.sockaddr_args(raw))
            if ret == 0 and sock.family != socket.AF_NETLINK:
                self.binds.add(os.fstat(fd).st_ino)
            return _result(ret)
        if n.nr == nr["listen"]:
            if is_inet:
                self._listen_checks(sock, kind, targets)
            ret = unotify.raw_call("listen", fd, ctypes.c_int(n.args[1] & 0xFFFFFFFF))
            if ret == 0:
                self.binds.add(os.fstat(fd).st_ino)
            return _result(ret)
        return self._send_messages(n, sock, kind, inline)

    def _shared_with_outside(self, sock: socket.socket, target: bytes) -> bool:
        """Would this UDP bind (with SO_REUSEADDR) share a port with a socket outside the jail? The kernel would
        then hand datagrams meant for that service to the jail."""
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
            return False  # the kernel itself refuses a port in use
        try:
            _, host, port = inet.parse(target)
        except ValueError:
            return False
        if port == 0:
            return False
        wildcard = ("0.0.0.0", "::")
        try:
            with self._diag_lock:
                there = [
                    *sockdiag.udp_sockets(self.diag, socket.AF_INET),
                    *sockdiag.udp_sockets(self.diag, socket.AF_INET6),
                ]
        except (OSError, ValueError):
            return True  # cannot tell: refuse
        return any(p == port and ino not in self.binds and (a == host or a in wildcard or host in wildcard)
                   for a, p, ino in there)  # fmt: skip

    def _own_listener(self, host: str, port: int) -> bool:
        """Is a server the jail itself started listening on loopback ``host``:``port``? (Decided on the listening
        socket the kernel has there now, so a server of someone else's on a port the jail once used is not.)"""
        if not inet.is_loopback(host):
            return False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with self._diag_lock:
                listening = sockdiag.tcp_listeners(self.diag, family)
        except (OSError, ValueError):
            return False
        wildcard = ("0.0.0.0", "::")
        there = [ino for addr, p, ino in listening if p == port and (addr == host or addr in wildcard)]
        return bool(there) and all(ino in self.binds for ino in there)  # no one else's among them

    def _listen_checks(self, sock: socket.socket, kind: inet.Kind, targets: inet.Targets) -> None:
        """listen() on an unbound socket would bind the wildcard address: bound to loopback first. A socket bound
        elsewhere (only --publish does that) keeps its address; --no-bind forbids TCP listening."""
        if kind is inet.Kind.TCP and targets.no_bind:
            self.on_deny("tcp listen (--no-bind)", "--no-bind forbids listening")
            raise OSError(errno.EACCES, "refused")
        host, port = sock.getsockname()[:2]
        if port == 0:
            sock.bind((targets.loopback(sock.family), 0))
        elif not inet.is_loopback(str(host)) and port not in targets.publish:
            self.on_deny(f"tcp listen on {host}:{port}", "only loopback, or a --publish port")
            raise OSError(errno.EACCES, "refused")

    def _bind_unix(self, n: unotify.Notification, sock: socket.socket, raw: bytes) -> int:
        """A unix bind, done here: an abstract or automatic name as asked; a path only in a directory the jail
        may write (its Landlock grants), resolved in the caller's root and working directory."""
        name = unix_name(raw)
        if name is None or name[:1] == b"\0":
            return unotify.raw_call("bind", sock.fileno(), *unotify.sockaddr_args(raw))
        if not name.startswith(b"/"):
            name = os.readlink(f"/proc/{n.pid}/cwd").encode().rstrip(b"/") + b"/" + name
        parent, _, base = name.rpartition(b"/")
        if base in (b"", b".", b".."):
            return -errno.EINVAL
        root = os.open(f"/proc/{n.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dirfd = unotify.open_in_root(root, parent or b"/")
        except OSError as e:
            return -(e.errno or errno.ENOENT)
        finally:
            os.close(root)
        try:
            where = os.readlink(f"/proc/self/fd/{dirfd}")
            if not any(under(where, w) for w in self.rules.write_roots):
                return -errno.EACCES  # as Landlock would answer the command itself
            target = f"/proc/self/fd/{dirfd}/".encode() + base
            if len(target) >= MAX_ADDR - 2:
                return -errno.ENAMETOOLONG
            return unotify.raw_call("bind", sock.fileno(), *unotify.sockaddr_args(
                socket.AF_UNIX.to_bytes(2, "little") + target + b"\0"))  # fmt: skip
        finally:
            os.close(dirfd)

    def _send_messages(self, n: unotify.Notification, sock: socket.socket, kind: inet.Kind,
                       inline: bool) -> _Answer:  # fmt: skip
        """sendmsg/sendmmsg from one read of the caller's memory: each address checked (internet: routed as a
        sendto would be; unix: as a connect would be), passed descriptors duplicated from the caller (so they are
        the caller's own), the data copied (a stream gets at most MAX_SEND of it: a partial send)."""
        nr = unotify.arch().nr
        mmsg = n.nr == nr["sendmmsg"]
        flags = (n.args[3] if mmsg else n.args[2]) & 0xFFFFFFFF
        if mmsg:
            count = min(n.args[2] & 0xFFFFFFFF, MAX_MMSG)
            blob = unotify.read_memory(n.pid, n.args[1], count * _MMSGHDR_SIZE) if count else b""
            entries = [(n.args[1] + i * _MMSGHDR_SIZE, blob[i * _MMSGHDR_SIZE : i * _MMSGHDR_SIZE + _MSGHDR.size])
                       for i in range(count)]  # fmt: skip
        else:
            entries = [(n.args[1], unotify.read_memory(n.pid, n.args[1], _MSGHDR.size))]
        blocking = not (flags & MSG_DONTWAIT) and _blocking(sock)
        stream = sock.type == socket.SOCK_STREAM
        if inline and blocking and stream:
            raise _Defer  # a blocking stream send returns once all of it is sent: that may take a while
        sent = 0
        for ptr, header in entries:
            name, namelen, iov, iovlen, control, controllen, _ = _MSGHDR.unpack(header)
            keep: list[int] = []
            try:
                target = None
                if name and namelen:
                    raw = self._address(n, name, namelen)
                    if kind is not inet.Kind.OTHER:
                        target = self._carry(self.rules.inet.send(kind, sock.family, raw), sock)  # type: ignore[union-attr]
                    else:
                        target, extra = self._checked(n, sock, raw, "send to")
                        keep.append(extra)
                data = self._gather(n.pid, iov, iovlen, stream)
                ctrl = self._control(n, control, controllen, keep)
                ret = unotify.sendmsg(sock.fileno(), target, data, ctrl, flags | MSG_DONTWAIT)
                while ret == -errno.EAGAIN and blocking:
                    if inline and sent == 0:
                        raise _Defer
                    if sent or not self._wait_writable(n, sock):
                        break
                    ret = unotify.sendmsg(sock.fileno(), target, data, ctrl, flags | MSG_DONTWAIT)
                if stream and blocking and 0 <= ret < len(data):
                    ret += self._send_rest(n, sock, data[ret:], flags)
                if ret == -errno.EPIPE and not flags & MSG_NOSIGNAL:
                    with contextlib.suppress(OSError):
                        os.kill(n.pid, signal.SIGPIPE)  # as the kernel would have
                if ret < 0:
                    raise OSError(-ret, os.strerror(-ret))
            except OSError:
                if sent == 0 or not mmsg:
                    raise
                break
            finally:
                for k in keep:
                    _close(k)
            if mmsg:  # msg_len of the entry, as the kernel fills it in
                unotify.write_memory(n.pid, ptr + _MSGHDR.size, struct.pack("=I", ret))
                sent += 1
            else:
                sent = ret
        return _Answer(val=sent)

    def _send_rest(self, n: unotify.Notification, sock: socket.socket, rest: bytes, flags: int) -> int:
        """A blocking stream send goes on until all is sent (or the peer fails it, or the caller is gone): how
        much more was sent."""
        more = 0
        while more < len(rest) and self._wait_writable(n, sock):
            ret = unotify.sendmsg(sock.fileno(), None, rest[more:], b"", flags | MSG_DONTWAIT)
            if ret < 0 and ret != -errno.EAGAIN:
                break
            more += max(ret, 0)
        return more

    def _wait_writable(self, n: unotify.Notification, sock: socket.socket) -> bool:
        """Until ``sock`` can take more, or its caller stopped waiting (False)."""
        while not select.select([], [sock], [], RECV_SLICE)[1]:
            if not unotify.still_waiting(self.listener, n.id):
                return False
        return True

    def _gather(self, pid: int, iov: int, iovlen: int, stream: bool) -> bytes:
        """The iovec's bytes: a stream's up to MAX_SEND (the rest is left: a partial send), a datagram's whole."""
        if iovlen > MAX_MMSG:
            raise OSError(errno.EMSGSIZE, "too many buffers")
        vecs = unotify.read_memory(pid, iov, iovlen * 16) if iovlen else b""
        out = bytearray()
        for i in range(iovlen):
            base, size = struct.unpack_from("=QQ", vecs, i * 16)
            if len(out) + size > MAX_SEND:
                if not stream:
                    raise OSError(errno.EMSGSIZE, "message too long")
                size = MAX_SEND - len(out)
            out += unotify.read_memory(pid, base, size) if size else b""
            if len(out) >= MAX_SEND:
                break
        return bytes(out)

    def _control(self, n: unotify.Notification, ptr: int, size: int, keep: list[int]) -> bytes:
        """Control messages as boundary can send them: passed descriptors duplicated from the caller (``keep``
        gets them, to close after the send); credentials left for the kernel to attach; the rest as given."""
        if not ptr or not size:
            return b""
        if size > MAX_CONTROL:
            raise OSError(errno.ENOBUFS, "control data too long")
        raw = unotify.read_memory(n.pid, ptr, size)
        out = bytearray()
        off = 0
        while off + _CMSG.size <= len(raw):
            length, level, kind = _CMSG.unpack_from(raw, off)
            if length < _CMSG.size or off + length > len(raw):
                raise OSError(errno.EINVAL, "bad control message")
            payload = raw[off + _CMSG.size : off + length]
            off += (length + 7) & ~7
            if level == socket.SOL_SOCKET and kind == SCM_CREDENTIALS:
                continue
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                pidfd = unotify.pidfd_open_thread(n.pid)
                try:
                    fds = struct.unpack(f"={len(payload) // 4}i", payload[: len(payload) // 4 * 4])
                    for fd in fds:
                        keep.append(unotify.take_fd(pidfd, fd))
                finally:
                    os.close(pidfd)
                payload = struct.pack(f"={len(fds)}i", *keep[-len(fds) :]) if fds else b""
            item = _CMSG.pack(_CMSG.size + len(payload), level, kind) + payload
            out += item + bytes(-len(item) % 8)
        return bytes(out)

    def _recvfrom(self, n: unotify.Notification, sock: socket.socket, inline: bool) -> _Answer | None:
        """recvfrom with an address: for a socket that asked a DNS server, done here so that the reply appears
        to come from the server asked (resolvers check it); any other socket's call runs as it is."""
        with self._peers_lock:
            peer = self._peers.get(os.fstat(sock.fileno()).st_ino)
        if peer is None:
            return _Answer(cont=True)
        size, flags = n.args[2] & 0xFFFFFFFF, n.args[3] & 0xFFFFFFFF
        blocking = not (flags & MSG_DONTWAIT) and _blocking(sock)
        while True:
            ret, data, sender = unotify.recvfrom(sock.fileno(), min(size, MAX_DATAGRAM), flags | MSG_DONTWAIT)
            if ret != -errno.EAGAIN or not blocking:
                break
            if inline:
                raise _Defer
            select.select([sock], [], [], RECV_SLICE)
            if not unotify.still_waiting(self.listener, n.id):
                return None
        if ret < 0:
            return _Answer(error=-ret)
        assert self.rules.inet is not None
        shown = peer if self.rules.inet.dns_listener(sender) else sender
        unotify.write_memory(n.pid, n.args[1], data)
        if n.args[4] and n.args[5]:
            room = struct.unpack("=I", unotify.read_memory(n.pid, n.args[5], 4))[0]
            unotify.write_memory(n.pid, n.args[4], shown[:room])
            unotify.write_memory(n.pid, n.args[5], struct.pack("=I", len(shown)))
        return _Answer(val=ret)

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
        if sock.family != socket.AF_UNIX:  # landjail's internet sockets never come here (_inet)
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


class _Defer(Exception):
    """The call may block: answer it in the pool instead."""


def _blocking(sock: socket.socket) -> bool:
    return not fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK


def _kind(sock: socket.socket) -> inet.Kind:
    return inet.kind_of(sock.type, sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))


def _result(ret: int) -> _Answer:
    return _Answer(error=-ret) if ret < 0 else _Answer(val=ret)


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


# -- handing the listener over ---------------------------------------------------------------
def load_filter(*, routed: bool, groups: bool = False) -> tuple[int, str]:
    """In the jail: load the notification filter (``routed``: landjail's, which routes internet sockets too).
    (listener fd, "") or (-1, why the kernel refused it)."""
    try:
        return unotify.install(inet=routed, groups=groups), ""
    except OSError as e:
        return -1, e.strerror or str(e)


def hand_over(chan: socket.socket, fd: int, why: str = "") -> None:
    """In the jail, last step before the command's own: let the supervisor take the listener ``fd`` from this
    process (pidfd_getfd; this process must be dumpable until the answer), or tell it why there is none.
    ``chan``: a SOCK_SEQPACKET socket to the supervisor; plain send/recv only (sendmsg is notified now)."""
    chan.send(json.dumps({"notify": fd if fd >= 0 else None, "why": why, "pid": os.getpid()}).encode())
    chan.recv(64)  # the supervisor has its duplicate (or gave up, or knows there is none)
    if fd >= 0:
        os.close(fd)


def hand_over_listener(chan: socket.socket, *, groups: bool = False) -> None:
    """nsjail: load the (unix-only) filter and hand its listener over."""
    hand_over(chan, *load_filter(routed=False, groups=groups))


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


class SupervisorProcess:
    """boundary's side of a supervisor running in a process of its own: the proxy's event loop and the
    supervisor never wait for each other's interpreter lock (that made each connect ~10x slower). Its
    refusals and recorded destinations come back over a socket pair, read by a thread here."""

    def __init__(self, pid: int, chan: socket.socket, denials: DenyLog, origins: Origins | None) -> None:
        self.pid = pid
        self._chan = chan
        self._denials = denials
        self._origins = origins
        self._reader = threading.Thread(target=self._read, name="boundary-sockets", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self._chan.recv(MAX_REPORT)
            except OSError:
                return
            if not data:
                return
            try:
                msg = json.loads(data)
                if "deny" in msg:
                    self._denials(str(msg["deny"][0]), str(msg["deny"][1]))
                elif "origin" in msg and self._origins is not None:
                    h, p, dh, dp = msg["origin"]
                    self._origins.put((str(h), int(p)), (str(dh), int(dp)))
            except (ValueError, KeyError, IndexError, TypeError):
                log.warning("socket supervisor: unreadable report %r", data[:200])

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self._reader.join(1)
        self._chan.close()


MAX_REPORT = 8192


def start_supervisor(
    msg: dict[str, object],
    pid: int,
    diag: socket.socket | None,
    rules: Rules,
    denials: DenyLog,
    origins: Origins | None = None,
) -> SupervisorProcess | None:
    """Take the listener announced in ``msg`` ({"notify": fd|None, "why": ...}) from ``pid`` and serve it in a
    process of its own, which dies with boundary (and the jail's notified calls then fail). None (with a
    warning) where the kernel could not give one."""
    fd = msg.get("notify")
    if not isinstance(fd, int) or diag is None:
        if rules.inet is not None:
            log.warning(
                "the kernel refused seccomp user notification (%s): landjail falls back to a port-only Landlock rule "
                "(any address on the proxy's port is reachable, programs that ignore the proxy and the shim cannot "
                "connect or resolve names) and unix sockets outside the jail stay reachable",
                msg.get("why", "no sock_diag"),
            )
        else:
            log.warning(
                "unix sockets outside the jail stay reachable: the kernel refused seccomp user notification (%s)",
                msg.get("why", "no sock_diag"),
            )
        if diag is not None:
            diag.close()
        return None
    if rules.pid_ns == -1:  # nsjail: the pid namespace of the (still dumpable) process handing the listener over
        rules = dataclasses.replace(rules, pid_ns=os.stat(f"/proc/{pid}/ns/pid").st_ino)
    listener = take_listener(pid, fd)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    boundary = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover (a separate process; the jail tests drive it)
        code = 0
        try:
            mine.close()
            _become_supervisor(boundary)
            report = _Reporter(theirs)
            Supervisor(listener, diag, rules, report.deny, report.origin if rules.inet else None).serve()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(listener)  # the supervisor holds the only copy: when it dies, notified calls fail (ENOSYS)
    diag.close()
    theirs.close()
    return SupervisorProcess(child, mine, denials, origins)


def _become_supervisor(boundary: int) -> None:
    """The supervisor process: dies with boundary, out of the terminal's process group (^C, ^Z and a kill of
    the group are for the command; boundary stops this process itself), not dumpable."""
    from .kernel import caps, syscalls

    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != boundary:
        os._exit(0)
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    caps.non_dumpable()


class _Reporter:
    """In the supervisor process: refusals and destinations to boundary (a full socket pair makes the caller
    wait, never drops a record)."""

    def __init__(self, chan: socket.socket) -> None:
        self._chan = chan
        self._lock = threading.Lock()

    def _send(self, msg: object) -> None:
        data = json.dumps(msg).encode()[:MAX_REPORT]
        with self._lock, contextlib.suppress(OSError):
            self._chan.send(data)

    def deny(self, what: str, why: str) -> None:
        self._send({"deny": [what, why]})

    def origin(self, client: tuple[str, int], destination: tuple[str, int]) -> None:
        self._send({"origin": [*client, *destination]})
