"""landjail mode: no namespaces at all (for hosts where user namespaces are refused).
The command runs as our child under Landlock (TCP connect only to the proxy's port, files
by grant), a seccomp baseline and no_new_privs, with proxy settings in its environment
and the LD_PRELOAD connect shim for programs that ignore them.

The child's setup is one flat list: die with the supervisor, no_new_privs, drop
capabilities (when started as root), Landlock, seccomp, exec. Every module it needs is
imported before it restricts itself (Landlock would refuse later imports).
Side effects: binds the proxy's loopback port, forks, creates ~/.npm-global and ~/.npm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import policy as fspolicy
from .. import toolconfig
from ..config import Config
from ..errors import BoundaryError, describe
from ..kernel import caps, init, landlock, limits, seccomp, syscalls
from ..kernel.mounts import under
from ..policy import FsPolicy
from ..shim import shim_path
from . import Listeners, exited

log = logging.getLogger(__name__)
EXIT_BOUNDARY = 125
HINT_LANDLOCK = "Landlock needs Linux 6.7+ with lsm=landlock; where user namespaces work, use --jail-type nsjail"
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts")
HOME_CREATE = (".npm", ".npm-global")  # tool state npm needs at once; the rest is granted when it exists


def available() -> tuple[bool, str]:
    abi = landlock.abi_version()
    if abi < landlock.MIN_ABI:
        return False, f"Landlock ABI {abi} (ABI {landlock.MIN_ABI}+ is needed to restrict TCP connections)"
    return True, f"Landlock ABI {abi}"


class LandJail:
    name = "landjail"

    def __init__(self, config: Config, command: Sequence[str], fs: FsPolicy, env: dict[str, str]) -> None:
        self.config = config
        self.command = list(command)
        self.fs = fs
        self.env = env
        self._pid = 0
        self._pidfd = -1
        self._status: int | None = None
        self._port = 0

    def prepare(self) -> Listeners:
        ok, why = available()
        if not ok:
            raise BoundaryError("start the landjail mode", why, hint=HINT_LANDLOCK)
        listeners = Listeners.loopback(self.config.proxy_port)
        self._port = listeners.port
        return listeners

    def child_env(self) -> dict[str, str]:
        env = toolconfig.proxy_env(self.env, f"http://127.0.0.1:{self._port}")
        shim = shim_path()
        if shim is None:
            log.warning("the connect shim is not built (no C compiler at install?): proxy-unaware programs will fail")
        else:
            preload = [p for p in env.get("LD_PRELOAD", "").split() if p]
            env["LD_PRELOAD"] = " ".join([str(shim), *[p for p in preload if p != str(shim)]])
            env["BOUNDARY_SHIM_PROXY"] = f"127.0.0.1:{self._port}"
            env["BOUNDARY_SHIM_KEYS"] = ",".join(toolconfig.restore_keys(env))
        return env

    def landlock_policy(self) -> landlock.Policy:
        """The file policy as grants: Landlock cannot subtract, so each grant is its tree minus the hidden paths.
        --tmpfs paths are granted writable (there is no mount namespace to empty them in)."""
        fs = self.fs
        write_roots = [fs.workspace, *fs.private_tmp, *fs.tool_state, *fs.extra_rw, *fs.tmpfs]
        write: list[str] = []
        for root in write_roots:
            grants = fspolicy.tree_minus_holes(root, fs.hidden)
            if grants != [root] and os.path.isdir(root) and not any(under(root, h) for h in fs.hidden):
                log.warning("%s holds hidden paths: landjail can grant only what is in it now, so new entries "
                            "directly in it cannot be created", root)  # fmt: skip
            write += grants
        read = fspolicy.tree_minus_holes("/", fs.hidden) + list(fs.read_only)
        return landlock.Policy(
            read=read,
            write=write,
            devices=list(DEVICES),
            connect_ports=[self._port],
            bind_ports=[] if self.config.no_bind else None,
        )

    def spawn(self) -> None:
        env = self.child_env()
        for d in HOME_CREATE:
            with contextlib.suppress(OSError):
                (Path(self.fs.home) / d).mkdir(parents=True, exist_ok=True)
        policy = self.landlock_policy()  # after creating the tool dirs, so they are granted
        pids = self.config.pids_limit
        already = limits.user_processes(os.getuid()) if pids is not None else 0
        # orphans of the command become our children, so nothing it starts outlives the run (see close())
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        err_r, err_w = os.pipe()  # O_CLOEXEC: closes with no data once exec succeeds
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(err_r)
                _child(err_w, me, self.command, env, policy, lambda: limits.limit_processes(pids, already=already))
            finally:
                os._exit(EXIT_BOUNDARY)
        os.close(err_w)
        self._pid = pid
        self._pidfd = os.pidfd_open(pid)
        with os.fdopen(err_r, "rb") as f:
            data = f.read(8192)
        if data:
            self._reap()
            err = json.loads(data)
            raise BoundaryError(err["step"], err["detail"], hint=err.get("hint", ""))

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self._reap_orphans)
        try:
            await exited(self._pidfd)
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)
        return self._reap()

    def signal(self, sig: int) -> None:
        if self._pidfd >= 0 and self._status is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def close(self) -> None:
        if self._pid and self._status is None:
            self.signal(signal.SIGKILL)
            self._reap()
        for _ in range(100):  # what the command left running, and what those leave when they die
            orphans = [p for p in _children() if p != self._pid]
            if not orphans:
                break
            for p in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            for p in orphans:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p, 0)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def _reap_orphans(self) -> None:
        for p in _children():
            if p != self._pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p, os.WNOHANG)

    def _reap(self) -> int:
        if self._status is None:
            _, status = os.waitpid(self._pid, 0)
            self._status = init.exit_status(status)
        return self._status


def _children() -> list[int]:
    """Our child processes (/proc/self/task/*/children)."""
    out: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children", encoding="ascii") as f:
            out += [int(p) for p in f.read().split()]
    return out


def _child(
    err_w: int,
    parent: int,
    command: Sequence[str],
    env: dict[str, str],
    policy: landlock.Policy,
    set_limits: Callable[[], None],
) -> None:
    """The command's process up to exec; reports a failed step on ``err_w`` and exits 125."""
    step = "set the parent-death signal"
    try:
        init.die_with_parent(lambda: os.getppid() == parent)
        step = "set no_new_privs"
        caps.no_new_privs()
        if os.geteuid() == 0:
            step = "drop capabilities"
            caps.drop_all()
        step = "set process limits"
        set_limits()
        step = "apply Landlock"
        landlock.restrict(policy)
        step = "load the seccomp filter"
        seccomp.load(network=True)
        init.reset_signals()
    except OSError as e:
        hint = HINT_LANDLOCK if step == "apply Landlock" else ""
        os.write(err_w, json.dumps({"step": step, "detail": describe(e), "hint": hint}).encode())
        return
    init.exec_command(command, env)
