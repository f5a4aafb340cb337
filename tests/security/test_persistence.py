"""Nothing the jail writes is later run, or read as configuration, by an unconfined program; no
secret it does not need is readable. Each test plants in each mode, then runs the unconfined
consumer outside the jail, after boundary exited (git status / git commit in the workspace, an
interactive bash, a PATH lookup, boundary's own next run) and checks that the planted code did
not run. Ordinary git work and `npm install -g` go on working inside."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support import boundary_env, boundary_run, wait_for

MODES = ["nsjail", "landjail"]

PLANT = r"""
import json, os, sys
marker, ws = sys.argv[1], sys.argv[2]
home = os.environ["HOME"]
out = {}
payload = "touch %s\n" % marker

def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = "error %d" % e.errno

def write(path, text, mode="a"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)
    if path.endswith(("pre-commit", "/ls")):
        os.chmod(path, 0o755)

for name in (".bashrc", ".profile", ".bash_logout", ".bash_profile"):
    attempt("home " + name, lambda n=name: write(os.path.join(home, n), payload))
attempt("home .gitconfig", lambda: write(os.path.join(home, ".gitconfig"), "[core]\n\thooksPath = /tmp\n"))
attempt("home .config/git/config", lambda: write(os.path.join(home, ".config/git/config"), "[core]\n\tpager = x\n"))
attempt("home .ssh/rc", lambda: write(os.path.join(home, ".ssh/rc"), payload))
attempt("home systemd unit", lambda: write(os.path.join(home, ".config/systemd/user/x.service"), "[Service]\n"))
attempt("home autostart", lambda: write(os.path.join(home, ".config/autostart/x.desktop"), "[Desktop Entry]\n"))
attempt("home .local/bin/ls", lambda: write(os.path.join(home, ".local/bin/ls"), "#!/bin/sh\n" + payload, "w"))
attempt("home .cargo/bin/ls", lambda: write(os.path.join(home, ".cargo/bin/ls"), "#!/bin/sh\n" + payload, "w"))
attempt("home .npm-global/bin/ls",
        lambda: write(os.path.join(home, ".npm-global/bin/ls"), "#!/bin/sh\n" + payload, "w"))
attempt("home .npmrc", lambda: write(os.path.join(home, ".npmrc"), "script-shell=/tmp/x\n"))
AGENT_PLANTS = (".gemini/extensions/evil/gemini-extension.json", ".gemini/.env", ".codex/rules/default.rules",
                ".codex/AGENTS.md", ".claude/commands/x.md", ".claude/agents/x.md", ".claude/hooks/x.sh")
for rel in AGENT_PLANTS:
    attempt("home " + rel, lambda r=rel: write(os.path.join(home, r), payload))
for rel in (".claude/settings.json", ".mcp.json", ".cursor/mcp.json", ".gemini/settings.json", ".nvim.lua",
            ".dir-locals.el"):
    attempt("ws " + rel, lambda r=rel: write(os.path.join(ws, r), payload))
attempt("boundary config", lambda: write(os.path.join(os.environ["XDG_CONFIG_HOME"], "boundary/config.yaml"),
                                        "allow_private: true\n"))
