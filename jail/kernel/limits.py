"""Process limits for the command: RLIMIT_NPROC for ``--pids-limit``; ``--memory`` needs a
cgroup, which boundary does not manage (see :func:`memory_warning`).

RLIMIT_NPROC counts the processes of the real uid *per user namespace* (Linux 5.14+): in
nsjail the command's nested namespace counts only the jail's own processes; in landjail it
counts all of the user's processes, so the limit is raised by what already runs.
Side effects: setrlimit on the calling process; reads /proc.
"""

from __future__ import annotations

import os
import resource


def user_processes(uid: int) -> int:
    """Processes (threads count too for RLIMIT_NPROC, but tasks are what we can see cheaply) of ``uid``."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return n


def limit_processes(limit: int | None, *, already: int = 0) -> None:
    """At most ``limit`` more processes (None: no limit). Never raises the hard limit."""
    if limit is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    value = limit + already
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (value, value))


def memory_warning(memory: int | None) -> str | None:
    if memory is None:
        return None
    return (
        f"--memory {memory} cannot be enforced here: boundary has no delegated cgroup v2 to put the command in; "
        "the command runs without a memory limit"
    )
