"""nsjail mode: rootless user + network + mount + pid (+ ipc, uts) namespaces,
with every TCP connection and DNS query of the command transparently redirected
to the supervisor's proxy.

Process tree (DESIGN.md section 2):
  supervisor (this process, host namespaces): serves the proxy on sockets that
  live in the jail's gateway netns, received over a socketpair
  `- S, the setup child: user ns (0 -> the caller) + net ns J + mount/ipc/uts;
     gateway net ns G joined by a veth; rules in G; listener and DNS sockets made
     in G and sent up; mount plan; then a pid namespace for its child
     `- P1, pid 1: fresh /proc, a nested user ns (the command keeps no capability
        over J, G or the mounts), capabilities dropped, no_new_privs, then the
        init loop (jail.kernel.init) that runs the command.
S and P1 die with their parent (PDEATHSIG); P1's death tears the pid ns down.
Side effects: fork, namespaces, helper exec (nft/iptables-restore) inside G.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from .. import guard, quarantine, sockets
from ..config import Config
from ..errors import BoundaryError, describe
from ..kernel import caps, channel, firewall, init, limits, mounts, netlink, netns, seccomp, sockdiag, syscalls, userns
from ..policy import FsPolicy
from . import Listeners, exited

log = logging.getLogger(__name__)
PROXY_PORT = 15001
DNS_PORT = 53
SETUP_TIMEOUT = 30.0
USERNS_STEP = "create the jail's user namespace"
GATEWAY_RULES_STEP = "apply the redirect rules in the gateway"
JAIL_RULES_STEP = "apply the jail's output filter"
# the host cannot give nsjail what it needs: --jail-type auto then uses landjail (run and doctor alike)
ENVIRONMENT_STEPS = frozenset({USERNS_STEP, GATEWAY_RULES_STEP, JAIL_RULES_STEP})
EXIT_BOUNDARY = 125

HINT_USERNS = (
    "unprivileged user namespaces are refused here (see sysctls kernel.unprivileged_userns_clone, "
    "user.max_user_namespaces and kernel.apparmor_restrict_unprivileged_userns); use --jail-type landjail"
)
HINT_NESTED = (
    "this already runs inside a boundary jail ({mode}), which refuses new namespaces: use --jail-type landjail "
    "(--jail-type auto does)"
)


def userns_hint() -> str:
    mode = os.environ.get("BOUNDARY_JAIL")
    return HINT_NESTED.format(mode=mode) if mode else HINT_USERNS


HINT_FIREWALL = (
    "the kernel needs nf_tables (or install nftables / iptables for the other back ends); or --jail-type landjail"
)


class _StepError(Exception):
    def __init__(self, step: str, detail: str, hint: str = "") -> None:
        super().__init__(step)
        self.step, self.detail, self.hint = step, detail, hint


def _step(step: str, fn: Callable[[], Any], hint: str = "") -> Any:
    try:
        return fn()
    except OSError as e:
        raise _StepError(step, describe(e), hint) from e
    except firewall.FirewallError as e:
        raise _StepError(step, e.detail, hint) from e


class NsJail:
    name = "nsjail"

    def __init__(
        self,
        config: Config,
        command: Sequence[str],
        fs: FsPolicy,
        env: dict[str, str],
        files: Mapping[str, bytes] | None = None,
        tmp_files: Mapping[str, bytes] | None = None,
    ) -> None:
        """``files``: extra files to bind over their targets (the CA bundle over the distro bundles);
        ``tmp_files``: files made in the jail's own /tmp (the tool config files)."""
        self.config = config
        self.command = list(command)
        self.fs = fs
        self.env = env
        self.files = dict(files or {})
        self.tmp_files = dict(tmp_files or {})
        self._chan: socket.socket | None = None
        self._setup_pid = 0
        self._pid1_fd = -1  # a pidfd: signals never reach a recycled pid
        self._status: int | None = None
        self._diag: socket.socket | None = None
        self.denials = sockets.DenyLog()
        self.supervisor: sockets.SupervisorProcess | None = None
        self._made: list[tuple[int, str]] = []
        self._guard: guard.Guard | None = None

    # -- supervisor side ---------------------------------------------------
    def prepare(self) -> Listeners:
        # protected directories that do not exist yet are made (empty), so the mount plan can make them read-only
        self._made = _make_placeholders(self.fs.placeholders, self.fs.placeholder_files)
        self._guard = guard.Guard.take(self.fs.protected, self.config.run_id)
        parent, child = channel.pair()
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # S: never returns into the caller's stack
            code = EXIT_BOUNDARY
            try:
                parent.close()
                code = _setup_child(child, me, self)
            except BaseException as e:  # S must end here, never unwind into the caller
                with contextlib.suppress(Exception):
                    os.write(2, f"boundary: jail setup failed: {e!r}\n".encode())
            finally:
                os._exit(code)
        child.close()
        self._chan, self._setup_pid = parent, pid
        try:
            msg, fds = channel.recv(parent, SETUP_TIMEOUT)
        except TimeoutError:
            raise BoundaryError("set up the jail", "the setup process did not answer in time") from None
        if msg is None or "error" in msg:
            err = (msg or {}).get("error") or {}
            status = self._reap_setup()
            raise BoundaryError(
                err.get("step", "set up the jail"),
                err.get("detail", f"the setup process exited with status {status}"),
                hint=err.get("hint", ""),
            )
        socks = [socket.socket(fileno=fd) for fd in fds]
        n_tcp, n_dns = int(msg["ready"]["tcp"]), int(msg["ready"]["dns"])
        self._diag = socks[n_tcp + n_dns]
        return Listeners(transparent=socks[:n_tcp], dns=socks[n_tcp : n_tcp + n_dns])

    def spawn(self) -> None:
        assert self._chan is not None
        channel.send(self._chan, {"go": True})
        got: dict[str, Any] = {}
        while "pid1" not in got or "notify" not in got:  # from S and from pid 1, in either order
            try:
                msg, _ = channel.recv(self._chan, SETUP_TIMEOUT)
            except TimeoutError:
                raise BoundaryError("start the command", "the jail did not start it in time") from None
            if msg is None or "error" in msg:
                err = (msg or {}).get("error") or {}
                self._reap_setup()
                raise BoundaryError(err.get("step", "start the command"), err.get("detail", "the jail exited"))
            got.update(msg)
        pid1 = int(got["pid1"])
        with contextlib.suppress(ProcessLookupError):  # already gone: nothing to signal
            self._pid1_fd = os.pidfd_open(pid1)
        self.supervisor = sockets.start_supervisor(
            got,
            pid1,
            self._diag,
            sockets.Rules(own_netns=True, allow_unix=self.fs.allow_unix, pid_ns=-1),
            self.denials,
        )
        channel.send(self._chan, {"ack": True})

    async def wait(self) -> int:
        pidfd = os.pidfd_open(self._setup_pid)
        try:
            await exited(pidfd)
        finally:
            os.close(pidfd)
        return self._reap_setup()

    def signal(self, sig: int) -> None:
        if self._pid1_fd >= 0 and self._status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(self._pid1_fd, sig)

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        elif self._diag is not None:
            self._diag.close()
        if self._setup_pid and self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._setup_pid, signal.SIGKILL)
            self._reap_setup()
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        if self._pid1_fd >= 0:
            os.close(self._pid1_fd)
            self._pid1_fd = -1
        # the jail is gone: nothing of it can race what follows
        if self._guard is not None:  # protected names the jail created where none was (so none was bound)
            roots = (self.fs.workspace, *self.fs.extra_rw)
            quarantine.end_of_run(self._guard, roots, self.fs.known_gitdirs, self.config.run_id)
            self._guard = None
        for parent, name in reversed(self._made):  # still empty: the jail could not write into them
            with contextlib.suppress(OSError):
                _remove_if_empty(parent, name)
            os.close(parent)
        self._made = []

    def _reap_setup(self) -> int:
        if self._status is None:
            _, status = os.waitpid(self._setup_pid, 0)
            self._status = init.exit_status(status)
        return self._status


