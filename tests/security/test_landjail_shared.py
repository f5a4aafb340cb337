"""What landjail shares with the user's other programs, since it has no namespaces: the host's /tmp
(not writable: no fake tmux server, no change to the user's own files there; the command has a TMPDIR
of its own), loopback (only boundary's own proxy addresses, not another
server that listens on the proxy's port), and the user's other processes (no renicing or changing
their limits). Also: names the jail chose are printed without their control characters."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import boundary_env, boundary_run

PLANT = r"""
import errno, json, os, socket, sys
base = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def bind(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen()
attempt("socket in /tmp", lambda: bind(os.path.join(base, "default")))
attempt("symlink in /tmp", lambda: os.symlink(os.environ["TMPDIR"], os.path.join(base, "link")))
attempt("file in /tmp", lambda: open(os.path.join(base, "file"), "w").close())
own = os.path.join(os.environ["TMPDIR"], "own.sock")
attempt("socket in TMPDIR", lambda: bind(own))
attempt("link socket into /tmp", lambda: os.link(own, os.path.join(base, "hard")))
attempt("rename socket into /tmp", lambda: os.rename(own, os.path.join(base, "moved")))
out["TMPDIR"] = os.environ["TMPDIR"]
print(json.dumps(out))
"""


def test_no_socket_or_symlink_planted_in_the_shared_tmp(tmp_path: Path) -> None:
    # a directory of the user's in the shared /tmp, as /tmp/tmux-UID is (its socket not there yet)
    base = tempfile.mkdtemp(prefix="boundary-plant-", dir="/tmp")
    probe = tmp_path / "plant.py"
    probe.write_text(PLANT)
    try:
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, str(probe), base)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        # the host's /tmp holds the user's own files and tools' caches: not the jail's to write at all
        for name in ("file in /tmp", "socket in /tmp", "symlink in /tmp", "link socket into /tmp",
                     "rename socket into /tmp"):  # fmt: skip
            assert out[name] == "EACCES", (name, out)
        assert out["socket in TMPDIR"] == "ok", out
        assert not Path(out["TMPDIR"]).exists()  # removed at exit
    finally:
        subprocess.run(["rm", "-rf", base], check=False)


RAW_CONNECT = r"""
import ctypes, errno, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket()
port = int(sys.argv[2])
addr = bytes([2, 0]) + port.to_bytes(2, "big") + socket.inet_aton(sys.argv[1]) + bytes(8)
r = libc.syscall(42, s.fileno(), ctypes.c_char_p(addr), 16)  # connect(2) itself: no libc wrapper, no shim
print("connected" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?"))
"""


def test_only_the_proxys_own_addresses_on_its_port(tmp_path: Path) -> None:
    canary = socket.create_server(("127.0.0.2", 0))
    canary.setblocking(False)
    port = canary.getsockname()[1]
    probe = tmp_path / "raw.py"
    probe.write_text(RAW_CONNECT)
    try:
        r = boundary_run(
            tmp_path, "--jail-type", "landjail", "--", sys.executable, str(probe), "127.0.0.2", str(port),
            env={"BOUNDARY_PROXY_PORT": str(port)},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        # boundary connected it to its own proxy instead, which refuses the destination
        assert r.stdout.strip() == "connected", r.stdout
        assert f"denied tcp 127.0.0.2:{port}" in r.stderr, r.stderr
        try:
            canary.accept()
            heard = True
        except BlockingIOError:
            heard = False
        assert not heard
    finally:
        canary.close()


OTHERS = r"""
import ctypes, errno, json, os, resource, sys
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
out = {}
def call(name, *args):
    r = getattr(libc, name)(*args)
    out[name] = "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
call("setpriority", 0, pid, 19)
out["prlimit"] = "ok"
try:
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (16, 16))
except OSError as e:
    out["prlimit"] = errno.errorcode.get(e.errno, "?")
out["own nice"] = os.nice(1) >= 0
print(json.dumps(out))
"""


def test_other_processes_of_the_user_cannot_be_reniced_or_limited(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "120"])
    probe = tmp_path / "others.py"
    probe.write_text(OTHERS)
    try:
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, str(probe), str(victim.pid))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["setpriority"] == "EPERM", out
        assert out["prlimit"] == "EPERM", out
        assert out["own nice"] is True  # its own priority is its own business
        status = Path(f"/proc/{victim.pid}/limits").read_text()
        assert "Max open files            16 " not in status
    finally:
        victim.kill()
        victim.wait()


def test_refusal_lines_carry_no_control_characters(tmp_path: Path) -> None:
    name = tmp_path / "evil\n\x1b[32mboundary: all good\x07.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(name))
    listener.listen()
    try:
        r = boundary_run(
            tmp_path, "--jail-type", "landjail", "--", sys.executable, "-c",
            "import socket, sys\ntry:\n    socket.socket(socket.AF_UNIX).connect(sys.argv[1])\n"
            "except OSError:\n    pass",
            str(name),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "denied connect unix socket" in r.stderr, r.stderr
        assert "\x1b" not in r.stderr
        assert "\x07" not in r.stderr
        assert "\nboundary: all good" not in r.stderr
    finally:
        listener.close()


CHMOD = r"""
import errno, json, os, sys
out = {}
for name, path, mode in (("outside 0666", sys.argv[1], 0o666), ("outside 0777 dir", sys.argv[2], 0o777),
                         ("outside setuid", sys.argv[1], 0o4755), ("own 0755", sys.argv[3], 0o755),
                         ("own 0600", sys.argv[3], 0o600)):
    try:
        os.chmod(path, mode)
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, "?")
print(json.dumps(out))
"""


def test_files_outside_cannot_be_opened_to_other_users(tmp_path: Path) -> None:
    """Landlock does not govern chmod: a file the jail may only read (the user's ~/.bashrc, ~ itself) must not
    become writable for every local user."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "rc").write_text("# the user's\n")
    (outside / "rc").chmod(0o644)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "tool").write_text("#!/bin/sh\n")
    probe = ws / "chmod.py"
    probe.write_text(CHMOD)
    r = subprocess.run(
        [sys.executable, "-m", "jail", "run", "--jail-type", "landjail", "--workspace", str(ws), "--",
         sys.executable, str(probe), str(outside / "rc"), str(outside), str(ws / "tool")],
        cwd=ws, env=boundary_env(tmp_path), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["outside 0666"] == "EPERM", out
    assert out["outside 0777 dir"] == "EPERM", out
    assert out["outside setuid"] == "EPERM", out
    assert out["own 0755"] == "ok", out
    assert out["own 0600"] == "ok", out
    assert (outside / "rc").stat().st_mode & 0o777 == 0o644


def test_other_programs_shared_memory_is_out_of_reach(tmp_path: Path) -> None:
    """/dev/shm holds other programs' shared memory (and whatever the user left there): not the jail's to write."""
    victim = Path(tempfile.mkstemp(prefix="boundary-victim-", dir="/dev/shm")[1])
    try:
        victim.write_text("#!/bin/sh\n")
        r = boundary_run(
            tmp_path, "--jail-type", "landjail", "--", "sh", "-c",
            f"(echo 'echo PWNED' >> {victim}) && echo appended; "
            "(true > /dev/shm/boundary-new-$$) && echo created; true",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "appended" not in r.stdout
        assert "created" not in r.stdout
        assert victim.read_text() == "#!/bin/sh\n"
    finally:
        victim.unlink()


SYSV = r"""
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
out = []
for name, args in (("shmget", (int(sys.argv[1]), 0, 0o600)), ("msgget", (int(sys.argv[1]) + 1, 0o600)),
                   ("semget", (int(sys.argv[1]) + 2, 0, 0o600))):
    r = getattr(libc, name)(*args)
    out.append(f"{name} " + ("ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]))
print(" ".join(out))
"""


def test_no_sysv_ipc_with_the_users_other_processes(tmp_path: Path) -> None:
    """No IPC namespace in landjail: SysV shared memory and message queues are the user's, machine-wide (an
    outside review read and wrote a segment of another process of the user)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x42420000 + os.getpid() % 0xFFFF
    shm = libc.shmget(key, 4096, 0o1600)  # IPC_CREAT | 0600
    msq = libc.msgget(key + 1, 0o1600)
    try:
        assert shm >= 0
        assert msq >= 0
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, "-c", SYSV, str(key))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "shmget EPERM msgget EPERM semget EPERM", r.stdout
    finally:
        libc.shmctl(shm, 0, None)  # IPC_RMID
        libc.msgctl(msq, 0, None)


AFFINITY = r"""
import os, sys
pid = int(sys.argv[1])
for name, call in (("affinity", lambda: os.sched_setaffinity(pid, {0})),
                   ("scheduler", lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0)))):
    try:
        call()
        print(name, "changed")
    except OSError as e:
        print(name, e.errno)
"""


def test_other_processes_scheduling_cannot_be_changed(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        before = os.sched_getaffinity(victim.pid)
        r = boundary_run(tmp_path, "--jail-type", "landjail", "--", sys.executable, "-c", AFFINITY, str(victim.pid))
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["affinity", "1", "scheduler", "1"], r.stdout  # EPERM
        assert os.sched_getaffinity(victim.pid) == before
        assert os.sched_getscheduler(victim.pid) == os.SCHED_OTHER
    finally:
        victim.kill()
        victim.wait()
