"""Nothing the jail started outlives boundary, in both modes, whatever kills boundary: a daemon
(double fork + setsid, re-parented away from the command) is running when boundary is SIGKILLed,
and is gone promptly after (landjail: its keeper kills the tree on its parent-death signal;
nsjail: the pid namespace ends with its pid 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import READY_TIMEOUT, boundary_cmd, boundary_env, processes_with, wait_for

PROBE = r"""
import os, sys, time
token, pidfile = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # the daemon: no parent in the command's tree, its own session
        os.execv(sys.executable, [sys.executable, "-c", "import os, time; open(%r, 'w').write(str(os.getpid()))\n"
                 "while True: time.sleep(1)" % pidfile, token])
    os._exit(0)
with open(pidfile + ".left", "w") as f:  # what boundary made for this run and must remove, whatever kills it
    made = (os.environ.get("TMPDIR", ""), os.path.dirname(os.environ.get("GIT_CONFIG_GLOBAL", "")))
    f.write("\n".join(p for p in made if p.startswith("/tmp/boundary-") or "boundary-run" in p))
while not os.path.exists(pidfile) or not open(pidfile).read():
    time.sleep(0.01)
LAST_LINE
"""
LAST_LINE = 'os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", token])'
PROBE = PROBE.replace("LAST_LINE", LAST_LINE)


@pytest.mark.parametrize("target", ["boundary", "its process group"])
@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_sigkill_of_boundary_leaves_nothing(tmp_path: Path, mode: str, target: str) -> None:
    token = f"boundary-residue-{uuid.uuid4().hex}"
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    pidfile = tmp_path / "daemon.pid"
    cmd = boundary_cmd(tmp_path, "--jail-type", mode, "--", sys.executable, str(probe), token, str(pidfile))
    proc = subprocess.Popen(cmd, env=boundary_env(tmp_path), stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # the daemon and the command's own sleep both run
        wait_for(lambda: pidfile.exists() and pidfile.read_text() and len(processes_with(token)) >= 2)
        # `kill -9 -PGID` (a terminal's way) reaches boundary and the command, not landjail's keeper
        os.kill(proc.pid if target == "boundary" else -proc.pid, signal.SIGKILL)
        proc.wait(READY_TIMEOUT)
        wait_for(lambda: not processes_with(token), timeout=5)
        left = [Path(p) for p in Path(f"{pidfile}.left").read_text().split()]
        assert left or mode == "nsjail", "the probe saw no per-run directory"  # nsjail's are in its own /tmp
        wait_for(lambda: not any(p.exists() for p in left), timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_with(token):
            os.kill(pid, signal.SIGKILL)


def test_landjail_command_exit_leaves_nothing(tmp_path: Path) -> None:
    """The ordinary way out: the command exits while its daemon runs; boundary exits, the daemon is gone."""
    token = f"boundary-residue-{uuid.uuid4().hex}"
    script = tmp_path / "probe.py"
    script.write_text(PROBE.replace(LAST_LINE, "sys.exit(3)"))
    pidfile = tmp_path / "daemon.pid"
    cmd = boundary_cmd(tmp_path, "--jail-type", "landjail", "--", sys.executable, str(script), token, str(pidfile))
    r = subprocess.run(cmd, env=boundary_env(tmp_path), stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert r.returncode == 3
    assert processes_with(token) == []


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_the_command_cannot_signal_boundary(tmp_path: Path, mode: str) -> None:
    """The command shares boundary's process group (the terminal's): kill(0, SIGKILL) must end the command's
    group members only. boundary survives to report the status (137), rather than dying itself (-9)."""
    script = "import os, signal, subprocess\nsubprocess.Popen(['sleep', '60'])\nos.kill(0, signal.SIGKILL)\n"
    cmd = boundary_cmd(tmp_path, "--jail-type", mode, "--", sys.executable, "-c", script)
    r = subprocess.run(cmd, env=boundary_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=120, check=False)  # fmt: skip
    assert r.returncode == 137, (r.returncode, r.stderr)
