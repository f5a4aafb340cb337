"""Process limits: RLIMIT_NPROC for ``--pids-limit``; ``--memory`` needs a cgroup, which
boundary does not manage (see :func:`memory_warning`); RLIMIT_NOFILE for boundary itself.

RLIMIT_NPROC counts the processes of the real uid *per user namespace* (Linux 5.14+): in
nsjail the command's nested namespace counts only the jail's own processes; in landjail it
counts all of the user's processes, so the limit is raised by what already runs.

The proxy holds two descriptors per connection, so boundary raises its own soft RLIMIT_NOFILE
to the hard limit (:func:`raise_nofile`, at start); the command gets the caller's soft limit
back (:func:`restore_nofile`, right before exec), the hard limit being untouched.
Side effects: setrlimit on the calling process; reads /proc.
"""

from __future__ import annotations

import logging
import os
import resource

log = logging.getLogger(__name__)

# the caller's soft RLIMIT_NOFILE before raise_nofile; forked children (the jail's processes) inherit it
_caller_nofile: int | None = None


def user_processes(uid: int) -> int:
    """Processes (threads count too for RLIMIT_NPROC, but tasks are what we can see cheaply) of ``uid`` in this
    user namespace: only they count against our RLIMIT_NPROC (under ``unshare -r`` the user's processes outside
    show as ``uid`` too, and do not). One whose namespace cannot be read (not dumpable: boundary's own helpers)
    is left out, which can only make the limit a little tighter."""
    try:
        own_ns = os.stat("/proc/self/ns/user").st_ino
    except OSError:
        own_ns = None
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
                if own_ns is not None and os.stat(f"/proc/{entry.name}/ns/user").st_ino != own_ns:
                    continue
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


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, for boundary's own process and what it forks; the caller's
    soft limit is remembered (once) for :func:`restore_nofile`. Where the kernel refuses, the soft limit stays."""
    global _caller_nofile
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _caller_nofile is None:
        _caller_nofile = soft
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as e:
        log.debug("cannot raise the soft RLIMIT_NOFILE from %d to %d: %s", soft, hard, e)


def restore_nofile() -> None:
    """The caller's soft RLIMIT_NOFILE back (in the command's process, before exec); no-op without
    :func:`raise_nofile`. Lowering a soft limit needs no privilege, in any user namespace."""
    if _caller_nofile is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_caller_nofile, hard))


def memory_warning(memory: int | None) -> str | None:
    if memory is None:
        return None
    return (
        f"--memory {memory} cannot be enforced here: boundary has no delegated cgroup v2 to put the command in; "
        "the command runs without a memory limit"
    )
