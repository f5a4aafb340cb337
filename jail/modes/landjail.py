"""landjail mode: no namespaces at all (for hosts where user namespaces are refused).
boundary forks a keeper (subreaper, non-dumpable, its own process group), whose child runs
the command under Landlock (files by grant), a seccomp baseline, the socket supervisor's
notification filter and no_new_privs, with proxy settings in its environment and the
LD_PRELOAD connect shim for programs that ignore them.

The command's setup is one flat list: dumpable (for the listener hand-over), boundary's
process group, die with the keeper, no_new_privs, drop capabilities (when started as root),
limits, Landlock, seccomp, the notification filter, exec. Every module it needs is imported
before it restricts itself (Landlock would refuse later imports).
Side effects: binds the proxy's loopback port, makes the command's TMPDIR, forks; at the end
restores protected paths and quarantines repositories the jail made (jail.guard, jail.quarantine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import guard, inet, quarantine, sockets, toolconfig
from .. import policy as fspolicy
from ..config import Config
from ..errors import BoundaryError, describe
from ..kernel import caps, channel, init, landlock, limits, seccomp, sockdiag, syscalls
from ..kernel.mounts import under
from ..policy import FsPolicy
from ..shim import shim_path
from . import Listeners, exited

log = logging.getLogger(__name__)
EXIT_BOUNDARY = 125
HINT_LANDLOCK = "Landlock needs Linux 6.7+ with lsm=landlock; where user namespaces work, use --jail-type nsjail"
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts")
SETUP_TIMEOUT = 30.0
KEEPER_DEATH_SIGNAL = signal.SIGRTMIN + 1  # K's parent-death signal: boundary is gone, kill everything


def available() -> tuple[bool, str]:
    abi = landlock.abi_version()
    if abi < landlock.MIN_ABI:
        return False, f"Landlock ABI {abi} (ABI {landlock.MIN_ABI}+ is needed to restrict TCP connections)"
    return True, f"Landlock ABI {abi}"


class LandJail:
    name = "landjail"

    def __init__(
        self,
        config: Config,
        command: Sequence[str],
        fs: FsPolicy,
        env: dict[str, str],
        tools: toolconfig.ToolFiles | None = None,
    ) -> None:
        self.config = config
        self.tools = tools
        self.command = list(command)
        self.fs = fs
        self.env = env
        self._pid = 0
        self._pidfd = -1
        self._status: int | None = None
        self._port = 0
        self.denials = sockets.DenyLog()
        self.supervisor: sockets.SupervisorProcess | None = None
        self._tmpdir: list[str] = []
        self._guard: guard.Guard | None = None
        self._holes: list[str] = []
        self._keeper_done = False
        self._listeners: Listeners | None = None
        self._write_roots: tuple[str, ...] = ()

    def prepare(self) -> Listeners:
        ok, why = available()
        if not ok:
            raise BoundaryError("start the landjail mode", why, hint=HINT_LANDLOCK)
        listeners = Listeners.routed(self.config.proxy_port)
        self._listeners = listeners
        self._port = listeners.port
        # the command's own TMPDIR (sockets and all); the host's /tmp is not writable
        self._tmpdir = [tempfile.mkdtemp(prefix=f"boundary-{self.config.run_id}-")]
        return listeners

    def child_env(self) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self._port}"
        tmp = self._tmpdir[0]
        env = toolconfig.proxy_env({**self.env, "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp}, proxy)
        if self.tools is not None:
            env, _ = self.tools.write(env, proxy=proxy)
        shim = shim_path() if self.config.shim else None
        if shim is None:
            if self.config.shim:  # a convenience only: the supervisor routes every connect and DNS query anyway
                log.info("the connect shim is not built (no C compiler at install?): running without it")
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
        write = self._grants([*fs.writable, *fs.tmpfs, *self._tmpdir])
        read = fspolicy.tree_minus_holes("/", fs.hidden) + list(fs.read_only)
        return landlock.Policy(
            read=read,
            write=write,
            # the host's /tmp and /dev/shm are not writable: the user's own files, tools' caches and other programs'
            # shared memory live there (Landlock cannot grant "new files only"); TMPDIR is the command's own;
            # --rw /tmp or --rw /dev/shm opens them
            devices=list(DEVICES),
            # the fallback, where the kernel refuses user notification: the proxy's port (on any address); with the
            # socket supervisor the command connects nowhere itself (boundary connects for it), so none at all
            connect_ports=[self._port],
            bind_ports=[] if self.config.no_bind else None,
        )

    def _put_back(self) -> None:
        """What the jail changed among the protected paths, restored; repositories it made, quarantined. Runs in
        close(), or in the keeper when boundary itself was killed."""
        if self._guard is not None:
            roots = (self.fs.workspace, *self.fs.extra_rw)
            quarantine.end_of_run(self._guard, roots, self.fs.known_gitdirs, self.config.run_id)
            self._guard = None

    def _grants(self, roots: Sequence[str]) -> list[str]:
        out: list[str] = []
        holes = [*self.fs.hidden, *self._holes]
        for root in roots:
            grants = self.fs.grants([root], holes)
            if grants != [root] and os.path.isdir(root) and not any(under(root, h) for h in holes):
                # said with -v only: it is so for every run from a HOME that holds secrets (README says it)
                log.info("%s holds hidden paths: landjail can grant only what is in it now, so new entries "
                         "directly in it cannot be created", root)  # fmt: skip
            out += grants
        return out

    def spawn(self) -> None:
        """Fork the keeper K (a subreaper, non-dumpable, out of the command's Landlock domain, so the command
        can neither signal nor trace it), which forks the command and, when the command exits or boundary
        dies (its parent-death signal), kills every process the command left before it exits itself."""
        env = self.child_env()
        # protected paths inside writable ones: recorded now, put back at the end (too big to copy: not writable)
        protected = [*self.fs.protected, *self.fs.protected_tmp]
        self._guard = guard.Guard.take(protected, self.config.run_id, pinned=self.fs.pinned)
        self._holes = list(self._guard.too_big)
        policy = self.landlock_policy()
        self._write_roots = tuple(policy.write)
        pids = self.config.pids_limit
        already = limits.user_processes(os.getuid()) if pids is not None else 0
        # what K leaves (if K itself is killed) comes back to us: close() kills it
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        mine, theirs = channel.pair()  # the command's setup reports here; closes at exec (CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                mine.close()
                leftovers = [*self._tmpdir, *([self.tools.directory] if self.tools else [])]
                _keeper(me, theirs, self.command, env, policy, lambda: limits.limit_processes(pids, already=already),
                        leftovers, self._put_back)  # fmt: skip
            finally:
                os._exit(EXIT_BOUNDARY)
        theirs.close()
        self._pid = pid
        self._pidfd = os.pidfd_open(pid)
        try:
            self._setup_reports(mine)
        finally:
            mine.close()

    def _setup_reports(self, chan: socket.socket) -> None:
        """Until the command execs (the channel closes): take its socket filter's listener, or its failure."""
        while True:
            msg, _ = channel.recv(chan, SETUP_TIMEOUT)
            if msg is None:
                return
            if "notify" in msg:
                rules = sockets.Rules(
                    own_netns=False, inet=self.targets(), allow_unix=self.fs.allow_unix, write_roots=self._write_roots
                )
                diag = sockdiag.open_diag()
                origins = self._listeners.origins if self._listeners else None
                self.supervisor = sockets.start_supervisor(msg, int(msg["pid"]), diag, rules, self.denials, origins)
                chan.send(b"ok")
                continue
            self._reap()
            raise BoundaryError(msg["step"], msg["detail"], hint=msg.get("hint", ""))

    def targets(self) -> inet.Targets:
        """Where the supervisor sends the command's internet sockets."""
        ls = self._listeners
        assert ls is not None
        return inet.Targets(
            proxy_port=self._port, transparent_port=int(ls.transparent[0].getsockname()[1]),
            dns_port=int(ls.dns[0].getsockname()[1]), ipv6=ls.ipv6, publish=frozenset(self.config.publish),
            no_bind=self.config.no_bind,
        )  # fmt: skip

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
        init.kill_descendants()  # what K could not (K itself killed from outside)
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        if not self._keeper_done:  # the keeper was killed (or never ran): its end-of-run work falls to us
            self._put_back()
        for d in self._tmpdir:
            shutil.rmtree(d, ignore_errors=True)
        self._tmpdir = []
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def _reap_orphans(self) -> None:
        for p in init.children():
            if p != self._pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p, os.WNOHANG)

    def _reap(self) -> int:
        if self._status is None:
            _, status = os.waitpid(self._pid, 0)
            self._status = init.exit_status(status)
            self._keeper_done = os.WIFEXITED(status)  # it exits itself only after its last rites
        return self._status


