"""The filesystem and process policy (DESIGN.md section 5): one object, built once from the
Config and the caller's environment, that each mode applies in its own way (a mount plan in
nsjail, Landlock grants in landjail).

Defaults, the same in both modes: system directories read-only; the workspace writable; HOME
readable with its tool caches and agents' state writable; boundary's npm prefix writable;
private /tmp (nsjail); credentials, histories, agent and container-engine sockets and boundary's
own state (the CA key) hidden, in the account's home and in ``$HOME``; inside what is writable,
the paths of jail.protect (git config and hooks, shell startup files, PATH directories, ...)
stay read-only. ``--rw``/``--ro`` naming a hidden path exactly reveal it; ``--hide`` adds to the
list; ``--tmpfs`` gives an empty 1777 directory.
Side effects: none (reads the file system and the password database).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import pwd
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import protect
from .config import Config, default_config_path
from .kernel.mounts import under

ENGINE_SOCKETS = (
    "/run/docker.sock", "/var/run/docker.sock", "/run/podman", "/run/containerd", "/var/run/containerd", "/run/crio",
    "/run/buildkit",
)  # fmt: skip
# pathname sockets that would carry name lookups around the jail's DNS (hosts: resolve, nscd), and the system bus
RESOLVER_SOCKETS = ("/run/nscd", "/var/run/nscd", "/run/systemd/resolve", "/run/dbus/system_bus_socket")
# tool caches and agents' state under $HOME, writable in both modes (their bin directories are not: they are on
# the user's PATH outside the jail; agents' own config files stay read-only, see jail.protect)
HOME_STATE = (".npm", ".cache", ".yarn/berry", ".pnpm-store", ".local/share/pnpm/store", ".cargo/registry",
              ".cargo/git", "go/pkg", ".node-gyp", ".config/configstore", ".codex", ".claude", ".gemini")  # fmt: skip
HOME_CREATE = (".npm",)  # created when missing: npm needs it at once
# variables that name a socket (or a server behind one) outside the jail: unset unless --allow-unix names it
SOCKET_ENV = (
    "SSH_AUTH_SOCK", "SSH_AGENT_PID", "TMUX", "TMUX_PANE", "STY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR",
    "WAYLAND_DISPLAY", "GPG_AGENT_INFO", "SWAYSOCK", "I3SOCK", "HYPRLAND_INSTANCE_SIGNATURE", "KITTY_LISTEN_ON",
    "NVIM", "NVIM_LISTEN_ADDRESS", "VSCODE_IPC_HOOK", "VSCODE_IPC_HOOK_CLI", "VSCODE_GIT_IPC_HANDLE",
    "ZELLIJ", "ZELLIJ_SESSION_NAME", "PULSE_SERVER", "JUPYTER_RUNTIME_DIR",
)  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FsPolicy:
    home: str  # $HOME
    workspace: str
    writable: tuple[str, ...]  # workspace, tool state, npm prefix, --rw
    extra_rw: tuple[str, ...]  # --rw alone
    tool_state: tuple[str, ...]
    read_only: tuple[str, ...]  # --ro: visible, never writable
    hidden: tuple[str, ...]
    tmpfs: tuple[str, ...]
    allow_unix: tuple[str, ...] = ()  # --allow-unix: outside sockets the jail may connect to (revealed too)
    private_tmp: tuple[str, ...] = ("/tmp", "/dev/shm")
    homes: tuple[str, ...] = ()  # $HOME and the account's home from the password database
    protected: tuple[str, ...] = ()  # inside writable roots, never writable (existing or not)
    placeholders: tuple[str, ...] = ()  # protected directories to create where missing (nsjail)
    placeholder_files: tuple[str, ...] = ()  # and empty files
    npm_prefix: str = ""  # boundary's npm global prefix: its bin is on PATH only inside jails
    pinned: tuple[str, ...] = ()  # .git directories: never renamed away and replaced
    protected_tmp: tuple[str, ...] = ()  # protected paths in /tmp or /dev/shm (writable in landjail only)
    known_gitdirs: tuple[str, ...] = ()  # the repositories' git directories at the start (real paths)
    home_holes: tuple[str, ...] = ()  # a home inside a writable root: its dot entries and ~/bin stay read-only
    split_homes: tuple[str, ...] = ()  # ...and the home itself is granted entry by entry (no new top-level entries)

    def grants(self, roots: Iterable[str], holes: Iterable[str] = ()) -> list[str]:
        """``roots`` as they may be granted: each root minus the home holes (and ``holes``), entry by entry
        where it holds one; a split home never whole."""
        out: list[str] = []
        all_holes = [*self.home_holes, *holes, *(os.path.join(h, "") for h in self.split_homes)]
        for root in roots:
            out += tree_minus_holes(root, all_holes)
        return out


def _abs(p: Path | str) -> str:
    return os.path.abspath(os.path.expanduser(str(p)))


def _unix_socket(value: str | None) -> list[str]:
    if value and value.startswith("unix://"):
        return [value[len("unix://") :]]
    return []


def account_home(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir or None
    except KeyError:
        return None


def npm_prefix(env: Mapping[str, str], home: str) -> str:
    base = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return os.path.join(_abs(base), "boundary", "npm-global")


def build(config: Config, env: Mapping[str, str], uid: int) -> FsPolicy:
    with protect.one_look():  # the repository search runs once for all that needs it
        return _build(config, env, uid)


def _build(config: Config, env: Mapping[str, str], uid: int) -> FsPolicy:
    home = _abs(env.get("HOME") or Path.home())
    account = account_home(uid)
    homes = _dedupe([home, *([_abs(account)] if account else [])])
    allow_unix = _dedupe(map(_abs, config.allow_unix))
    revealed = {_abs(p) for p in (*config.rw, *config.ro)} | set(allow_unix)
    defaults = [
        *protect.secrets(homes, env),
        str(config.state_dir),
        f"/run/user/{uid}",
        *ENGINE_SOCKETS,
        *RESOLVER_SOCKETS,
        *([env["SSH_AUTH_SOCK"]] if env.get("SSH_AUTH_SOCK") else []),
        *_unix_socket(env.get("DOCKER_HOST")),
    ]
    wanted = [*map(_abs, defaults), *map(_abs, config.hide)]
    wanted += [os.path.realpath(p) for p in wanted]  # /var/run/docker.sock is /run/docker.sock
    hidden = _dedupe(p for p in wanted if p not in revealed)
    workspace = _abs(config.workspace)
    rw = _dedupe(map(_abs, config.rw))
    tool_state = tuple(os.path.join(home, d) for d in HOME_STATE)
    prefix = npm_prefix(env, home)
    roots = (workspace, *rw)
    pinned = tuple(protect.pinned(roots))
    writable = _dedupe([workspace, *tool_state, prefix, *rw, *pinned])
    # boundary's own config and state, and the config file of this run, are never the jail's to change
    extra = [str(default_config_path(env).parent), str(config.state_dir)]
    # an exact --rw is the user's word: that path itself stays writable
    wanted_ro = [p for p in protect.candidates(roots, homes, env.get("PATH", ""), extra) if p not in rw]
    present = [h for h in hidden if os.path.lexists(h)]  # a missing secret hides nothing: protect its name
    protected = protect.inside(wanted_ro, writable, but_not=present)
    holes = protect.home_holes(homes, roots)
    # the directories above a protected path in the work tree (a hooksPath, an include) stay where they are
    chains = [d for d in protect.parent_chains(protected, roots, but_not=(*holes, *present)) if d not in pinned]
    pinned = (*pinned, *chains)
    writable = _dedupe([*writable, *chains])
    in_tmp = protect.inside(wanted_ro, ("/tmp", "/dev/shm"), but_not=(*present, *protected))
    holders = protect.inside(protect.placeholders(roots), writable, but_not=hidden)
    return FsPolicy(
        home=home,
        workspace=workspace,
        writable=writable,
        extra_rw=rw,
        tool_state=tool_state,
        read_only=_dedupe(map(_abs, config.ro)),
        hidden=hidden,
        tmpfs=_dedupe(map(_abs, config.tmpfs)),
        allow_unix=allow_unix,
        homes=homes,
        protected=_dedupe(protected),
        placeholders=_missing(holders),
        placeholder_files=_missing(protect.inside(protect.placeholder_files(roots), writable, but_not=hidden)),
        npm_prefix=prefix,
        pinned=pinned,
        protected_tmp=_dedupe(p for p in in_tmp if p not in protected),
        home_holes=_dedupe(holes),
        known_gitdirs=_dedupe(
            os.path.realpath(g) for r in roots for repo in protect.repositories(r) for g in protect.git_dirs(repo)
        ),
        split_homes=_dedupe(protect.split_homes(homes, (workspace, *rw))),
    )


def writable_root(fs: FsPolicy, path: str, mode: str) -> str | None:
    """The writable root of the jail (``mode`` nsjail or landjail) that ``path`` lies in, unless a hidden
    path covers it; None when the jail cannot write ``path``. nsjail's /tmp and /dev/shm are its own, so
    the host's are not writable there; landjail writes the host's."""
    real = os.path.realpath(path)
    if any(under(real, os.path.realpath(h)) for h in fs.hidden):
        return None
    roots = [*fs.grants(fs.writable), *fs.tmpfs, *(fs.private_tmp if mode == "landjail" else ())]
    for root in roots:
        if under(real, os.path.realpath(root)):
            return root
    return None


def jail_env(
    env: Mapping[str, str], allow_unix: Iterable[str] = (), deny: Iterable[str] = (), allow: Iterable[str] = ()
) -> dict[str, str]:
    """The caller's environment minus what names a socket outside the jail (SOCKET_ENV, an X display
    on a unix socket, ``DOCKER_HOST=unix://...``), unless its value names an ``--allow-unix`` path, and
    minus the names matching a ``deny`` glob; a name matching an ``allow`` glob is kept whatever denies it."""
    allowed = tuple(allow_unix)
    deny, allow = tuple(deny), tuple(allow)

    def outside(key: str, value: str) -> bool:
        if key == "DISPLAY":
            unix = value.startswith((":", "unix:")) or value.startswith("/")
        elif key == "DOCKER_HOST":
            unix = value.startswith("unix://")
        else:
            unix = key in SOCKET_ENV
        return unix and not any(a and a in value for a in allowed)

    def keep(key: str, value: str) -> bool:
        if any(fnmatch.fnmatchcase(key, p) for p in allow):
            return True
        return not outside(key, value) and not any(fnmatch.fnmatchcase(key, p) for p in deny)

    return {k: v for k, v in env.items() if keep(k, v)}


def _missing(paths: Iterable[str]) -> tuple[str, ...]:
    """Those of ``paths`` that do not exist but whose parent directory does."""
    return _dedupe(p for p in paths if not os.path.lexists(p) and os.path.isdir(os.path.dirname(p)))


def _dedupe(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(paths))


def tree_minus_holes(root: str, holes: Iterable[str]) -> list[str]:
    """Paths whose union is ``root`` without ``holes`` (as of now): ``root`` itself when no hole is in
    it, else its entries, recursively, skipping the holes. For Landlock, which can only grant."""
    inside = [h for h in holes if under(h, root) and os.path.lexists(h)]  # a missing one hides nothing
    if not inside:
        return [root]
    if root in inside:
        return []
    try:
        entries = sorted(os.listdir(root))
    except OSError as e:
        # not ours to list (inside an outer jail that grants this directory entry by entry, or the user cannot
        # read it): granted whole; what is hidden inside it stays hidden only where the outer jail (or the file
        # permissions) hide it
        log.info("cannot list %s (%s): granted whole; %s inside it cannot be hidden from here", root,
                 e.strerror, ", ".join(inside))  # fmt: skip
        return [root]
    out: list[str] = []
    for name in entries:
        path = os.path.join(root, name)
        if os.path.islink(path):
            continue  # what it points to is granted (or not) where it really is
        out += tree_minus_holes(path, inside)
    return out
