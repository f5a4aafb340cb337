"""Which paths the jail must not change even where their parent is writable (DESIGN.md section 5:
nothing the jail writes is later run or read as configuration by an unconfined program), and
which secrets it must not read. Pure functions of a few paths, the environment and what the
file system holds now (git metadata is found by looking).

- in the workspace and every --rw directory: git's config, hooks and info (of the repository, its
  submodules and, for a linked worktree, the common directory), the ``.git`` entry itself, and the
  files editors, direnv and agents act on when a folder is opened (``.envrc``, ``.vscode``, ``.idea``,
  ``.claude``, ``.mcp.json``, ``.cursor``, ``.gemini``, ...);
- in each home directory (the account's and ``$HOME``): shell startup files, git's, ssh's and
  systemd's configuration, autostart entries, ``~/.local/bin``, package managers' config (which can
  run programs), agents' own config files, boundary's own config;
- every directory on ``PATH`` outside the workspace, and boundary's own install.

Side effects: none (reads the file system).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence

from .kernel.mounts import under

HOME_PROTECTED = (
    ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".bash_aliases", ".zshrc", ".zshenv",
    ".zprofile", ".zlogin", ".zlogout", ".config/fish", ".inputrc", ".kshrc", ".mkshrc", ".tcshrc", ".cshrc",
    ".gitconfig", ".config/git", ".ssh", ".config/systemd", ".config/autostart", ".config/environment.d",
    ".local/bin", ".local/share/applications", ".config/boundary", ".npmrc", ".yarnrc", ".yarnrc.yml", ".pip",
    ".config/pip", ".pydistutils.cfg", ".cargo/config", ".cargo/config.toml", ".cargo/env", ".cargo/bin", "go/bin",
    ".npm-global", ".yarn/bin", ".deno/bin", ".bun/bin", ".pyenv", ".nvm", ".rustup", ".vimrc", ".config/nvim",
    ".emacs", ".emacs.d", ".tmux.conf", ".config/tmux", ".screenrc", ".xprofile", ".xinitrc", ".xsession",
    ".codex/config.toml", ".claude/settings.json", ".claude/settings.local.json", ".gemini/settings.json",
    ".config/direnv", ".direnvrc", ".envrc", ".gnupg", ".pam_environment",
    # what agents load and run or obey when they start later, outside: extensions, MCP servers, hooks, commands,
    # approval rules, instructions, their .env
    ".codex/rules", ".codex/prompts", ".codex/AGENTS.md", ".claude/commands", ".claude/agents", ".claude/skills",
    ".claude/plugins", ".claude/hooks", ".claude/CLAUDE.md", ".gemini/extensions", ".gemini/commands",
    ".gemini/.env", ".gemini/GEMINI.md", ".config/opencode", ".cursor", ".continue",
)  # fmt: skip
# what editors, direnv and agents act on when the folder is opened later (settings with hooks, MCP servers)
WORKSPACE_PROTECTED = (".envrc", ".vscode", ".idea", ".claude", ".mcp.json", ".cursor", ".gemini", ".nvim.lua",
                       ".exrc", ".dir-locals.el", ".continue", "opencode.json")  # fmt: skip
WORKSPACE_PLACEHOLDER_DIRS = (".vscode", ".idea")
WORKSPACE_PLACEHOLDER_FILES = (".envrc",)  # an empty .envrc is inert (direnv asks before it runs a new one)
# what git reads as configuration or runs, in a git directory: config (core.fsmonitor, core.hooksPath, filters,
# aliases...), config.worktree, hooks, info (attributes), commondir (where config and hooks are taken from)
GIT_PROTECTED = ("config", "config.worktree", "hooks", "info", "commondir")
WORKTREE_PROTECTED = ("commondir", "gitdir", "config.worktree")  # in each .git/worktrees/NAME
# not searched for repositories (big, and never a repository of the user's)
SKIP_DIRS = frozenset(("node_modules", "__pycache__", "target", "dist", "build", "vendor", "site-packages"))
REPO_DEPTH = 6
REPO_VISITS = 20000
HOME_KEPT_BIN = ("bin",)  # ~/bin: Debian's .profile puts it on PATH when it exists
GIT_PLACEHOLDER_DIRS = ("hooks", "info")

HOME_SECRETS = (
    ".ssh", ".aws", ".config/gh", ".docker/config.json", ".kube", ".netrc", ".git-credentials", ".config/gcloud",
    ".azure", ".gnupg", ".npmrc", ".yarnrc", ".pypirc", ".pip/pip.conf", ".config/pip/pip.conf",
    ".cargo/credentials", ".cargo/credentials.toml", ".config/git/credentials", ".vault-token",
    ".config/containers/auth.json", ".docker/.token_seed", ".cache/huggingface/token", ".huggingface/token",
    ".terraform.d/credentials.tfrc.json", ".terraformrc", ".password-store", ".local/share/keyrings",
    ".config/op", ".1password", ".bash_history", ".zsh_history", ".histfile", ".local/share/fish/fish_history",
    ".python_history", ".node_repl_history", ".psql_history", ".mysql_history", ".sqlite_history", ".lesshst",
    ".irb_history", ".rediscli_history", ".config/hub", ".config/glab-cli", ".config/doctl", ".oci",
    ".config/rclone", ".s3cfg", ".boto", ".databrickscfg", ".config/heroku", ".netlify", ".config/vercel",
    ".fly", ".gem/credentials", ".m2/settings-security.xml", ".gradle/gradle.properties", ".composer/auth.json",
    ".dbus", ".pgpass", ".my.cnf", ".config/Code/User/globalStorage", ".mozilla", ".config/google-chrome",
    ".config/chromium", ".local/share/atuin", ".config/atuin/key", ".config/sops", ".config/github-copilot",
    ".pulumi/credentials.json", ".cloudflared", ".vercel", ".local/share/com.vercel.cli", ".wrangler",
    ".config/.wrangler", ".config/stripe", ".config/ngrok", ".ngrok2", ".heroku", ".config/hcloud",
    ".config/configstore/firebase-tools.json", ".ibmcloud", ".m2/settings.xml", ".bunfig.toml", ".env",
    ".yarnrc.yml", ".Xauthority", ".ICEauthority", ".config/helm/repositories.yaml", ".config/helm/registry",
    ".viminfo", ".local/share/nvim/shada",
)  # fmt: skip


def is_bare(names: Iterable[str]) -> bool:
    """A directory holding these entries is a bare repository (its own git directory)."""
    return {"HEAD", "config", "objects", "refs"} <= set(names)


def git_dirs(root: str) -> list[str]:
    """The git directories of a repository at ``root``: its own (``.git``, where a ``.git`` file points, or
    ``root`` itself when bare), the common directory of a linked worktree, and those of its submodules."""
    dot = os.path.join(root, ".git")
    gitdir: str | None = None
    if os.path.isdir(dot) and not os.path.islink(dot):
        gitdir = dot
    elif os.path.isfile(dot):
        gitdir = _pointed(dot)
    else:
        with contextlib.suppress(OSError):
            gitdir = root if is_bare(os.listdir(root)) else None
    if gitdir is None:
        return []
    out = [gitdir]
    common = common_dir(gitdir)
    if common:
        out.append(common)
    for base in list(out):
        out += _modules(os.path.join(base, "modules"))
    for base in list(out):  # linked worktrees' own git directories
        with contextlib.suppress(OSError):
            out += [os.path.join(base, "worktrees", n) for n in os.listdir(os.path.join(base, "worktrees"))]
    return list(dict.fromkeys(os.path.realpath(d) for d in out))


def _pointed(dotgit: str) -> str | None:
    try:
        with open(dotgit, encoding="utf-8", errors="replace") as f:
            line = f.read(4096).strip()
    except OSError:
        return None
    if not line.startswith("gitdir:"):
        return None
    target = line[len("gitdir:") :].strip()
    return os.path.normpath(os.path.join(os.path.dirname(dotgit), target))


def nested_git_dirs(gitdir: str) -> list[str]:
    """Submodule and linked-worktree git directories inside ``gitdir`` (as they are now)."""
    out = _modules(os.path.join(gitdir, "modules"))
    with contextlib.suppress(OSError):
        out += [os.path.join(gitdir, "worktrees", n) for n in os.listdir(os.path.join(gitdir, "worktrees"))]
    return out


def common_dir(gitdir: str) -> str | None:
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8", errors="replace") as f:
            rel = f.read(4096).strip()
    except OSError:
        return None
    return os.path.normpath(os.path.join(gitdir, rel)) if rel else None


def _modules(base: str, depth: int = 0) -> list[str]:
    """Submodule git directories under ``modules/`` (names may contain slashes; nested ones recurse)."""
    if depth > 8 or not os.path.isdir(base):
        return []
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        if "HEAD" in filenames and "config" in filenames:
            out.append(dirpath)
            out += _modules(os.path.join(dirpath, "modules"), depth + 1)
            dirnames.clear()
    return out


_looked: dict[str, list[str]] | None = None


@contextlib.contextmanager
def one_look() -> Iterator[None]:
    """Within this, repositories() searches each root once (the file system is taken as it is now)."""
    global _looked
    _looked = {}
    try:
        yield
    finally:
        _looked = None


def repositories(root: str) -> list[str]:
    if _looked is not None:
        if root not in _looked:
            _looked[root] = _repositories(root)
        return list(_looked[root])
    return _repositories(root)


def _repositories(root: str) -> list[str]:
    """Repositories at or below ``root``: working trees (a ``.git`` entry in them) and bare repositories,
    searched at most REPO_DEPTH deep and REPO_VISITS directories wide; hidden directories, SKIP_DIRS and
    bare repositories' insides are not entered."""
    out: list[str] = []
    visits = 0
    frontier = [(root, 0)]
    while frontier:
        d, depth = frontier.pop()
        visits += 1
        if visits > REPO_VISITS:
            break
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        bare = is_bare(e.name for e in entries)
        if bare or any(e.name == ".git" for e in entries):
            out.append(d)
        if depth >= REPO_DEPTH or bare:
            continue
        for e in entries:
            if e.name.startswith(".") or e.name in SKIP_DIRS:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    frontier.append((e.path, depth + 1))
            except OSError:
                continue
    return out