git = os.path.join(ws, ".git")
fsmonitor = "[core]\n\tfsmonitor = \"%s\"\n" % payload.strip()
attempt("ws .git/config", lambda: write(os.path.join(git, "config"), fsmonitor))
attempt("ws .git/hooks/pre-commit", lambda: write(os.path.join(git, "hooks/pre-commit"), "#!/bin/sh\n" + payload, "w"))
attempt("ws .git/info/attributes", lambda: write(os.path.join(git, "info/attributes"), "* filter=x\n"))
attempt("ws .envrc", lambda: write(os.path.join(ws, ".envrc"), payload))
attempt("ws .vscode/settings.json", lambda: write(os.path.join(ws, ".vscode/settings.json"), "{}"))
attempt("ws .git renamed", lambda: os.rename(git, git + ".old"))
print(json.dumps(out))
"""


def git(ws: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)  # fmt: skip


def run_in(ws: Path, env: dict[str, str], mode: str, *command: str) -> subprocess.CompletedProcess[str]:
    """`boundary run` with ``ws`` as the workspace and working directory (and no other writable path)."""
    return subprocess.run(
        [sys.executable, "-m", "jail", "run", "--jail-type", mode, "--workspace", str(ws), "--", *command],
        cwd=ws, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def setting(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A home (the jail's $HOME, also the outside user's for the consumers) and a workspace with a repository."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".cargo" / "bin").mkdir(parents=True)
    (home / ".bashrc").write_text("# the user's\n")
    (home / ".profile").write_text("# the user's\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {
        **boundary_env(tmp_path),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.test",
    }
    for args in (("init", "-q", "-b", "main"), ("config", "user.email", "t@example.test"),
                 ("config", "user.name", "t")):  # fmt: skip
        assert git(ws, *args, env=env).returncode == 0
    (ws / "f.txt").write_text("one\n")
    assert git(ws, "add", "f.txt", env=env).returncode == 0
    assert git(ws, "commit", "-qm", "first", env=env).returncode == 0
    return home, ws, env


@pytest.mark.parametrize("mode", MODES)
def test_nothing_planted_runs_outside(tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str) -> None:
    home, ws, env = setting
    marker = tmp_path / "planted-code-ran"
    probe = ws / "plant.py"  # in the workspace: nsjail's /tmp is its own
    probe.write_text(PLANT)
    # the workspace is where the command starts; the test root stays visible (boundary_run adds --rw for it,
    # which would make everything writable: ask for the workspace alone)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(marker), str(ws))
    assert r.returncode == 0, r.stderr
    planted = json.loads(r.stdout)
    # the unconfined consumers, outside, after the run
    (ws / "f.txt").write_text("two\n")
    st = git(ws, "status", "--porcelain", env=env)
    assert st.returncode == 0, st.stderr
    commit = git(ws, "commit", "-qam", "second", env=env)
    assert commit.returncode == 0, commit.stderr
    bash = subprocess.run(["bash", "-i", "-c", "true"], env=env, capture_output=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert bash.returncode == 0
    login = subprocess.run(["bash", "-l", "-c", "true"], env=env, capture_output=True, timeout=60, check=False,
                           stdin=subprocess.DEVNULL)  # fmt: skip
    assert login.returncode == 0
    path = f"{home}/.local/bin:{home}/.cargo/bin:{home}/.npm-global/bin:/usr/bin:/bin"
    which = subprocess.run(["sh", "-c", "command -v ls"], env={**env, "PATH": path}, capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
    assert not marker.exists(), (planted, r.stderr)
    assert which.stdout.strip() in ("/usr/bin/ls", "/bin/ls"), (which.stdout, planted)
    assert (ws / ".git").is_dir()
    assert "fsmonitor" not in (ws / ".git" / "config").read_text()
    assert not (ws / ".git" / "hooks" / "pre-commit").exists()
    assert not (ws / ".envrc").exists()
    assert not (ws / ".vscode" / "settings.json").exists()
    for name in (".gitconfig", ".config/git/config", ".ssh/rc", ".config/systemd/user/x.service",
                 ".config/autostart/x.desktop", ".npmrc"):  # fmt: skip
        assert not (home / name).exists(), (name, planted)
    assert (home / ".bashrc").read_text() == "# the user's\n"
    # what agents and editors load when they start later (an outside review found these kept)
    for name in (".gemini/extensions/evil/gemini-extension.json", ".gemini/.env", ".codex/rules/default.rules",
                 ".codex/AGENTS.md", ".claude/commands/x.md", ".claude/agents/x.md", ".claude/hooks/x.sh"):  # fmt: skip
        assert not (home / name).exists(), (name, planted)
    for name in (".claude/settings.json", ".mcp.json", ".cursor/mcp.json", ".gemini/settings.json", ".nvim.lua",
                 ".dir-locals.el"):  # fmt: skip
        assert not (ws / name).exists(), (name, planted)
    assert not (Path(env["XDG_CONFIG_HOME"]) / "boundary" / "config.yaml").exists()
    if mode == "nsjail":  # refused at once (landjail puts things back at the end instead)
        # (this HOME lies in /tmp, which is the jail's own in nsjail: writes there vanish with it)
        for name in ("ws .git/config", "ws .git/hooks/pre-commit", "ws .envrc", "ws .vscode/settings.json",
                     "ws .git/info/attributes", "ws .git renamed"):  # fmt: skip
            assert planted[name] != "ok", (name, planted)


SECRETS = (".npmrc", ".pypirc", ".cargo/credentials.toml", ".config/git/credentials", ".vault-token",
           ".config/containers/auth.json", ".cache/huggingface/token", ".bash_history", ".ssh/id_ed25519",
           ".git-credentials", ".terraform.d/credentials.tfrc.json", ".local/share/atuin/history.db",
           ".config/sops/age/keys.txt", ".config/github-copilot/apps.json", ".yarnrc.yml", ".env",
           ".config/configstore/firebase-tools.json", ".Xauthority", ".config/helm/repositories.yaml",
           ".viminfo")  # fmt: skip

READ = r"""
import json, sys
out = {}
for p in sys.argv[1:]:
    try:
        with open(p) as f:
            out[p] = f.read()
    except OSError as e:
        out[p] = "error %d" % e.errno
