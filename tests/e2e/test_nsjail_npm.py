"""nsjail with real npm against the real registry: the allowlisted registry works, anything else is
denied with a clear message."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import boundary_run


def test_npm_view_through_nsjail(tmp_path: Path, registry_host: str) -> None:
    r = boundary_run(
        tmp_path, "--jail-type", "nsjail", "--allow", registry_host, "--", "npm", "view", "is-number", "version",
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", r.stdout), r.stdout
    allowed = [x for x in r.audit_records() if x["decision"] == "allow" and x["host"] == registry_host]
    assert allowed


def test_a_host_off_the_list_gets_a_clear_denial(tmp_path: Path, registry_host: str) -> None:
    r = boundary_run(
        tmp_path, "--jail-type", "nsjail", "--allow", registry_host,
        "--", "sh", "-c", "curl -sS --max-time 30 https://example.invalid/; echo curl=$?",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.search(r"curl=(35|56)", r.stdout)
    want = "boundary: denied tls example.invalid:443 (no allow rule matches); to allow: --allow domain=example.invalid"
    assert want in r.stderr


def test_npm_install_global_inside_nsjail(tmp_path: Path, registry_host: str) -> None:
    """/usr is read-only in the jail: the global prefix moves to boundary's own, its bin onto PATH."""
    home = tmp_path / "home"
    home.mkdir()
    r = boundary_run(
        tmp_path, "--jail-type", "nsjail", "--allow", registry_host,
        "--", "sh", "-c", "npm install -g cowsay && cowsay nsjail",
        env={"HOME": str(home)}, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "< nsjail >" in r.stdout
    # boundary's own prefix, on PATH only inside jails (never the ~/.npm-global many users have on PATH)
    assert (home / ".local" / "share" / "boundary" / "npm-global" / "bin" / "cowsay").exists()
    assert not (home / ".npm-global").exists()
