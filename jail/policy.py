"""The filesystem and process policy (DESIGN.md section 5): one object, built once from the
Config and the caller's environment, that each mode applies in its own way (a mount plan in
nsjail, Landlock grants in landjail).

Defaults: system directories read-only; the workspace writable; HOME writable in nsjail, its
tool state directories in landjail; private /tmp; credentials, agent and container-engine
sockets and boundary's own state (the CA key) hidden. ``--rw``/``--ro`` naming a hidden path
exactly reveal it; ``--hide`` adds to the list; ``--tmpfs`` gives an empty 1777 directory.
Side effects: none (pure, given the environment and the uid).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .kernel.mounts import under

HOME_SECRETS = (
    ".ssh", ".aws", ".config/gh", ".docker/config.json", ".kube", ".netrc", ".git-credentials", ".config/gcloud",
    ".azure", ".gnupg",
)  # fmt: skip
ENGINE_SOCKETS = (
    "/run/docker.sock", "/var/run/docker.sock", "/run/podman", "/run/containerd", "/var/run/containerd", "/run/crio",
    "/run/buildkit",
)  # fmt: skip
# pathname sockets that would carry name lookups around the jail's DNS (hosts: resolve, nscd), and the system bus
RESOLVER_SOCKETS = ("/run/nscd", "/var/run/nscd", "/run/systemd/resolve", "/run/dbus/system_bus_socket")
# landjail: tool state under HOME that package managers and build tools write
HOME_STATE = (".npm", ".npm-global", ".cache", ".yarn", ".pnpm-store", ".local/share/pnpm", ".cargo", "go",
              ".node-gyp", ".config/configstore")  # fmt: skip
# variables that name a socket (or a server behind one) outside the jail: unset unless --allow-unix names it
SOCKET_ENV = (
    "SSH_AUTH_SOCK", "SSH_AGENT_PID", "TMUX", "TMUX_PANE", "STY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR",
    "WAYLAND_DISPLAY", "GPG_AGENT_INFO", "SWAYSOCK", "I3SOCK", "HYPRLAND_INSTANCE_SIGNATURE", "KITTY_LISTEN_ON",
    "NVIM", "NVIM_LISTEN_ADDRESS", "VSCODE_IPC_HOOK", "VSCODE_IPC_HOOK_CLI", "VSCODE_GIT_IPC_HANDLE",
    "ZELLIJ", "ZELLIJ_SESSION_NAME", "PULSE_SERVER", "JUPYTER_RUNTIME_DIR",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FsPolicy:
    home: str
    workspace: str
    writable: tuple[str, ...]  # nsjail: workspace, HOME, --rw
    extra_rw: tuple[str, ...]  # --rw alone (landjail: workspace + tool state + these)
    tool_state: tuple[str, ...]  # landjail writes here instead of all of HOME
    read_only: tuple[str, ...]  # --ro: visible, never writable
    hidden: tuple[str, ...]
    tmpfs: tuple[str, ...]
    allow_unix: tuple[str, ...] = ()  # --allow-unix: outside sockets the jail may connect to (revealed too)
    private_tmp: tuple[str, ...] = ("/tmp", "/dev/shm")


def _abs(p: Path | str) -> str:
    return os.path.abspath(os.path.expanduser(str(p)))


def _unix_socket(value: str | None) -> list[str]:
    if value and value.startswith("unix://"):
        return [value[len("unix://") :]]
    return []


def build(config: Config, env: Mapping[str, str], uid: int) -> FsPolicy:
    home = _abs(env.get("HOME") or Path.home())
    allow_unix = _dedupe(map(_abs, config.allow_unix))
    revealed = {_abs(p) for p in (*config.rw, *config.ro)} | set(allow_unix)
    defaults = [
        *(os.path.join(home, s) for s in HOME_SECRETS),
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
    return FsPolicy(
        home=home,
        workspace=_abs(config.workspace),
        writable=_dedupe([_abs(config.workspace), home, *map(_abs, config.rw)]),
        extra_rw=_dedupe(map(_abs, config.rw)),
        tool_state=tuple(os.path.join(home, d) for d in HOME_STATE),
        read_only=_dedupe(map(_abs, config.ro)),
        hidden=hidden,
        tmpfs=_dedupe(map(_abs, config.tmpfs)),
        allow_unix=allow_unix,
    )


def writable_root(fs: FsPolicy, path: str, mode: str) -> str | None:
    """The writable root of the jail (``mode`` nsjail or landjail) that ``path`` lies in, unless a hidden
    path covers it; None when the jail cannot write ``path``. nsjail's /tmp and /dev/shm are its own, so
    the host's are not writable there; landjail writes the host's."""
    real = os.path.realpath(path)
    if any(under(real, os.path.realpath(h)) for h in fs.hidden):
        return None
    roots = [*fs.writable, *fs.tmpfs]
    if mode == "landjail":
        roots = [fs.workspace, *fs.private_tmp, *fs.tool_state, *fs.extra_rw, *fs.tmpfs]
    for root in roots:
        if under(real, os.path.realpath(root)):
            return root
    return None


def jail_env(env: Mapping[str, str], allow_unix: Iterable[str] = ()) -> dict[str, str]:
    """The caller's environment minus what names a socket outside the jail (SOCKET_ENV, an X display
    on a unix socket, ``DOCKER_HOST=unix://...``), unless its value names an ``--allow-unix`` path."""
    allowed = tuple(allow_unix)

    def outside(key: str, value: str) -> bool:
        if key == "DISPLAY":
            unix = value.startswith((":", "unix:")) or value.startswith("/")
        elif key == "DOCKER_HOST":
            unix = value.startswith("unix://")
        else:
            unix = key in SOCKET_ENV
        return unix and not any(a and a in value for a in allowed)

    return {k: v for k, v in env.items() if not outside(k, v)}


def _dedupe(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(paths))


def tree_minus_holes(root: str, holes: Iterable[str]) -> list[str]:
    """Paths whose union is ``root`` without ``holes`` (as of now): ``root`` itself when no hole is in
    it, else its entries, recursively, skipping the holes. For Landlock, which can only grant."""
    inside = [h for h in holes if under(h, root)]
    if not inside:
        return [root]
    if root in inside:
        return []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []  # unreadable: nothing to grant
    out: list[str] = []
    for name in entries:
        path = os.path.join(root, name)
        if os.path.islink(path):
            continue  # what it points to is granted (or not) where it really is
        out += tree_minus_holes(path, inside)
    return out