print(json.dumps(out))
"""


@pytest.mark.parametrize("home_elsewhere", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_secrets_are_hidden(tmp_path: Path, mode: str, home_elsewhere: bool) -> None:
    account = Path(os.path.expanduser("~" + os.environ.get("USER", ""))) if os.environ.get("USER") else None
    if account is None or not account.is_dir() or not os.access(account, os.W_OK):
        pytest.skip("the account's home is not writable here")
    fake = tmp_path / "elsewhere"
    home = fake if home_elsewhere else account
    made: list[Path] = []
    for root in {account, home}:
        for name in SECRETS:
            p = root / name
            if p.exists():
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("SECRET-VALUE\n")
            made.append(p)
    try:
        probe = tmp_path / "read.py"
        probe.write_text(READ)
        paths = [str(root / n) for root in {account, home} for n in SECRETS]
        r = boundary_run(tmp_path, "--jail-type", mode, "--", sys.executable, str(probe), *paths,
                         env={"HOME": str(home)})  # fmt: skip
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        leaked = {p: v for p, v in out.items() if "SECRET-VALUE" in v}
        assert not leaked, leaked
    finally:
        for p in made:
            p.unlink()


@pytest.mark.parametrize("mode", MODES)
def test_git_work_goes_on_inside(tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str) -> None:
    _home, ws, env = setting
    script = ("set -e; git checkout -q -b feature; echo more > g.txt; git add g.txt; git commit -qm inside; "
              "git checkout -q main; git merge -q --no-edit feature; git branch -q topic; git log --oneline | wc -l; "
              "git init -q sub && cd sub && git commit -q --allow-empty -m x && echo sub-ok")  # fmt: skip
    r = run_in(ws, env, mode, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "sub-ok"], r.stdout  # the merge was a fast-forward
    assert git(ws, "log", "--oneline", env=env).stdout.count("\n") == 2


NESTED = r"""
import json, os, subprocess, sys
marker, ws = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except (OSError, subprocess.CalledProcessError) as e:
        out[name] = "error %s" % getattr(e, "errno", e)
def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
proj = os.path.join(ws, "proj")
attempt("nested fsmonitor", lambda: subprocess.run(["git", "-C", proj, "config", "core.fsmonitor",
                                                    "touch %s; false" % marker], check=True))
