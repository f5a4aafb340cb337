"""Filesystem and process hardening in both modes (DESIGN.md section 5, shared/seeds): read-only system,
writable workspace, hidden credentials, the CA key out of reach, tmpfs excludes, capabilities,
no_new_privs, the pids limit, terminal injection, /proc/self/exe."""

from __future__ import annotations

import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import UNIX_CONNECT, boundary_cmd, boundary_run, pty_run, unix_listener

MODES = ["nsjail", "landjail"]
SECRETS = {
    ".ssh/id_ed25519": "ssh-key", ".aws/credentials": "aws-key", ".config/gh/hosts.yml": "gh-token",
    ".docker/config.json": "docker-auth", ".kube/config": "kube-token", ".netrc": "netrc-password",
    ".git-credentials": "git-token", ".config/gcloud/credentials.db": "gcloud", ".azure/accessTokens.json": "azure",
    ".gnupg/private-keys-v1.d/k.key": "gpg-key",
}  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    for rel, content in SECRETS.items():
        (h / rel).parent.mkdir(parents=True, exist_ok=True)
        (h / rel).write_text(content)
    (h / "notes.txt").write_text("visible")
    return h


@pytest.mark.parametrize("mode", MODES)
def test_system_read_only_workspace_writable(tmp_path: Path, mode: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    script = "touch /usr/boundary-x; echo usr=$?; touch /etc/boundary-x; echo etc=$?; echo hi > out && echo ws=ok"
    r = boundary_run(tmp_path, "--jail-type", mode, "--workspace", str(ws), "--", "sh", "-c", f"cd {ws} && {script}")
    assert r.returncode == 0, r.stderr
    assert "usr=1" in r.stdout
    assert "etc=1" in r.stdout
    assert "ws=ok" in r.stdout
    assert (ws / "out").read_text() == "hi\n"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["tmp", "var-tmp"])
def test_the_working_directory_is_the_writable_workspace(tmp_path: Path, mode: str, where: str) -> None:
    """Run from the project dir with no --workspace: relative writes land in it (under /tmp too, which is private)."""
    ws = tmp_path / "ws" if where == "tmp" else Path(tempfile.mkdtemp(dir="/var/tmp"))
    ws.mkdir(exist_ok=True)
    try:
        r = boundary_run(tmp_path, "--jail-type", mode, "--", "sh", "-c", "echo hi > out && pwd", cwd=ws)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(ws)
        assert (ws / "out").read_text() == "hi\n"
    finally:
        if where != "tmp":
            shutil.rmtree(ws)


@pytest.mark.parametrize("mode", MODES)
def test_credentials_and_the_ca_key_are_hidden(tmp_path: Path, home: Path, mode: str) -> None:
    state = tmp_path.parent / f"{tmp_path.name}.boundary" / "state" / "boundary"
    (state / "ca").mkdir(parents=True)
    (state / "ca" / "mitmproxy-ca.pem").write_text("ca-private-key")
    reads = " ".join(f"cat ~/{rel} 2>/dev/null;" for rel in SECRETS)
    script = f"{reads} cat {state}/ca/mitmproxy-ca.pem 2>/dev/null; echo listing=$(ls -A ~/.ssh 2>/dev/null); "
    script += "cat ~/notes.txt; echo agent=${SSH_AUTH_SOCK:-none}"
    r = boundary_run(tmp_path, "--jail-type", mode, "--", "sh", "-c", script,
                     env={"HOME": str(home), "SSH_AUTH_SOCK": str(tmp_path / "agent.sock")})  # fmt: skip
    assert r.returncode == 0, r.stderr
    for secret in (*SECRETS.values(), "ca-private-key"):
        assert secret not in r.stdout
    assert "listing=\n" in r.stdout  # `ls ~/.ssh` shows nothing useful
    assert "visible" in r.stdout  # the rest of HOME is still readable
    assert "agent=none" in r.stdout