def config_refs(config: str, worktree: str, depth: int = 0) -> list[str]:
    """Files and directories a git config makes git read or run: core.hooksPath (relative to the working tree)
    and include.path / includeIf.*.path (relative to the config file), followed through includes."""
    out: list[str] = []
    try:
        with open(config, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return out
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            head, _, stripped = stripped[1:].partition("]")
            section = head.strip().split(None, 1)[0].split(".", 1)[0].strip('"').lower()
            stripped = stripped.strip()
        key, _, value = stripped.partition("=")
        key, value = key.strip().lower(), os.path.expanduser(value.strip().strip('"'))
        if not value:
            continue
        if section == "core" and key == "hookspath":
            hooks = os.path.normpath(os.path.join(worktree, value))
            out += [hooks, os.path.realpath(hooks)]  # a symlinked one: the link and what it leads to
        elif section in ("include", "includeif") and key == "path":
            path = os.path.normpath(os.path.join(os.path.dirname(config), value))
            out += [path, os.path.realpath(path)]
            if depth < 3:
                out += config_refs(path, worktree, depth + 1)
    return out


def git_protected(gitdirs: Iterable[str], worktree: str | None = None) -> list[str]:
    out: list[str] = []
    for gitdir in gitdirs:
        out += [os.path.join(gitdir, n) for n in GIT_PROTECTED]
        for name in ("config", "config.worktree"):
            out += config_refs(os.path.join(gitdir, name), worktree or gitdir)
        wts = os.path.join(gitdir, "worktrees")
        with contextlib.suppress(OSError):
            for name in os.listdir(wts):
                out += [os.path.join(wts, name, n) for n in WORKTREE_PROTECTED]
    return out


def home_holes(homes: Iterable[str], roots: Iterable[str]) -> list[str]:
    """For a home directory inside a writable root (``boundary run`` started in ~): its hidden entries and
    ~/bin, which stay out of the grant (read-only), so that only its projects are writable; nothing new can be
    made at its top level then (a dot file no tool of the jail's should plant)."""
    out: list[str] = []
    real_roots = [os.path.realpath(r) for r in roots]
    for home in homes:
        real = os.path.realpath(home)
        if not any(under(real, r) for r in real_roots):
            continue
        with contextlib.suppress(OSError):
            out += [os.path.join(home, n) for n in os.listdir(home) if n.startswith(".") or n in HOME_KEPT_BIN]
    return out


def split_homes(homes: Iterable[str], roots: Iterable[str]) -> list[str]:
    """The home directories inside a writable root: granted entry by entry (home_holes left out), never whole."""
    real_roots = [os.path.realpath(r) for r in roots]
    return [h for h in homes if any(under(os.path.realpath(h), r) for r in real_roots)]


def candidates(workspaces: Sequence[str], homes: Iterable[str], path_env: str, extra: Iterable[str] = ()) -> list[str]:
    """Every path to protect (existing or not); the caller keeps those inside a writable root. The first of
    ``workspaces`` is the workspace, the others --rw directories."""
    out: list[str] = []
    for root in workspaces:
        out += [os.path.join(root, n) for n in WORKSPACE_PROTECTED]
        for repo in repositories(root):
            dot = os.path.join(repo, ".git")
            if os.path.lexists(dot) and not (os.path.isdir(dot) and not os.path.islink(dot)):
                out.append(dot)  # a .git file (or link) must not be pointed at a repository the jail made
            out += git_protected(git_dirs(repo), repo)
    for home in homes:
        out += [os.path.join(home, n) for n in HOME_PROTECTED]
    project = os.path.realpath(next(iter(workspaces), "/nonexistent"))
    # PATH directories outside the workspace (node_modules/.bin inside it is the project's own)
    out += [os.path.abspath(p) for p in path_env.split(":") if p and not under(os.path.realpath(p), project)]
    out += [sys.prefix, os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *extra]
    return list(dict.fromkeys(os.path.normpath(p) for p in out))


def pinned(workspaces: Iterable[str]) -> list[str]:
    """Directories that must stay where they are, parents first: every repository's ``.git`` directory and
    every directory from the writable root down to the repository, so that none can be renamed away and
    replaced by a repository of the jail's where the user will run git (nsjail binds each onto itself;
    landjail puts them back at the end). Writable inside except for GIT_PROTECTED."""
    out: list[str] = []
    for root in workspaces:
        for repo in repositories(root):
            rel = os.path.relpath(repo, root)
            parts = [] if rel == "." else rel.split(os.sep)
            out += [os.path.join(root, *parts[: i + 1]) for i in range(len(parts))]
            dot = os.path.join(repo, ".git")
            if os.path.isdir(dot) and not os.path.islink(dot):
                out.append(dot)
    return sorted(dict.fromkeys(out), key=lambda p: p.count(os.sep))


def parent_chains(paths: Iterable[str], roots: Iterable[str], *, but_not: Iterable[str] = ()) -> list[str]:
    """The directories from each root (exclusive) down to each path's directory, parents first: pinned, so a
    protected path cannot be taken out of reach by renaming a directory above it (and replaced)."""
    out: list[str] = []
    nots = list(but_not)
    for root in roots:
        for p in paths:
            parent = os.path.dirname(p)
            if parent == root or not under(parent, root):
                continue
            parts = os.path.relpath(parent, root).split(os.sep)
            chain = [os.path.join(root, *parts[: i + 1]) for i in range(len(parts))]
            out += [
                d for d in chain if os.path.isdir(d) and not os.path.islink(d) and not any(under(d, n) for n in nots)
            ]
    return sorted(dict.fromkeys(out), key=lambda p: p.count(os.sep))


def placeholders(workspaces: Iterable[str]) -> list[str]:
    """Directories to create where they are missing, so that they can be made read-only."""
    out: list[str] = []
    for root in workspaces:
        out += [os.path.join(root, n) for n in WORKSPACE_PLACEHOLDER_DIRS]
        for repo in repositories(root):
            for gitdir in git_dirs(repo):
                out += [os.path.join(gitdir, n) for n in GIT_PLACEHOLDER_DIRS]
    return out


def placeholder_files(workspaces: Iterable[str]) -> list[str]:
    """Empty files to create where they are missing, so that they can be made read-only."""
    return [os.path.join(root, n) for root in workspaces for n in WORKSPACE_PLACEHOLDER_FILES]


def inside(paths: Iterable[str], roots: Iterable[str], *, but_not: Iterable[str] = ()) -> list[str]:
    """The ``paths`` that lie in one of ``roots`` (and in none of ``but_not``)."""
    rs = [os.path.realpath(r) for r in roots]
    nots = [os.path.realpath(n) for n in but_not]
    out = []
    for p in paths:
        real = os.path.realpath(p)
        if any(under(real, r) for r in rs) and not any(under(real, n) for n in nots):
            out.append(p)
    return out


def secrets(homes: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """Credential files and histories in every home directory, and those named by the environment."""
    out = [os.path.join(h, s) for h in homes for s in HOME_SECRETS]
    for key in ("HISTFILE", "NPM_CONFIG_USERCONFIG", "PIP_CONFIG_FILE", "VAULT_CONFIG_PATH", "KUBECONFIG",
                "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS", "DOCKER_CONFIG"):  # fmt: skip
        out += [p for p in env.get(key, "").split(":") if p and os.path.isabs(p)]
    return out