hook = "#!/bin/sh\ntouch %s\n" % marker
attempt("nested hook", lambda: write(os.path.join(proj, ".git/hooks/pre-commit"), hook, 0o755))
attempt("nested .git renamed", lambda: os.rename(os.path.join(proj, ".git"), os.path.join(proj, ".git.old")))
evil = os.path.join(ws, ".evil")
os.makedirs(os.path.join(evil, "hooks"), exist_ok=True)
write(os.path.join(evil, "config"), "[core]\n\tfsmonitor = \"touch %s; false\"\n" % marker)
write(os.path.join(evil, "hooks", "pre-commit"), "#!/bin/sh\ntouch %s\n" % marker, 0o755)
attempt("commondir", lambda: write(os.path.join(ws, ".git", "commondir"), evil + "\n"))
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", MODES)
def test_repositories_below_the_workspace_and_commondir(
    tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str
) -> None:
    _home, ws, env = setting
    proj = ws / "proj"
    proj.mkdir()
    for args in (("init", "-q", "-b", "main"),):
        assert git(proj, *args, env=env).returncode == 0
    (proj / "a.txt").write_text("a\n")
    assert git(proj, "add", "a.txt", env=env).returncode == 0
    assert git(proj, "commit", "-qm", "a", env=env).returncode == 0
    marker = tmp_path / "planted-code-ran"
    probe = ws / "nested.py"
    probe.write_text(NESTED)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(marker), str(ws))
    assert r.returncode == 0, r.stderr
    planted = json.loads(r.stdout)
    for repo in (ws, proj):
        (repo / "new.txt").write_text("x\n")
        assert git(repo, "status", "--porcelain", env=env).returncode == 0
        assert git(repo, "add", "new.txt", env=env).returncode == 0
        commit = git(repo, "commit", "-qm", "outside", env=env)
        assert commit.returncode == 0, commit.stderr
    assert not marker.exists(), (planted, r.stderr)
    assert (proj / ".git").is_dir()
    assert not (ws / ".git" / "commondir").exists()
    if mode == "nsjail":
        for name in ("nested fsmonitor", "nested hook", "nested .git renamed"):
            assert planted[name] != "ok", (name, planted)


