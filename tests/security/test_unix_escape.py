"""Unix sockets outside the jail, in both modes: a listener and a datagram socket that the test
(the "user", outside) created must hear nothing from the jail, reached by path, relative path,
symlink or hard link, by connect, sendto or sendmsg; a real tmux server must not run a command
for the jail; variables that name outside sockets are unset. The jail's own sockets keep working,
and --allow-unix opens exactly the one named."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import boundary_run

MODES = ["nsjail", "landjail"]

PROBE = r"""
import errno, json, os, socket, sys
outside, dgram, work = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}

def attempt(name, fn):
    try:
        out[name] = "ok: " + repr(fn())
    except OSError as e:
        out[name] = "error: " + errno.errorcode.get(e.errno, str(e.errno))

def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(path)
        s.sendall(b"escape attempt\n")
        return "connected"
    finally:
        s.close()

def dgram_sendto(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        return s.sendto(b"escape attempt", path)

def dgram_sendmsg(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        return s.sendmsg([b"escape attempt"], [], 0, path)

def pair_sendto(path):  # a socketpair end is "connected", but an address overrides that
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        return a.sendto(b"escape attempt", path)

os.chdir(work)
attempt("connect", lambda: connect(outside))
attempt("connect relative", lambda: connect(os.path.relpath(outside, work)))
os.symlink(outside, "sym.sock")
attempt("connect symlink", lambda: connect("sym.sock"))
try:
    os.link(outside, "hard.sock")
    attempt("connect hard link", lambda: connect("hard.sock"))
except OSError as e:
    out["connect hard link"] = "error: link " + errno.errorcode.get(e.errno, "?")
attempt("dgram sendto", lambda: dgram_sendto(dgram))
attempt("dgram sendmsg", lambda: dgram_sendmsg(dgram))
attempt("socketpair sendto", lambda: pair_sendto(dgram))

# the jail's own sockets: pathname (absolute and relative) and abstract, stream and datagram
own = os.path.join(work, "own.sock")
srv = socket.socket(socket.AF_UNIX)
srv.bind(own)
srv.listen()
def own_roundtrip(path):
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    conn, _ = srv.accept()
    c.sendall(b"ping")
    got = conn.recv(4)
    conn.close(); c.close()
    return got.decode()
attempt("own", lambda: own_roundtrip(own))
attempt("own relative", lambda: own_roundtrip("own.sock"))
abstract = b"\0boundary-test-own-%d" % os.getpid()
asrv = socket.socket(socket.AF_UNIX)
asrv.bind(abstract)
asrv.listen()
def own_abstract():
    c = socket.socket(socket.AF_UNIX)
    c.connect(abstract)
    c.close()
    return "connected"
attempt("own abstract", own_abstract)
own_d = os.path.join(work, "own.dgram")
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
d.bind(own_d)
attempt("own dgram", lambda: dgram_sendto(own_d) and d.recv(100).decode())
out["env"] = {k: os.environ.get(k) for k in ("TMUX", "DBUS_SESSION_BUS_ADDRESS", "SSH_AUTH_SOCK", "DISPLAY",
                                             "DOCKER_HOST", "XDG_RUNTIME_DIR", "VSCODE_IPC_HOOK_CLI")}
print(json.dumps(out))
"""


class Outside:
    """What the user runs outside the jail: a stream listener and a datagram socket."""

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / "agent.sock"
        self.dgram_path = d / "log.dgram"
        self.stream = socket.socket(socket.AF_UNIX)
        self.stream.bind(str(self.path))
        self.stream.listen()
        self.stream.setblocking(False)
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dgram.bind(str(self.dgram_path))
        self.dgram.setblocking(False)

    def heard(self) -> list[str]:
        out = []
        with contextlib.suppress(BlockingIOError):
            self.stream.accept()[0].close()
            out.append("stream connection")
        with contextlib.suppress(BlockingIOError):
            out.append(f"datagram {self.dgram.recv(100)!r}")
        return out

    def close(self) -> None:
        self.stream.close()
        self.dgram.close()


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Outside]:
    o = Outside(tmp_path / "outside")
    yield o
    o.close()


SOCKET_ENV = {
    "TMUX": "/tmp/tmux-1000/default,1234,0",
    "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
    "SSH_AUTH_SOCK": "/tmp/ssh-x/agent.1",
    "DISPLAY": ":0",
    "DOCKER_HOST": "unix:///run/user/1000/docker.sock",
    "XDG_RUNTIME_DIR": "/run/user/1000",
    "VSCODE_IPC_HOOK_CLI": "/run/user/1000/vscode-ipc.sock",
}


@pytest.mark.parametrize("mode", MODES)
def test_outside_unix_sockets_are_out_of_reach(tmp_path: Path, outside: Outside, mode: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    work = tmp_path / "work"
    work.mkdir()
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--", sys.executable, str(probe), str(outside.path), str(outside.dgram_path),
        str(work), env=SOCKET_ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for name in ("connect", "connect relative", "connect symlink", "dgram sendto", "dgram sendmsg",
                 "socketpair sendto"):  # fmt: skip
        assert out[name] == "error: EACCES", (name, out)
    # a hard link is the same socket: refused too (or the link itself is refused, protected_hardlinks)
    assert out["connect hard link"].startswith("error:"), out
    assert outside.heard() == []
    assert out["own"] == "ok: 'ping'", out
    assert out["own relative"] == "ok: 'ping'", out
    assert out["own abstract"] == "ok: 'connected'", out
    assert out["own dgram"] == "ok: 'escape attempt'", out
    assert out["env"] == dict.fromkeys(SOCKET_ENV), out["env"]
    refused = [rec for rec in r.audit_records() if rec["event"] == "socket"]
    assert any(str(outside.path) in str(rec["host"]) for rec in refused), refused
    assert f"--allow-unix {outside.path}" in r.stderr


@pytest.mark.parametrize("mode", MODES)
def test_allow_unix_opens_exactly_that_socket(tmp_path: Path, outside: Outside, mode: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    work = tmp_path / "work"
    work.mkdir()
    env = {"TMUX": f"{outside.path},1,0", "SSH_AUTH_SOCK": "/elsewhere/agent"}
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--allow-unix", str(outside.path), "--", sys.executable, str(probe),
        str(outside.path), str(outside.dgram_path), str(work), env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["connect"] == "ok: 'connected'", out
    assert out["dgram sendto"] == "error: EACCES", out  # the other one stays closed
    assert out["env"]["TMUX"] == env["TMUX"]  # names the allowed socket: kept
    assert out["env"]["SSH_AUTH_SOCK"] is None


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (scripts/test.sh installs it)")
@pytest.mark.parametrize("mode", MODES)
def test_tmux_server_outside_runs_nothing_for_the_jail(tmp_path: Path, mode: str) -> None:
    sock = tmp_path / "tmux.sock"
    marker = tmp_path / "pwned"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    subprocess.run(["tmux", "-S", str(sock), "new-session", "-d", "sleep 120"], check=True, env=env, timeout=30)
    try:
        r = boundary_run(
            tmp_path, "--jail-type", mode, "--", "tmux", "-S", str(sock), "new-window", "-d", f"touch {marker}",
            env={"TMUX": f"{sock},1,0"},
        )  # fmt: skip
        assert r.returncode != 0, r.stdout
        # had the command reached the server, it would have created the marker by the time tmux returned;
        # ask the server itself (a round trip) so that a late window would be seen too
        windows = subprocess.run(
            ["tmux", "-S", str(sock), "list-windows"], capture_output=True, text=True, env=env, timeout=30, check=True
        )
        assert len(windows.stdout.splitlines()) == 1, windows.stdout
        assert not marker.exists()
    finally:
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], env=env, timeout=30, check=False)


SWAP = """
import os, socket, sys
outside, work, tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
own = os.path.join(work, "own.dgram")
mine = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
mine.bind(own)
x = os.path.join(work, "x")
pid = os.fork()
if pid == 0:  # keeps renaming a symlink over x: now to the jail's own socket, now to the outside one
    for i in range(tries):
        for target, tmp in ((own, x + ".a"), (outside, x + ".b")):
            try:
                os.symlink(target, tmp)
                os.rename(tmp, x)
            except OSError:
                pass
    os._exit(0)
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
c.setblocking(False)
sent = 0
for i in range(tries):
    try:
        c.sendmsg([b"RACE"], [], 0, x)
        sent += 1
    except OSError:
        pass
    if i % 64 == 0:  # keep our own socket's queue from filling
        mine.setblocking(False)
        try:
            while mine.recv(100):
                pass
        except OSError:
            pass
os.waitpid(pid, 0)
print("done", sent)
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_path_swapped_under_sendmsg_reaches_no_outside_socket(tmp_path: Path, outside: Outside, mode: str) -> None:
    """sendmsg to a path whose symlink another process keeps renaming between the jail's own datagram socket and
    an outside one: what boundary checked must be what is sent to (an outside review reached the outside socket
    in nsjail, which handed the call back to the kernel after its check)."""
    probe = tmp_path / "swap.py"
    probe.write_text(SWAP)
    work = tmp_path / "work"
    work.mkdir()
    r = boundary_run(tmp_path, "--jail-type", mode, "--workspace", str(work), "--", "python3", str(probe),
                     str(outside.dgram_path), str(work), "20000", timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("done"), r.stdout
    assert outside.heard() == []
