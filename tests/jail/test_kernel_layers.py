"""The layers under the socket supervisor, each tried alone with the real kernel: Landlock with no TCP port
refuses every connect (a process that somehow skipped the supervisor reaches nothing), and once the
supervisor is gone a notified call fails instead of running."""

from __future__ import annotations

import os
import socket

from jail.kernel import landlock, syscalls, unotify


def _in_child(fn: object) -> int:
    """Run ``fn`` in a forked child; its return value (0-255) is the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            code = fn()  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _try_connect(port: int) -> int:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return 0
    except OSError as e:
        return e.errno or 254


def _attempt_reaches_nothing(setup: object) -> int:
    """A connect to a loopback canary from a child that first runs ``setup``: its errno; the canary must hear
    nothing."""
    canary = socket.create_server(("127.0.0.1", 0))
    canary.setblocking(False)
    port = canary.getsockname()[1]

    def child() -> int:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        setup()  # type: ignore[operator]
        return _try_connect(port)

    try:
        code = _in_child(child)
        try:
            canary.accept()
            raise AssertionError("the canary heard a connection")
        except BlockingIOError:
            pass
        return code
    finally:
        canary.close()


def test_landlock_without_ports_refuses_every_tcp_connect() -> None:
    policy = landlock.Policy(read=["/"], write=[], connect_ports=[])
    assert _attempt_reaches_nothing(lambda: landlock.restrict(policy)) == 13  # EACCES


def test_notified_calls_fail_once_nobody_supervises() -> None:
    # the only listener closed, as when boundary dies: the call does not run (ENOSYS)
    assert _attempt_reaches_nothing(lambda: os.close(unotify.install(inet=True))) == 38
