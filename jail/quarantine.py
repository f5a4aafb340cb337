"""Repositories the jail made: after the run, in the workspace and --rw directories, a repository that
was not there at the start (``git init`` inside the jail, a ``.git`` file pointing at a git directory of
the jail's) is the jail's. The user will run git there, outside the jail, so what git would run from it
is taken out: config keys that run programs (core.fsmonitor, core.hooksPath, core.pager, aliases with
``!``, filters, credential helpers, includes, ...) are dropped from its config, hooks other than git's
samples are moved aside, and a ``.git`` file or ``commondir`` that points outside the repositories that
were there is moved aside. The removed parts are kept beside (``NAME.boundary-rejected-RUN``).

Parsing is pure (:func:`dangerous`, :func:`sanitize`); the rest acts on the file system and runs in
boundary after the jail is gone. Side effects: renames and writes in the jail's new repositories.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import protect
from .guard import free_name
from .kernel.mounts import under

RUNS_PROGRAMS = frozenset((
    ("core", "fsmonitor"), ("core", "hookspath"), ("core", "pager"), ("core", "editor"), ("core", "sshcommand"),
    ("core", "askpass"), ("core", "gitproxy"), ("core", "worktree"), ("sequence", "editor"), ("diff", "external"),
    ("diff", "textconv"), ("diff", "command"), ("merge", "driver"), ("gpg", "program"), ("interactive", "difffilter"),
    ("uploadpack", "packobjectshook"), ("remote", "receivepack"), ("remote", "uploadpack"), ("remote", "vcs"),
    ("extensions", "worktreeconfig"),
))  # fmt: skip
WHOLE_SECTIONS = frozenset(("include", "includeif", "credential", "filter", "pager", "sendemail"))


def dangerous(section: str, key: str, value: str) -> bool:
    """Would git run a program (or read another file) because of this setting?"""
    if section in WHOLE_SECTIONS:
        return True
    if section == "alias":
        return value.strip().strip('"').startswith("!")
    return (section, key) in RUNS_PROGRAMS


def sanitize(text: str) -> tuple[str, list[str]]:
    """The config without dangerous settings, and the settings removed (as ``section.key``)."""
    out: list[str] = []
    removed: list[str] = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            head = stripped[1:].split("]", 1)[0].strip()
            section = head.split(None, 1)[0].split(".", 1)[0].strip('"').lower()
            # keys written on the header line itself ("[core] pager = x") are rare; keep the header alone
            out.append(line if "]" not in stripped or not stripped.split("]", 1)[1].strip() else f"[{head}]")
            continue
        if not stripped or stripped.startswith(("#", ";")):
            out.append(line)
            continue
        key, _, value = stripped.partition("=")
        key = key.strip().lower()
        if dangerous(section, key, value):
            removed.append(f"{section}.{key}")
            continue
        out.append(line)
    return "\n".join(out) + ("\n" if out else ""), removed


@dataclass
class Quarantine:
    run_id: str
    done: list[str] = field(default_factory=list)

    def aside(self, path: str) -> str:
        target = free_name(f"{path}.boundary-rejected-{self.run_id}")
        os.rename(path, target)
        return target

    def repository(self, repo: str, known: Iterable[str], roots: Iterable[str]) -> None:
        """``roots``: where the jail could write; nothing outside them is touched (a commondir of the jail's
        pointing at one of the user's repositories elsewhere is moved aside, that repository left alone)."""
        known = list(known)
        roots = [os.path.realpath(r) for r in roots]
        dot = os.path.join(repo, ".git")
        if os.path.islink(dot) or os.path.isfile(dot):
            target = protect.git_dirs(repo)
            if not target or not any(under(os.path.realpath(target[0]), k) for k in known):
                self.done.append(f"{dot} (points at {target[0] if target else '?'}) moved to {self.aside(dot)}")
            return
        for gitdir in protect.git_dirs(repo):
            real = os.path.realpath(gitdir)
            if any(under(real, k) for k in known) or not any(under(real, r) for r in roots):
                continue
            self.git_dir(gitdir)

    def git_dir(self, gitdir: str) -> None:
        config = os.path.join(gitdir, "config")
        with contextlib.suppress(OSError):
            if not os.path.islink(config):
                with open(config, encoding="utf-8", errors="replace") as f:
                    text = f.read(1 << 20)
                clean, removed = sanitize(text)
                if removed:
                    kept = self.aside(config)
                    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        f.write(clean)
                    self.done.append(f"{config}: removed {', '.join(removed)} (the original is {kept})")
            else:
                self.done.append(f"{config} (a symlink) moved to {self.aside(config)}")
        for name in ("commondir", "config.worktree"):
            path = os.path.join(gitdir, name)
            if os.path.lexists(path):
                with contextlib.suppress(OSError):
                    self.done.append(f"{path} moved to {self.aside(path)}")
        hooks = os.path.join(gitdir, "hooks")
        with contextlib.suppress(OSError):
            if os.path.islink(hooks) or any(not n.endswith(".sample") for n in os.listdir(hooks)):
                moved = self.aside(hooks)
                os.mkdir(hooks, 0o755)
                self.done.append(f"{hooks}: hooks moved to {moved}")


def new_repositories(roots: Iterable[str], known: Iterable[str], run_id: str) -> list[str]:
    """Take out what git would run from repositories in ``roots`` whose git directories are not under one of
    ``known`` (those there at the start). Returns what was done, one line each."""
    q = Quarantine(run_id)
    known = [os.path.realpath(k) for k in known]
    roots = list(roots)
    for root in roots:
        for repo in protect.repositories(root):
            with contextlib.suppress(OSError):
                q.repository(repo, known, roots)
    return q.done