def test_ro_reveals_a_hidden_path(tmp_path: Path, home: Path) -> None:
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--ro", str(home / ".ssh"), "--", "sh", "-c",
                     "cat ~/.ssh/id_ed25519; touch ~/.ssh/new; echo touch=$?", env={"HOME": str(home)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "ssh-key" in r.stdout
    assert "touch=1" in r.stdout
    assert not (home / ".ssh" / "new").exists()


def test_container_engine_socket_is_out_of_reach(tmp_path: Path) -> None:
    """nsjail: DOCKER_HOST's socket (and /run/docker.sock & co.) is covered. landjail cannot do this (Landlock
    ABI 7 does not restrict connecting to pathname sockets): a documented gap."""
    path = tmp_path / "docker.sock"
    engine = unix_listener(path)
    try:
        r = boundary_run(tmp_path, "--jail-type", "nsjail", "--", "python3", "-c", UNIX_CONNECT, str(path),
                         env={"DOCKER_HOST": f"unix://{path}"})  # fmt: skip
        assert "refused" in r.stdout, r.stderr
        with pytest.raises(BlockingIOError):
            engine.accept()
    finally:
        engine.close()


@pytest.mark.parametrize("mode", MODES)
def test_tmpfs_exclude_is_writable_and_executable(tmp_path: Path, mode: str) -> None:
    ws = tmp_path / "ws"
    (ws / "node_modules").mkdir(parents=True)
    (ws / "node_modules" / "from-host").write_text("x")
    script = (
        "cd node_modules && printf '#!/bin/sh\\necho native-ran\\n' > tool && chmod +x tool && ./tool; "
        "ls -A; stat -c %a ."
    )
    r = boundary_run(tmp_path, "--jail-type", mode, "--workspace", str(ws), "--tmpfs", str(ws / "node_modules"),
                     "--", "sh", "-c", f"cd {ws} && {script}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "native-ran" in r.stdout
    if mode == "nsjail":  # an empty tmpfs, mode 1777, gone afterwards
        assert "from-host" not in r.stdout
        assert "1777" in r.stdout
        assert not (ws / "node_modules" / "tool").exists()


@pytest.mark.parametrize("mode", MODES)
def test_capabilities_are_gone_and_no_new_privs(tmp_path: Path, mode: str) -> None:
    r = boundary_run(tmp_path, "--jail-type", mode, "--", "cat", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    sets = dict(re.findall(r"^(Cap\w+):\s+(\w+)$", r.stdout, re.M))
    for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(sets[name], 16) == 0, sets
    if mode == "nsjail" or os.geteuid() == 0:
        assert int(sets["CapBnd"], 16) == 0, sets  # landjail as non-root cannot clear it (no CAP_SETPCAP)
    assert re.search(r"^NoNewPrivs:\s+1$", r.stdout, re.M)


BOMB = """
import os, signal, sys
kids = []
for i in range(1000):
    try:
        pid = os.fork()
    except OSError as e:
        print(f"contained after {len(kids)}", flush=True)
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, signal.SIGKILL)
    os.waitpid(k, 0)
sys.exit(3)
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_is_contained_by_the_pids_limit(tmp_path: Path, mode: str) -> None:
    r = boundary_run(tmp_path, "--jail-type", mode, "--pids-limit", "64", "--", "python3", "-c", BOMB)
    assert r.returncode == 3, r.stderr  # boundary exits cleanly with the command's own status
    m = re.search(r"contained after (\d+)", r.stdout)
    assert m, r.stdout
    assert int(m.group(1)) < 64


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_no_limit_means_no_limit(tmp_path: Path, limit: str) -> None:
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_NPROC)[0])"
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--pids-limit", limit, "--", "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == resource.getrlimit(resource.RLIMIT_NPROC)[0]  # untouched, never an invalid 0


@pytest.mark.parametrize("mode", MODES)
def test_terminal_injection_fails(tmp_path: Path, mode: str) -> None:
    code = (
        "import fcntl, os, termios\ntry:\n fcntl.ioctl(os.open('/dev/tty', os.O_RDWR), termios.TIOCSTI, b'x')\n"
        " print('INJECTED')\nexcept OSError as e:\n print('tiocsti-errno', e.errno)\n"
        "try:\n fcntl.ioctl(os.open('/dev/tty', os.O_RDWR), 0x541C, b'\\x0c')\n print('TIOCLINUX passed')\n"
        "except OSError as e:\n print('tioclinux-errno', e.errno)\n"
    )
    status, out = pty_run(tmp_path, boundary_cmd(tmp_path, "--jail-type", mode, "--", "python3", "-c", code), [])
    assert status == 0, out
    assert "tiocsti-errno 1" in out  # EPERM from seccomp
    assert "INJECTED" not in out
    assert "tioclinux-errno 1" in out  # EPERM from seccomp (a pty alone would say ENOTTY/EINVAL)


@pytest.mark.parametrize("mode", MODES)
def test_proc_self_exe_names_the_running_binary(tmp_path: Path, mode: str) -> None:
    """Java and .NET find themselves through /proc/self/exe; nsjail mounts a /proc of the jail's pid ns."""
    r = boundary_run(tmp_path, "--jail-type", mode, "--", "sh", "-c", "readlink /proc/self/exe; head -1 /proc/cpuinfo")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith("/readlink")
    assert r.stdout.splitlines()[1].startswith("processor")


def test_memory_limit_without_a_cgroup_warns(tmp_path: Path) -> None:
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--memory", "512m", "--", "true")
    assert r.returncode == 0
    assert "--memory 536870912 cannot be enforced here" in r.stderr