def _make_placeholders(dirs: Sequence[str], files: Sequence[str]) -> list[tuple[int, str]]:
    """Create the missing protected directories and (empty) files; for each one made, an O_PATH fd of its
    directory and its name (removed through these later, wherever the jail moved things meanwhile)."""
    made = []
    for path in (*dirs, *files):
        try:
            parent = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        name = os.path.basename(path)
        try:
            if path in files:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=parent))
            else:
                os.mkdir(name, 0o700, dir_fd=parent)
        except OSError:
            os.close(parent)
            continue
        made.append((parent, name))
    return made


def _remove_if_empty(parent: int, name: str) -> None:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        os.rmdir(name, dir_fd=parent)
    elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
        os.unlink(name, dir_fd=parent)


# -- S: the setup child ------------------------------------------------------
def _listeners(plan: netns.Addresses) -> list[socket.socket]:
    """TCP listeners (v4, v6) then DNS sockets (v4, v6) on the gateway's veth addresses.

    The DNS sockets are bound to the exact addresses REDIRECT rewrites to, or replies would miss conntrack.
    """
    out: list[socket.socket] = []
    for fam, addr in ((socket.AF_INET, plan.gw_v4), (socket.AF_INET6, plan.gw_v6)):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, PROXY_PORT))
        s.listen(1024)
        out.append(s)
    for fam, addr in ((socket.AF_INET, plan.gw_v4), (socket.AF_INET6, plan.gw_v6)):
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((addr, DNS_PORT))
        out.append(u)
    return out


