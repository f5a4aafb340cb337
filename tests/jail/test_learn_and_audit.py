"""--learn builds a policy in one run, and `boundary audit --last` shows the run for people (both modes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import CA, Upstream, audit_path, boundary_env, boundary_run


def audit_last(tmp: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "jail", "audit", "--last", "--audit-log", str(audit_path(tmp))],
        capture_output=True, text=True, env=boundary_env(tmp), timeout=60, check=True, cwd=tmp,
    )  # fmt: skip
    return r.stdout


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_learn_allows_records_and_suggests(tmp_path: Path, ca: CA, tls: Upstream, mode: str) -> None:
    script = "; ".join(
        f"curl -sS --max-time 30 --cacert $CA https://{h}:$PORT/{h}; echo" for h in ("secure.test", "other.test")
    )
    args = ("--jail-type", mode, "--allow-private", "--host-map", "secure.test=127.0.0.1", "--host-map",
            "other.test=127.0.0.1", "--allow", f"domain=secure.test port={tls.port}")  # fmt: skip
    env = {"CA": str(ca.ca_pem), "PORT": str(tls.port)}
    strict = boundary_run(tmp_path, *args, "--", "sh", "-c", script, env=env)
    assert "hello from /other.test" not in strict.stdout
    text = audit_last(tmp_path)
    assert "denied:" in text
    assert "to allow: --allow domain=other.test" in text

    r = boundary_run(tmp_path, *args, "--learn", "--", "sh", "-c", script, env=env)
    assert r.returncode == 0, r.stderr
    assert "LEARN MODE" in r.stderr
    assert "hello from /secure.test" in r.stdout
    assert "hello from /other.test" in r.stdout  # allowed, and recorded
    written = Path(r.stderr.split("the allowlist a strict run would need is in ", 1)[1].split()[0])
    assert yaml.safe_load(written.read_text())["allowlist"] == [f"domain=secure.test port={tls.port}",
                                                                  "domain=other.test"]  # fmt: skip
    text = audit_last(tmp_path)
    assert "would be denied without --learn:" in text
    assert "other.test" in text.split("would be denied without --learn:", 1)[1]
    # the suggested policy, used strictly, lets the same run through
    again = boundary_run(tmp_path, *args[:-2], "--config", str(written), "--", "sh", "-c", script, env=env)
    assert "hello from /other.test" in again.stdout, again.stderr
