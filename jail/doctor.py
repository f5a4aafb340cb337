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
from .modes.nsjail import HINT_FIREWALL, USERNS_STEP, userns_hint
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


def _in_child(attempt: Callable[[], None]) -> tuple[bool, str]:
    """Run ``attempt`` in a short-lived child (it may change the process for good): (True, what it printed)
    when it worked, else (False, why not)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.dup2(w, 1)
            attempt()
        except OSError as e:
            os.write(w, (e.strerror or describe(e)).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, said


def _nsjail_environment() -> None:
    """nsjail's environment steps (nsjail.ENVIRONMENT_STEPS), as run does them: a user + network namespace,
    then the jail's own rules with the first firewall back end that works. Raises OSError naming the step."""
    import tempfile

    from .modes.nsjail import JAIL_RULES_STEP, USERNS_STEP

    step = USERNS_STEP
    try:
        syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNET)
        step = JAIL_RULES_STEP
        with tempfile.TemporaryDirectory() as lock_dir:
            used = firewall.apply(firewall.jail_rules(), lock_dir=lock_dir, backends=FIREWALL_BACKENDS)
    except firewall.FirewallError as e:
        raise OSError(0, f"{step}: {e.detail}") from e
    except OSError as e:
        raise OSError(e.errno, f"{step}: {describe(e)}") from e
    print(used, end="", flush=True)


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
    ok, why = _in_child(_notify)
    return None if ok else why


def checks() -> list[Check]:
    out = []
    ok, said = _in_child(_nsjail_environment)
    if ok:
        out.append(Check("nsjail", True, f"unprivileged user namespaces work; firewall back end {said}"))
    elif said.startswith(USERNS_STEP):
        out.append(Check("nsjail", False, f"unprivileged user namespaces are refused ({said})", userns_hint()))
    else:
        out.append(Check("nsjail", False, f"no firewall back end works ({said})", HINT_FIREWALL))
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


def auto_choice(cs: list[Check]) -> str | None:
    """What --jail-type auto uses, from the checks (run falls back on the same failures: nsjail.ENVIRONMENT_STEPS)."""
    modes = [c.name for c in cs if c.name in ("nsjail", "landjail") and c.ok]
    return modes[0] if modes else None


def report(*, as_json: bool = False) -> tuple[int, str]:
    """(exit status, text or JSON): 0 when at least one mode works."""
    cs = checks()
    auto = auto_choice(cs)
    code = 0 if auto else 1
    if as_json:
        import json

        data = {
            "checks": {c.name: {"ok": c.ok, "detail": c.detail, "hint": c.hint} for c in cs},
            "auto": auto,
        }
        return code, json.dumps(data, indent=2)
    lines = [c.line() for c in cs] + [
        f"--jail-type auto would use: {auto or 'none: boundary run will refuse (exit 125)'}"
    ]
    return code, "\n".join(lines)
