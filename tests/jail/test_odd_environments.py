"""boundary where the account is odd: a read-only HOME (its state dir and default audit log cannot be made).
The command still runs, the audit records go to stderr after one warning, and nothing prints a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import VISIBLE_ROOT, Upstream


@pytest.fixture
def ro_home(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() == 0:  # root of a user namespace (`unshare -r`): file modes do not bind it
        pytest.skip("a read-only HOME cannot be made by chmod for root in a user namespace (unshare -r)")
    home = tmp_path / "ro-home"
    home.mkdir()
    home.chmod(0o555)
    yield home
    home.chmod(0o755)


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env["HOME"] = str(home)
    root = str(VISIBLE_ROOT or home.parent)
    return subprocess.run(
        [sys.executable, "-m", "jail", "run", "--rw", root, *args], env=env, cwd=home, capture_output=True,
        text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_a_read_only_home_still_runs_with_one_warning(ro_home: Path, mode: str) -> None:
    r = _run(ro_home, "--jail-type", mode, "--allow", "domain=example.test", "--", "echo", "ran")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    assert "Traceback" not in r.stderr
    warnings = [line for line in r.stderr.splitlines() if "audit" in line and "warning" in line.lower()]
    assert len(warnings) == 1, r.stderr
    assert "stderr" in warnings[0]


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_interception_without_a_state_dir_is_one_line(ro_home: Path, mode: str) -> None:
    r = _run(ro_home, "--jail-type", mode, "--allow", "domain=example.test method=GET", "--", "echo", "ran")
    assert r.returncode == 125, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines == [lines[-1]], r.stderr
    assert lines[-1].startswith("boundary: failed to prepare the CA bundle"), r.stderr
    assert "XDG_STATE_HOME" in lines[-1]


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_a_missing_rw_directory_is_made_and_a_missing_ro_path_is_named(tmp_path: Path, mode: str) -> None:
    from tests.support import boundary_run

    state = tmp_path / "agent-state"  # like --rw ~/.codex before codex first ran
    r = boundary_run(tmp_path, "--jail-type", mode, "--rw", str(state), "--ro", str(tmp_path / "nothing-here"),
                     "--", "sh", "-c", f"echo saved > {state}/file")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (state / "file").read_text() == "saved\n"
    assert f"--ro {tmp_path / 'nothing-here'} does not exist: it grants nothing" in r.stderr


def test_a_missing_workspace_is_one_line(tmp_path: Path) -> None:
    from tests.support import boundary_run

    r = boundary_run(tmp_path, "--workspace", str(tmp_path / "missing"), "--", "true")
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == [f"boundary: --workspace {tmp_path / 'missing'} does not exist (the "
                                              "command runs there; create it first)"]  # fmt: skip


def _in_empty_netns(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a new user + network namespace (no network at all; nothing can leave it)."""
    from tests.support import boundary_env

    return subprocess.run(["unshare", "-rn", "sh", "-c", script], env=boundary_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def test_landjail_where_loopback_is_down_says_so(tmp_path: Path) -> None:
    from tests.support import boundary_cmd

    argv = " ".join(boundary_cmd(tmp_path, "--jail-type", "landjail", "--", "true"))
    r = _in_empty_netns(tmp_path, argv)
    assert r.returncode == 125, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("boundary: failed to reach the proxy on 127.0.0.1: Network is unreachable"), r.stderr
    assert "ip link set lo up" in lines[0]


def test_an_upstream_failure_is_not_called_a_denial(tmp_path: Path) -> None:
    from tests.support import boundary_cmd

    argv = " ".join(boundary_cmd(tmp_path, "--jail-type", "landjail", "--allow", "nowhere.test", "--",
                                 "curl", "-sS", "https://nowhere.test/"))  # fmt: skip
    r = _in_empty_netns(tmp_path, f"ip link set lo up && {argv}")
    assert r.returncode == 56, r.stderr  # curl: the CONNECT failed (502)
    assert "CONNECT nowhere.test:443 is allowed, but the upstream failed: cannot resolve nowhere.test" in r.stderr
    assert "to allow" not in r.stderr
    assert "response 502" in r.stderr


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_denials_wait_for_the_end_while_the_command_has_the_terminal(tmp_path: Path, mode: str) -> None:
    """A full-screen program (an agent's TUI) is not scribbled over: on a terminal, denial lines come after the
    command's own output, at exit."""
    from tests.support import boundary_cmd, pty_run

    script = "curl -sS --max-time 20 http://denied.test/ >/dev/null 2>&1; echo command-done"
    status, out = pty_run(tmp_path, boundary_cmd(tmp_path, "--jail-type", mode, "--", "sh", "-c", script), [])
    assert status == 0, out
    assert "denied" in out, out
    assert out.index("command-done") < out.index("boundary: denied"), out


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_the_command_starts_in_its_workspace(tmp_path: Path, mode: str) -> None:
    from tests.support import boundary_run

    ws = tmp_path / "project"
    ws.mkdir()
    r = boundary_run(tmp_path, "--jail-type", mode, "--workspace", str(ws), "--", "pwd", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(ws)
    inside = boundary_run(tmp_path, "--jail-type", mode, "--workspace", str(tmp_path), "--", "pwd", cwd=ws)
    assert inside.stdout.strip() == str(ws)  # started inside it: stays where it was


KEEP_ALIVE = (
    "import socket, sys\n"
    "s = socket.create_connection((socket.gethostbyname('plain.test'), int(sys.argv[1])), timeout=30)\n"
    "s.sendall(b'GET /sse-hold HTTP/1.1\\r\\nHost: plain.test\\r\\n\\r\\n')\n"
    "data = b''\n"
    "while b'data: one' not in data:\n"
    "    data += s.recv(4096)\n"
    "print('answered')\n"  # and exits while the server still holds the stream open
)


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_a_connection_still_open_at_the_end_is_audited(tmp_path: Path, mode: str, plain: Upstream) -> None:
    from tests.support import boundary_run

    port = str(plain.port)
    plain.sse_gate.clear()
    try:
        rules = ("--allow-private", "--host-map", "plain.test=127.0.0.1", "--allow", f"domain=plain.test port={port}")
        r = boundary_run(tmp_path, "--jail-type", mode, "--no-shim" if mode == "landjail" else "--shim", *rules,
                         "--", sys.executable, "-c", KEEP_ALIVE, port)  # fmt: skip
    finally:
        plain.sse_gate.set()  # the server may finish the stream
    assert r.returncode == 0, r.stderr
    assert r.stdout == "answered\n"
    # plain HTTP: the request, audited as one (mitmproxy is not involved)
    recs = [x for x in r.audit_records() if x["event"] == "request" and x["host"] == "plain.test"]
    assert len(recs) == 1, r.audit_records()
    assert recs[0]["decision"] == "allow"
    assert int(str(recs[0]["bytes_down"])) > 0
