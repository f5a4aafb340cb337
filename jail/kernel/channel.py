"""Messages between the supervisor and the jail's setup child: one JSON object
per SOCK_SEQPACKET datagram, optionally carrying file descriptors (SCM_RIGHTS).

Side effects: socket I/O only.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any

MAX_MESSAGE = 8192
MAX_FDS = 8


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(msg).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError("message too large")
    socket.send_fds(sock, [data], list(fds))


def recv(sock: socket.socket, timeout: float | None = None) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and its fds; (None, []) when the peer has gone."""
    sock.settimeout(timeout)
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            socket.close(fd)
        return None, []
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError("malformed message")
    return msg, fds