def _setup_child(chan: socket.socket, parent: int, jail: NsJail) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's ^C is for the command; the supervisor decides
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    init.die_with_parent(lambda: os.getppid() == parent)
    try:
        listeners, uid, gid = _prepare_namespaces(jail.config, jail.fs, jail.files, jail.tmp_files)
    except _StepError as e:
        channel.send(chan, {"error": {"step": e.step, "detail": e.detail, "hint": e.hint}})
        return EXIT_BOUNDARY
    channel.send(chan, {"ready": {"tcp": 2, "dns": 2, "diag": 1}}, [s.fileno() for s in listeners])
    for s in listeners:
        s.close()
    msg, _ = channel.recv(chan)
    if msg is None or not msg.get("go"):
        return EXIT_BOUNDARY
    # the pid namespace only now: an exec'd helper must never have been its pid 1
    alive_r, alive_w = os.pipe()
    try:
        syscalls.unshare(syscalls.CLONE_NEWPID)
        pid1 = os.fork()
    except OSError as e:
        channel.send(chan, {"error": {"step": "create the jail's pid namespace", "detail": str(e.strerror)}})
        return EXIT_BOUNDARY
    if pid1 == 0:
        os.close(alive_w)
        _pid1(alive_r, chan, jail, uid, gid)
    os.close(alive_r)
    channel.send(chan, {"pid1": pid1})
    chan.close()
    while True:
        try:
            _, status = os.waitpid(pid1, 0)
            return init.exit_status(status)
        except InterruptedError:
            continue


