"""The audit log cannot be rewritten from inside: a log path the jail could write (the workspace, a
--rw path, landjail's /tmp) is refused before anything runs; where it is allowed, the jail's attempt
to truncate it and forge a record changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support import boundary_env, boundary_run, own_address

TAMPER = (
    'import sys\ntry:\n    open(sys.argv[1], \'w\').write(\'{"decision": "allow", "forged": true}\\n\')\n'
    "    print('tampered')\nexcept OSError as e:\n    print('refused', e.errno)\n"
)


def run(tmp: Path, mode: str, audit: Path, *extra: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "jail", "run", "--jail-type", mode, "--audit-log", str(audit), *extra, "--",
           sys.executable, "-c", TAMPER, str(audit)]  # fmt: skip
    return subprocess.run(
        cmd, cwd=cwd or tmp, env=boundary_env(tmp), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
@pytest.mark.parametrize("where", ["workspace", "rw"])
def test_an_audit_log_the_jail_can_write_is_refused(tmp_path: Path, mode: str, where: str) -> None:
    ws = tmp_path / "ws"
    extra = tmp_path / "extra"
    ws.mkdir()
    extra.mkdir()
    audit = (ws if where == "workspace" else extra) / "audit.jsonl"
    r = run(tmp_path, mode, audit, "--rw", str(extra), cwd=ws)
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "failed to open the audit log" in r.stderr, r.stderr
    assert "writable from inside" in r.stderr, r.stderr
    assert not audit.exists() or "forged" not in audit.read_text()


def test_landjail_refuses_an_audit_log_in_tmp(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="boundary-audit-") as d:
        audit = Path(d) / "audit.jsonl"
        r = run(tmp_path, "landjail", audit)
        assert r.returncode == 125, r.stderr
        assert "writable from inside" in r.stderr
        assert not audit.exists()


def test_nsjail_tmp_log_stays_out_of_reach(tmp_path: Path) -> None:
    """nsjail's /tmp is its own: the host's /tmp holds a log the jail cannot touch."""
    with tempfile.TemporaryDirectory(prefix="boundary-audit-") as d:
        audit = Path(d) / "audit.jsonl"
        r = run(tmp_path, "nsjail", audit, "--allow", "example.test")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("refused"), r.stdout
        lines = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
        assert not any(rec.get("forged") for rec in lines), lines


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_a_denied_path_prints_no_control_sequence(tmp_path: Path, mode: str) -> None:
    """The path in a denial line is percent-decoded: an escape sequence in it (a window title, a clipboard
    write, a screen clear) must reach the user's terminal escaped (an outside review found it raw)."""
    url = f"http://{own_address() or '127.0.0.1'}:9/%1b]0;PWNED%07%1b[2J"  # the proxy refuses it, on this machine
    r = boundary_run(tmp_path, "--jail-type", mode, "--", "curl", "-g", "-sS", "-o", "/dev/null", "--max-time", "20",
                     url)  # fmt: skip
    assert "\x1b" not in r.stderr, repr(r.stderr)
    assert "\x07" not in r.stderr
    assert "\\x1b]0;PWNED\\x07" in r.stderr, r.stderr
