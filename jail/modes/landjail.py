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
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy.server import bind_explicit

from .. import toolconfig
from ..config import Config
from ..errors import BoundaryError
from ..kernel import caps, init, landlock, seccomp, syscalls
from ..shim import shim_path
from . import Listeners

log = logging.getLogger(__name__)
EXIT_BOUNDARY = 125
HINT_LANDLOCK = "Landlock needs Linux 6.7+ with lsm=landlock; where user namespaces work, use --jail-type nsjail"
SYSTEM_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts")
# tool state under HOME that package managers and build tools write (created when missing: the first two)
HOME_STATE = (".npm", ".npm-global", ".cache", ".yarn", ".pnpm-store", ".local/share/pnpm", ".cargo", "go",
              ".node-gyp", ".config/configstore")  # fmt: skip
HOME_CREATE = (".npm", ".npm-global")


def available() -> tuple[bool, str]:
    abi = landlock.abi_version()
    if abi < landlock.MIN_ABI:
        return False, f"Landlock ABI {abi} (ABI {landlock.MIN_ABI}+ is needed to restrict TCP connections)"
    return True, f"Landlock ABI {abi}"


class LandJail:
    name = "landjail"

    def __init__(self, config: Config, command: Sequence[str]) -> None:
        self.config = config
        self.command = list(command)
        self._pid = 0
        self._pidfd = -1
        self._status: int | None = None
        self._port = 0

    def prepare(self) -> Listeners:
        ok, why = available()
        if not ok:
            raise BoundaryError("start the landjail mode", why, hint=HINT_LANDLOCK)
        try:
            socks = bind_explicit(self.config.proxy_port)
        except OSError as e:
            raise BoundaryError("bind the proxy port", e.strerror or str(e), hint="choose another --proxy-port") from e
        self._port = socks[0].getsockname()[1]
        return Listeners(explicit=socks)

    def child_env(self) -> dict[str, str]:
        env = toolconfig.proxy_env(os.environ, f"http://127.0.0.1:{self._port}")
        env = toolconfig.npm_env(env, str(Path.home()))
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
        home = Path.home()
        cfg = self.config
        write = [str(cfg.workspace), *SYSTEM_WRITABLE, *(str(home / d) for d in HOME_STATE), *map(str, cfg.rw)]
        return landlock.Policy(
            read=["/", *map(str, cfg.ro)],
            write=write,
            devices=list(DEVICES),
            connect_ports=[self._port],
            bind_ports=[] if cfg.no_bind else None,
        )

    def spawn(self) -> None:
        env = self.child_env()
        policy = self.landlock_policy()
        home = Path.home()
        for d in HOME_CREATE:
            with contextlib.suppress(OSError):
                (home / d).mkdir(parents=True, exist_ok=True)
        err_r, err_w = os.pipe()  # O_CLOEXEC: closes with no data once exec succeeds
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(err_r)
                _child(err_w, me, self.command, env, policy)
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
        done = loop.create_future()
        loop.add_reader(self._pidfd, lambda: None if done.done() else done.set_result(None))
        try:
            await done
        finally:
            loop.remove_reader(self._pidfd)
        return self._reap()

    def signal(self, sig: int) -> None:
        if self._pidfd >= 0 and self._status is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def close(self) -> None:
        if self._pid and self._status is None:
            self.signal(signal.SIGKILL)
            self._reap()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def _reap(self) -> int:
        if self._status is None:
            _, status = os.waitpid(self._pid, 0)
            self._status = init.exit_status(status)
        return self._status


def _child(err_w: int, parent: int, command: Sequence[str], env: dict[str, str], policy: landlock.Policy) -> None:
    """The command's process up to exec; reports a failed step on ``err_w`` and exits 125."""
    step = "set the parent-death signal"
    try:
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return
        step = "set no_new_privs"
        caps.no_new_privs()
        if os.geteuid() == 0:
            step = "drop capabilities"
            caps.drop_all()
        step = "apply Landlock"
        landlock.restrict(policy)
        step = "load the seccomp filter"
        seccomp.load()
        init.reset_signals()
    except OSError as e:
        detail = f"{e.strerror or e} ({errno.errorcode.get(e.errno or 0, '?')})"
        hint = HINT_LANDLOCK if step == "apply Landlock" else ""
        os.write(err_w, json.dumps({"step": step, "detail": detail, "hint": hint}).encode())
        return
    init.exec_command(command, env)
