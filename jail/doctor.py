"""``boundary doctor``: which jail modes work on this machine, and exactly why not + how to fix.

Side effects: forks a short-lived child that tries to create a user + network namespace.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .config import FIREWALL_BACKENDS
from .errors import describe
from .kernel import firewall, landlock, syscalls, unotify
from .modes.nsjail import HINT_FIREWALL, HINT_USERNS
from .shim import shim_path


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def line(self) -> str:
        state = "ok" if self.ok else "unavailable"
        return f"{self.name}: {state}: {self.detail}" + (f" (hint: {self.hint})" if self.hint and not self.ok else "")


def _in_child(attempt: Callable[[], None]) -> str | None:
    """Run ``attempt`` in a short-lived child (it may change the process for good); None when it worked,
    else why not."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            attempt()
        except OSError as e:
            os.write(w, describe(e).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        why = f.read().decode()
    os.waitpid(pid, 0)
    return why or None


def _try_userns() -> str | None:
    """None when an unprivileged user + network namespace can be created, else why not."""
    return _in_child(lambda: syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNET))


def _notify() -> None:
    """Each piece the socket supervisor needs, named when it fails."""
    import ctypes

    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    step = "seccomp user notification"
    try:
        listener = unotify.install(inet=True)
        step = "pidfd_open"
        pidfd = os.pidfd_open(os.getpid())
        step = "pidfd_getfd"
        os.close(unotify.take_fd(pidfd, listener))
        step = "process_vm_readv/writev"
        buf = ctypes.create_string_buffer(b"boundary", 8)
        unotify.read_memory(os.getpid(), ctypes.addressof(buf), 8)
        unotify.write_memory(os.getpid(), ctypes.addressof(buf), b"checked!")
    except OSError as e:
        raise OSError(e.errno, f"{step}: {e.strerror}") from e


def _try_notify() -> str | None:
    """None when a seccomp user-notification filter loads and pidfd_getfd works, else why not."""
    return _in_child(_notify)


def checks() -> list[Check]:
    out = []
    why = _try_userns()
    backends = firewall.installed(FIREWALL_BACKENDS)
    if why is not None:
        out.append(Check("nsjail", False, f"unprivileged user namespaces are refused: {why}", HINT_USERNS))
    elif not backends:
        out.append(Check("nsjail", False, "neither nft nor iptables-restore is installed", HINT_FIREWALL))
    else:
        out.append(Check("nsjail", True, f"unprivileged user namespaces work; firewall tool {backends[0][0]}"))
    abi = landlock.abi_version()
    if abi < landlock.MIN_ABI:
        out.append(Check("landjail", False, f"Landlock ABI {abi} (TCP rules need ABI {landlock.MIN_ABI}+)",
                         "boot Linux 6.7+ with Landlock in the lsm= list"))  # fmt: skip
    else:
        shim = shim_path()
        extra = "connect shim built" if shim else "connect shim not built (optional; a C compiler at install builds it)"
        out.append(Check("landjail", True, f"Landlock ABI {abi}; {extra}"))
    why = _try_notify()
    if why is None:
        out.append(Check("socket supervisor", True, "seccomp user notification, pidfd_getfd and process_vm_readv "
                         "work: outside unix sockets are refused in both modes, and in landjail every connect and "
                         "DNS query goes through boundary"))  # fmt: skip
    else:
        out.append(Check("socket supervisor", False, f"{why}: outside unix sockets stay reachable, and landjail "
                         "falls back to a port-only Landlock rule (any address on the proxy's port is reachable; "
                         "programs that ignore the proxy and the shim cannot connect); boundary warns on every run",
                         "Linux 5.9+, and a seccomp profile that allows seccomp(2) with "
                         "SECCOMP_FILTER_FLAG_NEW_LISTENER, pidfd_getfd and process_vm_readv/writev"))  # fmt: skip
    out.append(Check("memory limits", False, "boundary does not manage cgroups: --memory is not enforced"))
    return out


def report() -> tuple[int, str]:
    """(exit status, text): 0 when at least one mode works."""
    cs = checks()
    modes = [c for c in cs if c.name in ("nsjail", "landjail") and c.ok]
    auto = modes[0].name if modes else "none: boundary run will refuse (exit 125)"
    lines = [c.line() for c in cs] + [f"--jail-type auto would use: {auto}"]
    return (0 if modes else 1), "\n".join(lines)
