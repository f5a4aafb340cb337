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
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import protect
from .guard import Guard, free_name, warn_failed
from .kernel.mounts import under

log = logging.getLogger(__name__)
ANY = frozenset(("*",))
# what a repository the jail made may keep in its config: settings that run no program and read no other file
# (an allowlist: git has too many ways to run one, e.g. gpg.ssh.defaultKeyCommand, difftool.*.cmd, ext:: URLs)
SAFE: dict[str, frozenset[str]] = {
    "core": frozenset((
        "repositoryformatversion", "filemode", "bare", "logallrefupdates", "ignorecase", "precomposeunicode",
        "symlinks", "autocrlf", "eol", "safecrlf", "quotepath", "compression", "loosecompression",
        "bigfilethreshold", "sparsecheckout", "sparsecheckoutcone", "untrackedcache", "splitindex", "checkstat",
        "trustctime", "abbrev", "whitespace", "preloadindex", "commentchar", "commentstring", "warnambiguousrefs",
        "multipackindex", "commitgraph",
    )),
    "extensions": frozenset(("objectformat", "refstorage", "partialclone", "noop")),
    "user": ANY, "author": ANY, "committer": ANY, "color": ANY, "advice": ANY,
    "remote": frozenset(("url", "pushurl", "fetch", "push", "mirror", "tagopt", "prune", "prunetags",
                         "skipdefaultupdate", "skipfetchall", "promisor", "partialclonefilter")),
    "branch": frozenset(("remote", "merge", "rebase", "pushremote", "description")),
    "submodule": frozenset(("url", "path", "active", "branch", "fetchrecursesubmodules", "ignore", "shallow")),
    "init": frozenset(("defaultbranch",)),
    "pull": frozenset(("rebase", "ff")),
    "push": frozenset(("default", "autosetupremote", "followtags")),
    "fetch": frozenset(("prune", "prunetags", "recursesubmodules", "writecommitgraph", "parallel")),
    "merge": frozenset(("ff", "conflictstyle", "renames", "log")),
    "rebase": frozenset(("autostash", "autosquash", "updaterefs")),
    "status": frozenset(("showuntrackedfiles", "submodulesummary", "relativepaths", "short", "branch")),
    "diff": frozenset(("renames", "algorithm", "colormoved", "mnemonicprefix", "noprefix", "submodule",
                       "ignoresubmodules", "context", "indentheuristic", "relative", "wserrorhighlight")),
    "log": frozenset(("date", "decorate", "follow", "abbrevcommit", "showroot")),
    "gc": frozenset(("auto", "autopacklimit", "autodetach", "pruneexpire", "reflogexpire",
                     "reflogexpireunreachable")),
    "pack": frozenset(("threads", "windowmemory", "compression")),
    "index": frozenset(("version", "threads", "skiphash", "sparse")),
    "feature": frozenset(("manyfiles", "experimental")),
    "commit": frozenset(("verbose", "status", "cleanup")),
    "tag": frozenset(("sort",)),
}  # fmt: skip
BAD_VALUES = ("ext::", "fd::")  # transports that run a command or use a descriptor


def dangerous(section: str, key: str, value: str) -> bool:
    """Could git run a program (or read another file) because of this setting? Anything not on SAFE could."""
    if section == "alias":  # git subcommands are fine; "!..." runs a shell
        return value.strip().strip('"').lstrip().startswith("!")
    allowed = SAFE.get(section)
    if allowed is None or (allowed is not ANY and key not in allowed):
        return True
    v = value.strip().strip('"').lower()
    return any(b in v for b in BAD_VALUES) or (key in ("url", "pushurl") and v.startswith("-"))


def _section(header: str) -> tuple[str, bool]:
    """The section name of a header's text, and whether its subsection names a command transport."""
    name = header.split(None, 1)[0].split(".", 1)[0].strip('"').lower()
    return name, any(b in header.lower() for b in BAD_VALUES)