HOME_PLANT = r"""
import json, os, sys
home = os.environ["HOME"]
marker = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except OSError as e:
        out[name] = "error %d" % e.errno
def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
attempt("~/bin/git", lambda: write(os.path.join(home, "bin/git"), "#!/bin/sh\ntouch %s\n" % marker, 0o755))
attempt("user site .pth", lambda: write(os.path.join(home, ".local/lib/python3.11/site-packages/zz.pth"),
                                        "import os; os.system('touch %s')\n" % marker))
attempt("~/.curlrc", lambda: write(os.path.join(home, ".curlrc"), "proxy = http://127.0.0.1:9\n"))
attempt("~/.vim plugin", lambda: write(os.path.join(home, ".vim/plugin/x.vim"), "call system('touch %s')\n" % marker))
attempt("rename ~/.config", lambda: os.rename(os.path.join(home, ".config"), os.path.join(home, ".config.x")))
attempt("rename ~/.local", lambda: os.rename(os.path.join(home, ".local"), os.path.join(home, ".local.x")))
attempt("project file", lambda: write(os.path.join(home, "project", "main.py"), "print(1)\n"))
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", MODES)
def test_workspace_is_home(tmp_path: Path, mode: str) -> None:
    """`boundary run` started in ~: the projects in it are writable, its dot files, ~/bin and top level are not.
    (A home in /var/tmp: nsjail's /tmp is its own, where writes would vanish anyway.)"""
    home = Path(tempfile.mkdtemp(prefix="boundary-home-", dir="/var/tmp"))
    try:
        _workspace_is_home(tmp_path, home, mode)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _workspace_is_home(tmp_path: Path, home: Path, mode: str) -> None:
    for d in (".config", ".local/lib/python3.11/site-packages", "project", "bin", ".vim"):
        (home / d).mkdir(parents=True, exist_ok=True)
    (home / ".bashrc").write_text("# the user's\n")
    (home / ".profile").write_text('PATH="$HOME/bin:$PATH"\n')
    marker = tmp_path / "planted-code-ran"
    probe = home / "project" / "plant.py"
    probe.write_text(HOME_PLANT)
    env = {**boundary_env(tmp_path), "HOME": str(home)}
    r = run_in(home, env, mode, sys.executable, str(probe), str(marker))
    assert r.returncode == 0, r.stderr
    planted = json.loads(r.stdout)
    assert planted["project file"] == "ok", planted
    for name in ("~/bin/git", "user site .pth", "~/.curlrc", "~/.vim plugin", "rename ~/.config", "rename ~/.local"):
        assert planted[name] != "ok", (name, planted)
    login = subprocess.run(["bash", "-lc", "command -v git; python3 -c pass"], env=env, capture_output=True,
                           text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    assert "/bin/git" in login.stdout
    assert not login.stdout.startswith(str(home))
    assert not marker.exists()
    assert (home / ".config").is_dir()
    assert (home / ".local").is_dir()
    assert not (home / ".curlrc").exists()


def test_the_audit_log_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("# the user's\n")
    audit = tmp_path / "logs" / "audit.jsonl"
    audit.parent.mkdir()
    audit.symlink_to(target)
    ws = tmp_path / "ws"
    ws.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "jail", "run", "--jail-type", "nsjail", "--audit-log", str(audit), "--", "sh", "-c",
         "exec 3<>/dev/tcp/denied.example/80 2>/dev/null; true"],
        cwd=ws, env=boundary_env(tmp_path), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert target.read_text() == "# the user's\n"
    assert "cannot open audit log" in r.stderr


SWAP = r"""
import json, os, subprocess, sys
marker, ws, victim = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except (OSError, subprocess.CalledProcessError) as e:
        out[name] = "error %s" % getattr(e, "errno", e)
proj = os.path.join(ws, "src", "proj")
def swap_in_a_repository():
    os.rename(os.path.join(ws, "src"), os.path.join(ws, "src.real"))
    os.makedirs(proj)
    subprocess.run(["git", "init", "-q", proj], check=True)
    subprocess.run(["git", "-C", proj, "config", "core.fsmonitor", "touch %s; false" % marker], check=True)
attempt("parent renamed, impostor repository", swap_in_a_repository)
def symlink_the_parent():  # boundary must not follow this when it puts things back
    real = os.path.join(ws, "src.real") if os.path.isdir(os.path.join(ws, "src.real")) else os.path.join(ws, "src")
    with open(os.path.join(real, "proj", ".git", "config"), "a") as f:
        f.write("[core]\n\tfsmonitor = \"touch %s; false\"\n" % marker)
    os.rename(real, os.path.join(ws, "src.moved"))
    if os.path.lexists(os.path.join(ws, "src")):
        os.rename(os.path.join(ws, "src"), os.path.join(ws, "src.impostor"))
    os.symlink(victim, os.path.join(ws, "src"))
attempt("parent symlinked", symlink_the_parent)
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_repositorys_parents_cannot_be_swapped(
    tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str
) -> None:
    """Renaming a repository's parent away and putting an impostor repository (or a symlink) in its place: the
    user's git must find the user's repository there afterwards, and boundary, which runs unconfined, must not
    follow the symlink when it puts things back."""
    _home, ws, env = setting
    proj = ws / "src" / "proj"
    proj.mkdir(parents=True)
    assert git(proj, "init", "-q", "-b", "main", env=env).returncode == 0
    (proj / "a.txt").write_text("a\n")
    assert git(proj, "add", "a.txt", env=env).returncode == 0
    assert git(proj, "commit", "-qm", "a", env=env).returncode == 0
    victim = tmp_path / "victim"
    (victim / "proj").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    probe = ws / "swap.py"
    probe.write_text(SWAP)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(marker), str(ws), str(victim))
    assert r.returncode == 0, r.stderr
    planted = json.loads(r.stdout)
    assert sorted(p.name for p in (victim / "proj").iterdir()) == [], "boundary wrote through the symlink"
    assert (proj / ".git").is_dir(), r.stderr
    (proj / "b.txt").write_text("b\n")
    assert git(proj, "status", "--porcelain", env=env).returncode == 0
    assert git(proj, "log", "--oneline", env=env).stdout.count("\n") == 1  # the user's repository
    assert not marker.exists(), (planted, r.stderr)
    if mode == "nsjail":
        assert planted["parent renamed, impostor repository"] != "ok", planted


MADE = r"""
import os, subprocess, sys
marker, ws = sys.argv[1], sys.argv[2]
def git(*a):
    subprocess.run(["git", *a], check=True, capture_output=True)
evil = os.path.join(ws, "evil")
git("init", "-q", evil)
git("-C", evil, "config", "core.fsmonitor", "touch %s; false" % marker)
git("-C", evil, "config", "alias.st", "!touch %s" % marker)
hook = os.path.join(evil, ".git", "hooks", "pre-commit")
with open(hook, "w") as f:
    f.write("#!/bin/sh\ntouch %s\n" % marker)
os.chmod(hook, 0o755)
sub = os.path.join(ws, "docs")  # a plain directory of the user's repository: a .git file there
os.makedirs(sub, exist_ok=True)
with open(os.path.join(sub, ".git"), "w") as f:
    f.write("gitdir: %s\n" % os.path.join(evil, ".git"))
bare = os.path.join(ws, "bare.git")
try:
    with open(os.path.join(bare, "config"), "a") as f:
        f.write('[alias]\n\tst = "!touch %s"\n' % marker)
    print("bare config: written")
except OSError as e:
    print("bare config: refused", e.errno)
"""


@pytest.mark.parametrize("mode", MODES)
def test_repositories_the_jail_makes_run_nothing_outside(
    tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str
) -> None:
    _home, ws, env = setting
    bare = ws / "bare.git"
    assert subprocess.run(["git", "init", "-q", "--bare", str(bare)], env=env, check=False).returncode == 0
    marker = tmp_path / "planted-code-ran"
    probe = ws / "made.py"
    probe.write_text(MADE)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(marker), str(ws))
    assert r.returncode == 0, r.stderr
    evil = ws / "evil"
    (evil / "f").write_text("x\n")
    for args in (("status",), ("add", "f"), ("commit", "-qm", "outside"), ("st",)):
        git(evil, *args, env=env)
    git(ws / "docs", "status", env=env)
    git(bare, "st", env=env)
    assert not marker.exists(), (r.stdout, r.stderr)
    assert "a repository the jail made" in r.stderr
    if mode == "nsjail":
        assert "bare config: refused" in r.stdout


POINT_OUT = r"""
import os, subprocess, sys
ws, outside = sys.argv[1], sys.argv[2]
new = os.path.join(ws, "new")
subprocess.run(["git", "init", "-q", new], check=True)
with open(os.path.join(new, ".git", "commondir"), "w") as f:
    f.write(outside + "\n")  # boundary's clean-up must not follow this into the user's other repository
with open(os.path.join(ws, ".git", "config.boundary-rejected-x"), "w") as f:
    f.write("")
"""


@pytest.mark.parametrize("mode", MODES)
def test_exit_clean_up_touches_nothing_outside(
    tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str
) -> None:
    _home, ws, env = setting
    outside = tmp_path / "elsewhere"
    assert git(outside.parent, "init", "-q", str(outside), env=env).returncode == 0
    assert git(outside, "config", "core.pager", "less", env=env).returncode == 0
    hook = outside / ".git" / "hooks" / "post-commit"
    hook.write_text("#!/bin/sh\ntrue\n")
    hook.chmod(0o755)
    before = (outside / ".git" / "config").read_text()
    probe = ws / "point.py"
    probe.write_text(POINT_OUT)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(ws), str(outside / ".git"))
    assert r.returncode == 0, r.stderr
    assert (outside / ".git" / "config").read_text() == before
    assert hook.exists()
    assert not (ws / "new" / ".git" / "commondir").exists()  # the jail's pointer moved aside


SUBMODULE = r"""
import os, subprocess, sys
marker, ws = sys.argv[1], sys.argv[2]
def git(*a):
    subprocess.run(["git", *a], check=True, capture_output=True)
# a new submodule's git directory inside the user's repository, and a new worktree of it
os.makedirs(os.path.join(ws, ".git", "modules"), exist_ok=True)
git("clone", "-q", "--separate-git-dir=" + os.path.join(ws, ".git", "modules", "sub"), ws, os.path.join(ws, "sub"))
with open(os.path.join(ws, ".git", "modules", "sub", "config"), "a") as f:
    f.write("[core]\n\tfsmonitor = \"touch %s; false\"\n" % marker)
git("-C", ws, "worktree", "add", "-q", os.path.join(ws, "wt"))
with open(os.path.join(ws, ".git", "worktrees", "wt", "config.worktree"), "w") as f:
    f.write("[core]\n\tfsmonitor = \"touch %s; false\"\n" % marker)
"""


@pytest.mark.parametrize("mode", MODES)
def test_new_submodules_and_worktrees_of_a_users_repository(
    tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str
) -> None:
    _home, ws, env = setting
    marker = tmp_path / "planted-code-ran"
    probe = tmp_path / "sub.py" if mode == "landjail" else ws / "sub.py"
    probe.write_text(SUBMODULE)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(marker), str(ws))
    assert r.returncode == 0, r.stderr
    for d in (ws / "sub", ws / "wt"):
        (d / "dirty").write_text("x\n")
        git(d, "status", env=env)
    assert "fsmonitor" not in (ws / ".git" / "modules" / "sub" / "config").read_text()
    assert not marker.exists(), r.stderr


KEEP_WRITING = r"""
import os, sys, time
ws, ready = sys.argv[1], sys.argv[2]
with open(os.path.join(ws, ".git", "config"), "a") as f:
    f.write("[core]\n\tfsmonitor = \"touch %s; false\"\n" % sys.argv[3])
open(ready, "w").close()
time.sleep(600)
"""


def test_landjail_puts_things_back_even_when_boundary_is_killed(
    tmp_path: Path, setting: tuple[Path, Path, dict[str, str]]
) -> None:
    _home, ws, env = setting
    marker = tmp_path / "planted-code-ran"
    ready = ws / "ready"
    probe = ws / "keep.py"
    probe.write_text(KEEP_WRITING)
    with (tmp_path / "err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jail", "run", "--jail-type", "landjail", "--workspace", str(ws), "--",
             sys.executable, str(probe), str(ws), str(ready), str(marker)],
            cwd=ws, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None)
        assert ready.exists(), (tmp_path / "err").read_text()
        os.kill(-proc.pid, signal.SIGKILL)  # boundary and the command; the keeper is left to do the rest
        proc.wait(60)
        config = ws / ".git" / "config"

        # the keeper moves the jail's version aside, then puts the original back: absent for a moment in between
        def restored() -> bool:
            try:
                return "fsmonitor" not in config.read_text()
            except FileNotFoundError:
                return False

        wait_for(restored, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    git(ws, "status", env=env)
    assert not marker.exists()


HOOKSPATH = r"""
import os, sys
marker, ws = sys.argv[1], sys.argv[2]
out = []
def attempt(name, fn):
    try:
        fn(); out.append(name + " ok")
    except OSError as e:
        out.append("%s error %d" % (name, e.errno))
def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    os.chmod(path, 0o755)
attempt("hook", lambda: write(os.path.join(ws, ".githooks", "pre-commit"), "#!/bin/sh\ntouch %s\n" % marker))
attempt("new hook", lambda: write(os.path.join(ws, ".githooks", "post-commit"), "#!/bin/sh\ntouch %s\n" % marker))
attempt("include", lambda: write(os.path.join(ws, ".gitconfig.project"),
                                 "[core]\n\tfsmonitor = \"touch %s; false\"\n" % marker, "a"))
print("\n".join(out))
"""


@pytest.mark.parametrize("mode", MODES)
def test_hooks_and_includes_the_users_config_points_at(
    tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str
) -> None:
    """core.hooksPath and include.path of the user's repository name files in the working tree (husky and the
    like): they are git configuration too."""
    _home, ws, env = setting
    (ws / ".githooks").mkdir()
    (ws / ".githooks" / "pre-commit").write_text("#!/bin/sh\ntrue\n")
    (ws / ".githooks" / "pre-commit").chmod(0o755)
    (ws / ".gitconfig.project").write_text("[user]\n\tname = t\n")
    assert git(ws, "config", "core.hooksPath", ".githooks", env=env).returncode == 0
    assert git(ws, "config", "include.path", "../.gitconfig.project", env=env).returncode == 0
    marker = tmp_path / "planted-code-ran"
    probe = ws / "hp.py"
    probe.write_text(HOOKSPATH)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(marker), str(ws))
    assert r.returncode == 0, r.stderr
    (ws / "f.txt").write_text("changed\n")
    git(ws, "status", env=env)
    commit = git(ws, "commit", "-qam", "outside", env=env)
    assert commit.returncode == 0, commit.stderr
    assert not marker.exists(), (r.stdout, r.stderr)
    if mode == "nsjail":
        assert "hook ok" not in r.stdout
        assert "include ok" not in r.stdout


SWAP_PARENTS = r"""
import os, sys
marker, ws = sys.argv[1], sys.argv[2]
def attempt(fn):
    try:
        fn()
    except OSError:
        pass
