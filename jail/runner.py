"""The one place that builds the policy, the audit sink and the proxy from a
Config, and runs either a jail mode or the proxy alone.

Side effects: opens the audit log, binds loopback listeners, installs signal
handlers while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from proxy.audit import AuditSink
from proxy.mitm import MitmError, MitmSettings
from proxy.mitm import preload as mitm_preload
from proxy.origins import Origins
from proxy.secretswap import SecretSet
from proxy.server import ProxyServer
from proxy.upstream import Upstream

from . import policy as fspolicy
from . import presets, secretconf, toolconfig, trust
from .config import Config, JailType
from .errors import BoundaryError, describe
from .kernel import limits
from .kernel.mounts import under
from .modes import Jail, Listeners

log = logging.getLogger(__name__)

# sent by the terminal to its whole foreground process group (the command included): forwarded only
# when we are not that group; the others always come from a process and are always forwarded
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGWINCH)
ALWAYS_FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def build_proxy(
    config: Config,
    *,
    mode: str,
    stderr: TextIO | None = None,
    quiet: bool = False,
    names: Callable[[str], str | None] | None = None,
    origins: Origins | None = None,
    hold: bool = False,
) -> ProxyServer:
    audit = AuditSink(config.audit_log, run_id=config.run_id, mode=mode, stderr=stderr, quiet=quiet, hold=hold)
    upstream = Upstream(
        host_map=dict(config.host_map), allow_private=config.allow_private, proxy=config.upstream_proxy,
        nested=bool(os.environ.get(NESTED_VAR)),
    )  # fmt: skip
    return ProxyServer(
        config.policy(),
        upstream,
        audit,
        mitm=config.mitm,
        mitm_settings=MitmSettings(confdir=config.state_dir / "ca", upstream_ca=config.upstream_ca),
        names=names,
        origins=origins,
        secrets=SecretSet(config.secrets),
    )


def prepare_mode(config: Config, command: Sequence[str]) -> tuple[Jail, Listeners]:
    """The jail for ``--jail-type``, prepared. auto: nsjail, or landjail where the host cannot give nsjail what it
    needs (a failure in one of nsjail.ENVIRONMENT_STEPS: the same steps `boundary doctor` tries)."""
    from .modes.landjail import LandJail

    with contextlib.suppress(OSError):  # boundary's own (hidden in the jail): made before the policy looks
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _missing_paths(config)
    fs = fspolicy.build(config, os.environ, os.getuid())
    with contextlib.suppress(OSError):  # the command starts in its workspace unless it is started inside it
        if not under(os.getcwd(), str(config.workspace)):
            os.chdir(config.workspace)
    for d in (fs.npm_prefix, *(os.path.join(fs.home, h) for h in fspolicy.HOME_CREATE)):
        with contextlib.suppress(OSError):  # tool state npm needs at once (the rest is used where it exists)
            os.makedirs(d, exist_ok=True)
    env = toolconfig.npm_env(
        fspolicy.jail_env(os.environ, fs.allow_unix, config.env_deny, config.env_allow), fs.npm_prefix
    )
    try:
        ca = trust.prepare(config, env)
    except (OSError, MitmError) as e:
        detail = describe(e) if isinstance(e, OSError) else str(e)
        raise BoundaryError(
            "prepare the CA bundle for interception", detail,
            hint="interception needs a writable state dir: set XDG_STATE_HOME (default ~/.local/state)",
        ) from e  # fmt: skip
    files: dict[str, bytes] = {}
    if ca is not None:
        env = ca.env(env)
        files = ca.files()
    tools = toolconfig.ToolFiles(str(run_dir(config)), fs.home, None if ca is None else str(ca.bundle), fs.npm_prefix)
    # an agent that sandboxes its own commands is told it runs in an outer sandbox where it cannot make its own
    told = presets.agent_argv(config.agent, list(command))
    ns_command = command if config.nested_userns else told  # nsjail with nested namespaces: its own sandbox works
    command = told
    if config.jail_type is JailType.LANDJAIL:
        if config.nested_userns:
            log.info("--nested-userns has no effect in landjail (it has no namespaces to nest)")
        _audit_out_of_reach(config, fs, "landjail")
        jail: Jail = LandJail(config, command, fs, {**env, NESTED_VAR: "landjail"}, tools)
        return jail, jail.prepare()
    from .modes.nsjail import ENVIRONMENT_STEPS, NsJail  # (a landjail run never imports it)

    _audit_out_of_reach(config, fs, "nsjail")
    ns_env, tmp_files = tools.in_jail({**env, NESTED_VAR: "nsjail"}, NSJAIL_TOOL_DIR)
    ns_fs = dataclasses.replace(fs, read_only=(*fs.read_only, *_own_install_in_tmpfs()))
    npmrc = os.path.join(fs.home, ".npmrc")
    if os.path.isfile(npmrc):  # bound over ~/.npmrc too, for an npm whose environment a parent stripped
        files[npmrc] = tmp_files[os.path.join(NSJAIL_TOOL_DIR, "npmrc")]
        ns_fs = dataclasses.replace(fs, hidden=tuple(h for h in fs.hidden if h != npmrc))
    jail = NsJail(config, ns_command, ns_fs, ns_env, files, tmp_files)
    try:
        return jail, jail.prepare()
    except BoundaryError as e:
        jail.close()
        if config.jail_type is JailType.NSJAIL or e.step not in ENVIRONMENT_STEPS:
            raise
        log.info("nsjail cannot run here (failed to %s: %s); using landjail", e.step, e.detail)
    _audit_out_of_reach(config, fs, "landjail")
    jail = LandJail(config, command, fs, {**env, NESTED_VAR: "landjail"}, tools)
    return jail, jail.prepare()


def _missing_paths(config: Config) -> None:
    """A missing --rw directory is made when its parent is the user's to write (``--rw ~/.codex`` before codex
    first ran); any other missing --rw/--ro path grants nothing: said once each."""
    for path in config.rw:
        p = path.expanduser()
        if p.exists() or p.is_symlink():
            continue
        if p.parent.is_dir() and os.access(p.parent, os.W_OK):
            try:
                p.mkdir(mode=0o700)
                log.info("--rw %s did not exist: made it (empty)", p)
                continue
            except OSError as e:
                log.warning("--rw %s does not exist and could not be made (%s): it grants nothing", p, describe(e))
                continue
        log.warning("--rw %s does not exist (and its parent is not writable): it grants nothing", p)
    for path in config.ro:
        if not path.expanduser().exists():
            log.warning("--ro %s does not exist: it grants nothing", path)


def _own_install_in_tmpfs() -> list[str]:
    """boundary's own code, venv and interpreter where nsjail's private /tmp or /dev/shm would hide them (a
    boundary run inside, or a tool that calls boundary, must still find them): shown read-only."""
    import jail

    own = {
        str(Path(jail.__file__).resolve().parent.parent), os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix), os.path.dirname(os.path.realpath(sys.executable)),
    }  # fmt: skip
    return sorted(p for p in own if any(under(p, t) for t in ("/tmp", "/dev/shm")))


NESTED_VAR = "BOUNDARY_JAIL"  # set in the command's environment: the mode it runs in (a boundary inside knows)
NSJAIL_TOOL_DIR = "/tmp/.boundary-tools"  # in nsjail's own /tmp: gone with the jail


_RUN_DIRS: dict[str, Path] = {}


def run_dir(config: Config) -> Path:
    """Files boundary makes for one run (tool config): readable in the jail, not its to write, removed after.
    Beside boundary's state dir; where that cannot be made (a read-only or missing HOME), a private directory
    in the system's temp dir (read-only inside landjail, like the rest of the host's /tmp)."""
    found = _RUN_DIRS.get(config.run_id)
    if found is None:
        base = config.state_dir.parent / "boundary-run"
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            found = base / config.run_id
            found.mkdir(mode=0o700)  # writable here, or the fallback (an outer jail's read-only HOME)
        except OSError:
            found = Path(tempfile.mkdtemp(prefix=f"boundary-run-{config.run_id}-"))
        _RUN_DIRS[config.run_id] = found
    return found


def _audit_out_of_reach(config: Config, fs: fspolicy.FsPolicy, mode: str) -> None:
    """Refuse an audit log the jail could rewrite (in the workspace, a --rw path, landjail's /tmp)."""
    if config.audit_log is None:
        return
    root = fspolicy.writable_root(fs, str(config.audit_log), mode)
    if root is not None:
        raise BoundaryError(
            "open the audit log",
            f"{config.audit_log} is writable from inside the {mode} (it lies in {root})",
            hint="put it outside the workspace, /tmp and --rw paths (default: $XDG_STATE_HOME/boundary/audit.jsonl)",
        )


def run_command(config: Config, command: Sequence[str], *, quiet: bool = False) -> int:
    """Run COMMAND in a jail; returns its status (128+N for signal N). Never runs it unconfined."""
    if not command:
        raise BoundaryError("run the command", "no command given", hint="boundary run [OPTIONS] -- COMMAND [ARGS...]")
    limits.raise_nofile()  # before any fork: the jail's processes inherit what restore_nofile() puts back
    # boundary never reads the terminal; its writes must not stop it when the command takes the foreground and
    # sets TOSTOP (the command gets the default dispositions back before exec)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    # the values stay in this process (the proxy swaps them in); what it starts, the jail included, and what
    # /proc shows of it, hold the placeholders
    secretconf.withdraw(config.secrets, os.environ)
    secretconf.warn_unreachable(config.secrets, config.policy())
    if config.learn:
        print(LEARN_BANNER, file=sys.stderr, flush=True)
    warning = limits.memory_warning(config.memory)
    if warning:
        print(f"boundary: warning: {warning}", file=sys.stderr, flush=True)
    jail, listeners = prepare_mode(config, command)
    try:
        jail.spawn()  # its connections queue in the listeners' backlog until the proxy serves them
        # interception likely: mitmproxy is imported (a thread: nothing forks from here on) and started while the
        # command starts, not when its first request that needs it arrives
        preloading = mitm_preload() if trust.interception_possible(config) else None
        return asyncio.run(_supervise(config, jail, listeners, quiet=quiet, preloading=preloading))
    except KeyboardInterrupt:  # ^C before the command was running: nothing of it is left either way
        return 128 + signal.SIGINT
    finally:
        listeners.close()
        jail.close()
        shutil.rmtree(run_dir(config), ignore_errors=True)


def _in_terminal_foreground() -> bool:
    """True when our process group owns the terminal: then the terminal's own signals reached the command too."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
    return False


def _forward(jail: Jail, sig: int) -> None:
    if sig in TERMINAL_SIGNALS and _in_terminal_foreground():
        return
    jail.signal(sig)


async def _supervise(
    config: Config, jail: Jail, listeners: Listeners, *, quiet: bool, preloading: threading.Thread | None = None
) -> int:
    from proxy.dns import DnsResponder, FakeTable

    table = FakeTable()
    # the command has the terminal (stdin and stderr both on it): a full-screen program would be scribbled over, so
    # denial lines wait for the end of the run (the audit log has them at once)
    interactive = os.isatty(0) and os.isatty(2)
    server = build_proxy(
        config, mode=jail.name, quiet=quiet, names=table.name, origins=listeners.origins, hold=interactive
    )
    jail.denials.attach(server.audit.socket_refused)
    dns = DnsResponder(table, on_query=lambda q, addr: server.audit.dns(q.name, q.qtype, addr))
    loop = asyncio.get_running_loop()
    for sig in (*TERMINAL_SIGNALS, *ALWAYS_FORWARDED):
        loop.add_signal_handler(sig, _forward, jail, sig)
    try:
        await server.start(explicit=listeners.explicit, transparent=listeners.transparent)
        await dns.start(listeners.dns)
        if preloading is not None:
            server.mitm.start_early(preloading)
        return await jail.wait()
    except MitmError as e:
        raise BoundaryError("start mitmproxy", str(e)) from e
    finally:
        for sig in (*TERMINAL_SIGNALS, *ALWAYS_FORWARDED):
            loop.remove_signal_handler(sig)
        dns.close()
        await _stop(server)
        if config.learn:
            _write_learned(config, server.audit.learned)


async def _stop(server: ProxyServer) -> None:
    """Stop serving, flush the audit log, print the one-line summary when anything was denied."""
    await server.aclose()
    server.audit.close()
    for line in server.audit.held():
        print(line, file=sys.stderr)
    summary = server.audit.summary()
    if summary:
        print(summary, file=sys.stderr)


LEARN_BANNER = (
    "boundary: LEARN MODE: every destination no rule allows is allowed and recorded (private addresses stay "
    "refused); do not use it for untrusted work"
)


def _write_learned(config: Config, learned: dict[str, None]) -> None:
    """--learn's result: the run's allow rules plus what it learned, as a config file to start a policy from."""
    from .auditview import yaml_allowlist

    if not learned:
        print("boundary: learn mode: nothing was outside the allowlist", file=sys.stderr)
        return
    rules = [*(r.raw for r in config.rules if r.action.value == "allow"), *learned]
    path = config.state_dir / "learned" / f"{config.run_id}.yaml"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(yaml_allowlist(config.run_id, rules), encoding="utf-8")
    except OSError as e:
        print(f"boundary: learn mode: failed to write {path}: {describe(e)}", file=sys.stderr)
        return
    print(f"boundary: learn mode: {len(learned)} destination(s) were outside the allowlist; the allowlist a strict "
          f"run would need is in {path} (boundary run --config {path} ...)", file=sys.stderr)  # fmt: skip


def serve_proxy(config: Config, *, quiet: bool = False) -> int:
    """``boundary proxy``: the filtering proxy alone on loopback until SIGINT/SIGTERM."""
    limits.raise_nofile()
    listeners = Listeners.loopback(config.proxy_port)

    async def main() -> None:
        server = build_proxy(config, mode="proxy", quiet=quiet)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start(explicit=listeners.explicit)
            print(f"boundary proxy listening on http://127.0.0.1:{listeners.port}", flush=True)
            await stop.wait()
        finally:
            await _stop(server)

    try:
        asyncio.run(main())
    finally:
        listeners.close()
    return 0
