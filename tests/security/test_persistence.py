"""Nothing the jail writes is later run, or read as configuration, by an unconfined program; no
secret it does not need is readable. Each test plants in each mode, then runs the unconfined
consumer outside the jail, after boundary exited (git status / git commit in the workspace, an
interactive bash, a PATH lookup, boundary's own next run) and checks that the planted code did
not run. Ordinary git work and `npm install -g` go on working inside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import boundary_env, boundary_run

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
    r = subprocess.run(
        [sys.executable, "-m", "jail", "run", "--jail-type", mode, "--workspace", str(ws), "--",
         sys.executable, str(probe), str(marker), str(ws)],
        cwd=ws, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
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
    assert not (Path(env["XDG_CONFIG_HOME"]) / "boundary" / "config.yaml").exists()
    if mode == "nsjail":  # refused at once (landjail puts things back at the end instead)
        # (this HOME lies in /tmp, which is the jail's own in nsjail: writes there vanish with it)
        for name in ("ws .git/config", "ws .git/hooks/pre-commit", "ws .envrc", "ws .vscode/settings.json",
                     "ws .git/info/attributes", "ws .git renamed"):  # fmt: skip
            assert planted[name] != "ok", (name, planted)


SECRETS = (".npmrc", ".pypirc", ".cargo/credentials.toml", ".config/git/credentials", ".vault-token",
           ".config/containers/auth.json", ".cache/huggingface/token", ".bash_history", ".ssh/id_ed25519",
           ".git-credentials", ".terraform.d/credentials.tfrc.json")  # fmt: skip

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
    r = subprocess.run(
        [sys.executable, "-m", "jail", "run", "--jail-type", mode, "--workspace", str(ws), "--", "sh", "-c", script],
        cwd=ws, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "sub-ok"], r.stdout  # the merge was a fast-forward
    assert git(ws, "log", "--oneline", env=env).stdout.count("\n") == 2