def _keeper(
    boundary: int,
    chan: socket.socket,
    command: Sequence[str],
    env: dict[str, str],
    policy: landlock.Policy,
    set_limits: Callable[[], None],
    leftovers: Sequence[str] = (),
    put_back: Callable[[], None] = lambda: None,
) -> NoReturn:
    """K: the command's parent and the subreaper of everything it starts; see LandJail.spawn. ``leftovers``
    (the command's TMPDIR, the run's tool config files) are removed once everything is dead, so that they go
    even when boundary itself was killed."""
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    caps.non_dumpable()
    group = os.getpgrp()
    os.setpgid(0, 0)  # out of reach of `kill -9 -PGID` aimed at boundary and the command
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, KEEPER_DEATH_SIGNAL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {KEEPER_DEATH_SIGNAL})  # waited for in init.run
    if os.getppid() != boundary:  # boundary died before the prctl
        os._exit(EXIT_BOUNDARY)
    init.run(
        command, lambda: _child(chan, group, command, env, policy, set_limits), env, after_fork=chan.close,
        parent_death=KEEPER_DEATH_SIGNAL, at_exit=lambda: _last_rites(leftovers, put_back),
    )  # fmt: skip


def _last_rites(leftovers: Sequence[str], put_back: Callable[[], None]) -> None:
    """Once the command's whole tree is dead: restore and quarantine here (so it happens even when boundary was
    killed; boundary does it only when this keeper did not get to), remove the leftovers."""
    init.kill_descendants()
    with contextlib.suppress(Exception):
        put_back()
    for d in leftovers:  # rmtree never follows the symlinks the jail may have left in them
        shutil.rmtree(d, ignore_errors=True)


