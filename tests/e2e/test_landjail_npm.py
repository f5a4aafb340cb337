"""The seed scenario for real (shared/seeds 004, 000): npx through landjail, also under a stripped
environment, and `npm install -g` with a read-only system prefix. HOME is a fresh directory, so
nothing is served from an earlier run's cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import RunResult, boundary_run


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def landjail(tmp_path: Path, home: Path, registry_host: str, *cmd: str, shim: bool = True) -> RunResult:
    return boundary_run(
        tmp_path, "--jail-type", "landjail", *(() if shim else ("--no-shim",)), "--allow", registry_host, "--", *cmd,
        env={"HOME": str(home)}, timeout=600,
    )  # fmt: skip


def test_npx_runs_a_package_from_the_registry(tmp_path: Path, home: Path, registry_host: str) -> None:
    r = landjail(tmp_path, home, registry_host, "npx", "-y", "cowsay", "hi")
    assert r.returncode == 0, r.stderr
    assert "< hi >" in r.stdout


@pytest.mark.parametrize("shim", [True, False], ids=["shim", "no shim"])
def test_npx_under_a_stripped_environment(tmp_path: Path, home: Path, registry_host: str, shim: bool) -> None:
    """coder/boundary#189: a parent cleans the environment before launching npx. The shim puts the proxy
    settings back; without it npm, knowing no proxy, resolves and connects itself: boundary routes both."""
    r = landjail(tmp_path, home, registry_host, "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={home}",
                 "npx", "-y", "cowsay", "stripped", shim=shim)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "< stripped >" in r.stdout


def test_npm_install_global_with_a_read_only_system_prefix(tmp_path: Path, home: Path, registry_host: str) -> None:
    r = landjail(tmp_path, home, registry_host, "sh", "-c", "npm install -g cowsay && cowsay global")
    assert r.returncode == 0, r.stderr
    assert "< global >" in r.stdout
    # boundary's own prefix, on PATH only inside jails (never the ~/.npm-global many users have on PATH)
    assert (home / ".local" / "share" / "boundary" / "npm-global" / "bin" / "cowsay").exists()
    assert not (home / ".npm-global").exists()
