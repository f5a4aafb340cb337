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
SCRUBBED_ENV = ("SSH_AUTH_SOCK", "SSH_AGENT_PID")


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
    private_tmp: tuple[str, ...] = ("/tmp", "/dev/shm")


def _abs(p: Path | str) -> str:
    return os.path.abspath(os.path.expanduser(str(p)))


def _unix_socket(value: str | None) -> list[str]:
    if value and value.startswith("unix://"):
        return [value[len("unix://") :]]
    return []


def build(config: Config, env: Mapping[str, str], uid: int) -> FsPolicy:
    home = _abs(env.get("HOME") or Path.home())
    revealed = {_abs(p) for p in (*config.rw, *config.ro)}
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
    )


def jail_env(env: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment minus what points at hidden things (the ssh agent)."""
    return {k: v for k, v in env.items() if k not in SCRUBBED_ENV}


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