def _child(
    chan: socket.socket,
    group: int,
    command: Sequence[str],
    env: dict[str, str],
    policy: landlock.Policy,
    set_limits: Callable[[], None],
) -> None:
    """The command's process up to exec (init.run execs it); reports a failed step on ``chan`` and exits 125."""
    step = "make the command's process dumpable"
    try:
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)  # K is not; boundary takes the filter's listener from here
        step = "join boundary's process group"
        os.setpgid(0, group)  # the terminal's foreground group when boundary has it: ^C, job control, tty reads
        step = "set the parent-death signal"
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        step = "set no_new_privs"
        caps.no_new_privs()
        if os.geteuid() == 0:
            step = "drop capabilities"
            caps.drop_all()
        step = "set process limits"
        set_limits()
        limits.restore_nofile()
        step = "load the socket filter"
        listener, why = sockets.load_filter(routed=True)
        if listener >= 0:  # boundary connects and binds for the command: it may do neither itself
            policy = dataclasses.replace(policy, connect_ports=[], bind_ports=[])
        step = "apply Landlock"
        landlock.restrict(policy)
        step = "load the seccomp filter"
        seccomp.load(network=True, udp=listener >= 0)
        step = "hand the socket filter to boundary"
        sockets.hand_over(chan, listener, why)  # the channel itself closes at exec
    except OSError as e:
        hint = HINT_LANDLOCK if step == "apply Landlock" else ""
        chan.send(json.dumps({"step": step, "detail": describe(e), "hint": hint}).encode())
        os._exit(EXIT_BOUNDARY)
