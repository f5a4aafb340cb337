"""boundary inside boundary, every pairing: an agent running in a jail may sandbox its own tools with boundary.
landjail inside either mode works (its proxy's upstream is the outer proxy: fake addresses lead there);
nsjail inside either fails in one line (the outer jail refuses new namespaces) and auto picks landjail."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CA, Upstream, boundary_cmd, boundary_env, boundary_run

PKG = Path(__file__).resolve().parent.parent.parent  # the directory holding jail/ and proxy/


def inner(mode: str, *cmd: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "jail", "run", "-q", "--jail-type", mode, *extra, "--", *cmd]


@pytest.mark.parametrize("outer", ["nsjail", "landjail"])
def test_landjail_inside_works_and_reaches_an_allowed_host(tmp_path: Path, ca: CA, tls: Upstream, outer: str) -> None:
    rule = f"domain=secure.test port={tls.port}"
    fetch = ("curl", "-sS", "--max-time", "30", "--cacert", str(ca.ca_pem), f"https://secure.test:{tls.port}/nested")
    r = boundary_run(tmp_path, "--jail-type", outer, "--allow-private", "--host-map", "secure.test=127.0.0.1",
                     "--allow", rule, "--", *inner("landjail", *fetch, extra=("--allow", rule)),
                     env={"PYTHONPATH": str(PKG)}, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from /nested\n", (r.stdout, r.stderr)


@pytest.mark.parametrize("outer", ["nsjail", "landjail"])
def test_nsjail_inside_fails_in_one_line_and_auto_uses_landjail(tmp_path: Path, outer: str) -> None:
    script = (
        f"{shlex.join(inner('nsjail', 'true'))}; echo status=$?; "
        f"{shlex.join(inner('auto', 'sh', '-c', 'echo inner=$BOUNDARY_JAIL'))}"
    )
    r = boundary_run(tmp_path, "--jail-type", outer, "--", "sh", "-c", script, env={"PYTHONPATH": str(PKG)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["status=125", "inner=landjail"], (r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.startswith("boundary: failed")]
    assert len(lines) == 1, r.stderr
    assert f"already runs inside a boundary jail ({outer})" in lines[0], lines[0]


@pytest.fixture
def install_in_tmp() -> Iterator[Path]:
    """boundary's code in a directory under /tmp (outside the test run's own temp root, which jails are shown)."""
    d = Path(tempfile.mkdtemp(prefix="boundary-in-tmp-", dir="/tmp"))
    for part in ("jail", "proxy"):
        shutil.copytree(PKG / part, d / part, ignore=shutil.ignore_patterns("__pycache__"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_nsjail_shows_a_boundary_installed_under_tmp(tmp_path: Path, install_in_tmp: Path) -> None:
    argv = boundary_cmd(tmp_path, "--jail-type", "nsjail", "--", *inner("landjail", "sh", "-c", "echo inner-ran"))
    env = {**boundary_env(tmp_path), "PYTHONPATH": str(install_in_tmp)}
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
                       stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "inner-ran\n", r.stderr
    assert os.path.isdir(install_in_tmp / "jail")
