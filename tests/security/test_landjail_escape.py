"""Escape attempts from inside a landjail, the holes Landlock alone leaves on this kernel
generation (TCP fast open, MPTCP, UDP, other families, io_uring) plus abstract unix sockets and
signals to processes outside (terminal injection: test_terminal_injection.py). Canary listeners on
host loopback must hear nothing (a raw connect reaches boundary's proxy instead, which refuses it)."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from tests.support import Canary, boundary_run

PROBE = r"""
import ctypes, errno, fcntl, json, os, socket, sys, termios
tcp_port, udp_port, abstract, outside_pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
out = {}
libc = ctypes.CDLL("libc.so.6", use_errno=True)

def attempt(name, fn):
    try:
        out[name] = "ok: " + repr(fn())
    except OSError as e:
        out[name] = "error: " + errno.errorcode.get(e.errno, str(e.errno))

def tfo(flags_call):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        return flags_call(s)
    finally:
        s.close()

MSG_FASTOPEN = 0x20000000
attempt("tfo sendto", lambda: tfo(lambda s: s.sendto(b"GET / HTTP/1.0\r\n\r\n", MSG_FASTOPEN, ("127.0.0.1", tcp_port))))
attempt("tfo sendmsg", lambda: tfo(lambda s: s.sendmsg([b"x"], [], MSG_FASTOPEN, ("127.0.0.1", tcp_port))))
attempt("tfo connect option", lambda: tfo(lambda s: s.setsockopt(socket.IPPROTO_TCP, 30, 1)))
attempt("mptcp", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262))
attempt("sctp", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", udp_port)))
attempt("udp6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"x", ("::ffff:127.0.0.1", udp_port)))
attempt("udplite", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136))
attempt("icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt("vsock", lambda: socket.socket(40, socket.SOCK_STREAM))
attempt("smc", lambda: socket.socket(43, socket.SOCK_STREAM))

def raw_connect():
    # the syscall itself, as a static binary would: no libc wrapper, no shim
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    addr = bytes([2, 0]) + tcp_port.to_bytes(2, "big") + bytes([127, 0, 0, 1]) + bytes(8)
    r = libc.syscall(42, s.fileno(), ctypes.c_char_p(addr), 16)
    if r < 0:
        raise OSError(ctypes.get_errno(), "connect")
    return r
attempt("raw connect syscall", raw_connect)

def io_uring():
    r = libc.syscall(425, 8, ctypes.create_string_buffer(120))
    if r < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")
    return r
attempt("io_uring_setup", io_uring)


def abstract_unix():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    return s.connect("\0" + abstract)
attempt("abstract unix", abstract_unix)
attempt("signal outside", lambda: os.kill(outside_pid, 0))
print(json.dumps(out))
"""


def test_nothing_escapes_the_landjail(tmp_path: Path) -> None:
    canary = Canary()
    abstract = f"boundary-canary-{os.getpid()}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + abstract)
    unix.listen()
    unix.setblocking(False)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    try:
        r = boundary_run(
            tmp_path, "--jail-type", "landjail", "--",
            sys.executable, str(probe), str(canary.tcp_port), str(canary.udp_port), abstract, str(os.getpid()),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        for name in ("tfo sendto", "tfo sendmsg", "tfo connect option", "mptcp", "sctp", "udp", "udp6", "raw",
                     "udplite", "icmp"):  # fmt: skip
            assert out[name] == "error: EACCES", (name, out)
        # the connect itself succeeds: boundary connected it to the proxy, which refuses the destination
        assert out["raw connect syscall"] == "ok: 0", out
        for name in ("packet", "vsock", "smc"):
            assert out[name] == "error: EAFNOSUPPORT", (name, out)
        assert out["io_uring_setup"] == "error: ENOSYS"
        # refused by the socket supervisor (EACCES) before Landlock's scoping (ABI 6, EPERM) would
        assert out["abstract unix"] in ("error: EACCES", "error: EPERM"), out
        assert out["signal outside"] == "error: EPERM", out  # Landlock scope (ABI 6)
        assert canary.heard() == []
        try:
            unix.accept()
            raise AssertionError("the abstract unix canary heard a connection")
        except BlockingIOError:
            pass
    finally:
        canary.close()
        unix.close()


REUSEPORT = r"""
import socket, sys
port = int(sys.argv[1])
s = socket.socket()
try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(5)
    print("joined", socket.create_connection(("127.0.0.1", port), timeout=5).recv(50))
except OSError as e:
    print("refused", e.errno)
"""

USERSOCK = r"""
import socket, struct, sys
try:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 2)
    s.bind((0, 0))
    s.sendto(struct.pack("=IHHII", 22, 0x10, 0, 1, 0) + b"leaked", (int(sys.argv[1]), 0))
    print("sent")
except OSError as e:
    print("refused", e.errno)
"""


def test_no_port_shared_with_a_server_outside(tmp_path: Path) -> None:
    """SO_REUSEPORT would put a jail socket in the same group as a server of the user's outside (same uid): the
    kernel would hand the jail's connects, and the server's clients, across the group (an outside review)."""
    outside = socket.socket()
    outside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    outside.bind(("127.0.0.1", 0))
    outside.listen(5)
    outside.setblocking(False)
    try:
        port = outside.getsockname()[1]
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, "-c", REUSEPORT, str(port))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "refused 1", r.stdout  # EPERM
        try:
            outside.accept()
            raise AssertionError("the outside server was reached")
        except BlockingIOError:
            pass
    finally:
        outside.close()


def test_no_netlink_message_to_another_process(tmp_path: Path) -> None:
    """NETLINK_USERSOCK lets an unprivileged sender reach any process's socket by port id (an outside review)."""
    canary = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 2)
    canary.bind((0, 0))
    canary.setblocking(False)
    try:
        portid = canary.getsockname()[0]
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, "-c", USERSOCK, str(portid))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "refused 13", r.stdout  # EACCES
        try:
            canary.recv(100)
            raise AssertionError("the netlink canary heard a message")
        except BlockingIOError:
            pass
    finally:
        canary.close()


UDP_SHARE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    print("bound")
except OSError as e:
    print("refused", e.errno)
"""


def test_no_udp_port_shared_with_a_service_outside(tmp_path: Path) -> None:
    """SO_REUSEADDR lets two UDP sockets share a port: the jail would get datagrams meant for an outside service
    that set it too (mDNS, statsd; an outside review)."""
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    outside.bind(("127.0.0.1", 0))
    try:
        port = outside.getsockname()[1]
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, "-c", UDP_SHARE, str(port))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "refused 98", r.stdout  # EADDRINUSE
    finally:
        outside.close()