def plant():
    os.rename(os.path.join(ws, "tools"), os.path.join(ws, "tools.old"))
    os.makedirs(os.path.join(ws, "tools", "hk"))
    with open(os.path.join(ws, "tools", "hk", "pre-commit"), "w") as f:
        f.write("#!/bin/sh\ntouch %s\n" % marker)
    os.chmod(os.path.join(ws, "tools", "hk", "pre-commit"), 0o755)
def through_the_link():
    with open(os.path.join(ws, "real-hooks", "post-commit"), "w") as f:
        f.write("#!/bin/sh\ntouch %s\n" % marker)
    os.chmod(os.path.join(ws, "real-hooks", "post-commit"), 0o755)
attempt(plant)
attempt(through_the_link)
"""


@pytest.mark.parametrize("mode", MODES)
def test_hooks_path_parents_and_symlinks(tmp_path: Path, setting: tuple[Path, Path, dict[str, str]], mode: str) -> None:
    _home, ws, env = setting
    (ws / "tools" / "hk").mkdir(parents=True)
    (ws / "real-hooks").mkdir()
    (ws / "other").mkdir()
    (ws / "other" / "hl").symlink_to(ws / "real-hooks")
    assert git(ws, "config", "core.hooksPath", "tools/hk", env=env).returncode == 0
    assert git(ws, "config", "include.path", "../other/inc.cfg", env=env).returncode == 0
    (ws / "other" / "inc.cfg").write_text("[core]\n\thooksPath = other/hl\n")  # the include names the link
    marker = tmp_path / "planted-code-ran"
    probe = ws / "swap_parents.py"
    probe.write_text(SWAP_PARENTS)
    r = run_in(ws, env, mode, sys.executable, str(probe), str(marker), str(ws))
    assert r.returncode == 0, r.stderr
    (ws / "f.txt").write_text("again\n")
    commit = git(ws, "commit", "-qam", "outside", env=env)
    assert commit.returncode == 0, commit.stderr
    assert not marker.exists(), r.stderr
    assert not (ws / "tools" / "hk" / "pre-commit").exists(), r.stderr  # the first hooksPath: nothing planted
    assert not (ws / "real-hooks" / "post-commit").exists(), r.stderr
