"""Capabilities and no_new_privs for the command (pyprctl, pure Python).

``non_dumpable`` keeps boundary's helper processes that the command can see (the jail's
pid 1, landjail's keeper) out of reach of ptrace and /proc/PID/mem.
``drop_all`` empties the bounding and ambient sets and the inheritable,
permitted and effective sets; the caller must be done with every privileged
step. Side effects: prctl/capset on the calling thread.
"""

from __future__ import annotations

import pyprctl

from . import syscalls


def drop_all() -> None:
    for cap in pyprctl.capbset_probe():
        pyprctl.capbset_drop(cap)
    if pyprctl.cap_ambient_supported():
        pyprctl.cap_ambient_clear_all()
    state = pyprctl.CapState.get_current()
    state.inheritable.clear()
    state.permitted.clear()
    state.effective.clear()
    state.set_current()


def no_new_privs() -> None:
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def non_dumpable() -> None:
    """No ptrace, /proc/PID/mem, process_vm_* or pidfd_getfd on this process by anyone without
    CAP_SYS_PTRACE in its memory's user namespace (the host's, for a fork of boundary that never
    execs). Reset by execve, so the command it starts is dumpable again."""
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