def _prepare_namespaces(
    config: Config, fs: FsPolicy, files: Mapping[str, bytes], tmp_files: Mapping[str, bytes]
) -> tuple[list[socket.socket], int, int]:
    """S's namespace work, in order; returns the gateway sockets and the caller's (uid, gid)."""
    plan = netns.PLAN
    uid, gid = _step(
        USERNS_STEP,
        lambda: userns.enter_as_root(
            syscalls.CLONE_NEWNET | syscalls.CLONE_NEWNS | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWUTS
        ),
        userns_hint(),
    )
    # iptables-legacy's lock (/run/xtables.lock is root's) goes to a tmpfs of our own mount namespace
    lock_dir = _step("mount a scratch tmpfs for helpers", mounts.scratch)
    jail_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    _step("create the gateway network namespace", lambda: syscalls.unshare(syscalls.CLONE_NEWNET), HINT_USERNS)
    gw_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    gw = _step("open rtnetlink in the gateway", lambda: netlink.Netlink(netlink.NETLINK_ROUTE))
    with gw:
        _step("enter the jail network namespace", lambda: syscalls.setns(jail_fd, syscalls.CLONE_NEWNET))
        jail = _step("open rtnetlink in the jail", lambda: netlink.Netlink(netlink.NETLINK_ROUTE))
        with jail:
            _step("create the veth pair", lambda: netns.configure(jail, gw, gw_fd, plan))
    _step("enter the gateway network namespace", lambda: syscalls.setns(gw_fd, syscalls.CLONE_NEWNET))
    listeners: list[socket.socket] = _step("create the proxy's sockets in the gateway", lambda: _listeners(plan))
    gw_rules = firewall.gateway_rules(firewall.Plan(plan.gw_if, PROXY_PORT, DNS_PORT))
    backend: str = _step(
        GATEWAY_RULES_STEP,
        lambda: firewall.apply(gw_rules, lock_dir=lock_dir, backends=config.firewall),
        HINT_FIREWALL,
    )
    _step("return to the jail network namespace", lambda: syscalls.setns(jail_fd, syscalls.CLONE_NEWNET))
    _step(
        JAIL_RULES_STEP,
        lambda: firewall.apply(firewall.jail_rules(), lock_dir=lock_dir, backends=(backend,)),
        HINT_FIREWALL,
    )
    # unix_diag in J lists exactly the jail's own unix sockets (the socket supervisor's test)
    listeners.append(_step("open the jail's sock_diag socket", sockdiag.open_diag))
    os.close(jail_fd)
    os.close(gw_fd)
    mplan = mounts.Plan(
        writable=tuple(fs.grants(fs.writable)), read_only=(*fs.read_only, *fs.protected),
        private_tmp=fs.private_tmp, hide=fs.hidden,
        files={**files, "/etc/resolv.conf": mounts.resolv_conf((plan.gw_v4, plan.gw_v6))}, tmpfs=fs.tmpfs,
        tmpfs_size=config.tmpfs_size, tmp_files=tmp_files,
    )  # fmt: skip
    _step("apply the jail's mount plan", lambda: mounts.apply(mplan))
    return listeners, uid, gid


# -- P1: pid 1 of the jail ---------------------------------------------------
def _pid1(alive_r: int, chan: socket.socket, jail: NsJail, uid: int, gid: int) -> NoReturn:
    """``uid``/``gid``: the caller's ids on the host, which the command gets back in the nested userns.
    ``chan``: to the supervisor, which takes the socket filter's listener from here (pidfd_getfd)."""
    try:
        # S holds the pipe's write end: readable (EOF) means S is already gone
        init.die_with_parent(lambda: not select.select([alive_r], [], [], 0)[0])
        os.close(alive_r)
        _step("mount /proc for the jail's pid namespace", mounts.mount_proc)
        _step("drop privileges (nested user namespace)", lambda: userns.enter_nested(uid, gid))
        _step("drop capabilities", caps.drop_all)
        _step("set no_new_privs", caps.no_new_privs)
        # while still dumpable: the supervisor takes the listener's fd from here
        sockets.hand_over_listener(chan, groups=True)
        chan.close()
        # the command can see pid 1: nothing may ptrace it or write its memory, and it is filtered too
        _step("make pid 1 non-dumpable", caps.non_dumpable)
        _step("load the seccomp filter", lambda: seccomp.load(network=False, namespaces=jail.config.nested_userns))
    except _StepError as e:
        msg = f"boundary: failed to {e.step}: {e.detail}" + (f" (hint: {e.hint})" if e.hint else "")
        os.write(2, (msg + "\n").encode())
        os._exit(EXIT_BOUNDARY)

    def before_exec() -> None:  # in the command's process (pid 1's filter is inherited)
        limits.limit_processes(jail.config.pids_limit)
        limits.restore_nofile()

    init.run(jail.command, before_exec=before_exec, env=jail.env)