def sanitize(text: str) -> tuple[str, list[str]]:
    """The config without dangerous settings (all but SAFE), and the settings removed (as ``section.key``)."""
    out: list[str] = []
    removed: list[str] = []
    section, bad_header = "", False
    dropping_continuation = keeping_continuation = False
    for line in text.splitlines():
        stripped = line.strip()
        if dropping_continuation:  # the rest of a removed value that ended in a backslash
            dropping_continuation = stripped.endswith("\\")
            continue
        if keeping_continuation:  # the rest of a kept one
            keeping_continuation = stripped.endswith("\\")
            out.append(line)
            continue
        if stripped.startswith("["):
            head, _, rest = stripped[1:].partition("]")
            section, bad_header = _section(head.strip())
            out.append(f"[{head.strip()}]")
            stripped = rest.strip()  # a key may follow on the header line itself
            if not stripped:
                continue
        if not stripped or stripped.startswith(("#", ";")):
            out.append(line)
            continue
        key, _, value = stripped.partition("=")
        key = key.strip().lower()
        continues = stripped.endswith("\\")
        if bad_header or dangerous(section, key, value):
            removed.append(f"{section}.{key}")
            dropping_continuation = continues
            continue
        keeping_continuation = continues
        out.append("\t" + stripped)
    return "\n".join(out) + ("\n" if out else ""), removed


@dataclass
class Quarantine:
    run_id: str
    done: list[str] = field(default_factory=list)

    def aside(self, path: str) -> str:
        target = free_name(f"{path}.boundary-rejected-{self.run_id}")
        os.rename(path, target)
        return target

    def repository(self, repo: str, known: set[str], roots: list[str]) -> None:
        """``known``: the git directories there at the start (real paths); ``roots``: where the jail could write
        (real paths). Nothing outside ``roots`` is touched: a pointer of the jail's at anything there (a .git
        link or file, a commondir) is moved aside, what it points at left alone."""
        dot = os.path.join(repo, ".git")
        gitdirs = protect.git_dirs(repo)
        if os.path.islink(dot) or (
            os.path.isfile(dot) and (not gitdirs or not os.path.isdir(gitdirs[0]) or not _inside(gitdirs[0], roots))
        ):
            self.done.append(f"{dot} (points at {gitdirs[0] if gitdirs else '?'}) moved to {self.aside(dot)}")
            return
        for gitdir in gitdirs:
            real = os.path.realpath(gitdir)
            if real not in known and _inside(real, roots):
                self.git_dir(gitdir, known)

    def git_dir(self, gitdir: str, known: set[str]) -> None:
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
        common = protect.common_dir(gitdir)  # a new worktree's own points at its known repository: kept
        for name in ("commondir", "config.worktree"):
            path = os.path.join(gitdir, name)
            if name == "commondir" and common is not None and os.path.realpath(common) in known:
                continue
            if os.path.lexists(path):
                with contextlib.suppress(OSError):
                    self.done.append(f"{path} moved to {self.aside(path)}")
        hooks = os.path.join(gitdir, "hooks")
        with contextlib.suppress(OSError):
            if os.path.islink(hooks) or any(not n.endswith(".sample") for n in os.listdir(hooks)):
                moved = self.aside(hooks)
                os.mkdir(hooks, 0o755)
                self.done.append(f"{hooks}: hooks moved to {moved}")


def end_of_run(g: Guard, roots: Sequence[str], known: Iterable[str], run_id: str) -> None:
    """The end-of-run work of both modes, once the jail is gone: protected paths put back (guard), repositories
    the jail made quarantined; each step a warning."""
    for path, aside in g.restore():
        log.warning("the jail changed %s, which unconfined programs act on: its version moved to %s", path, aside)
    warn_failed(g)
    for line in new_repositories(roots, known, run_id):
        log.warning("a repository the jail made: %s", line)


def new_repositories(roots: Iterable[str], known: Iterable[str], run_id: str) -> list[str]:
    """Take out what git would run from git directories in ``roots`` that are not among ``known`` (those there
    at the start): new repositories, and new submodules and worktrees of the old ones. Returns what was done,
    one line each."""
    q = Quarantine(run_id)
    known_set = {os.path.realpath(k) for k in known}
    real_roots = [os.path.realpath(r) for r in roots]
    repos = [repo for root in roots for repo in protect.repositories(root)]
    # and the worktrees and submodules of the repositories that were there, wherever their working trees are
    seen: set[str] = set()
    for repo in repos:
        with contextlib.suppress(OSError):
            q.repository(repo, known_set, real_roots)
            seen.update(os.path.realpath(g) for g in protect.git_dirs(repo))
    for gitdir in sorted(known_set):
        for sub in protect.nested_git_dirs(gitdir):
            real = os.path.realpath(sub)
            if real not in known_set and real not in seen and _inside(real, real_roots):
                with contextlib.suppress(OSError):
                    q.git_dir(sub, known_set)
    return q.done


def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(under(real, r) for r in roots)
