"""scripts/coder-startup.sh as a Coder workspace would run it: a fresh HOME, no root, no prompt; a second run
changes nothing; then a jailed command runs with the config it wrote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def snapshot(home: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(home):
        for f in files:
            p = Path(dirpath, f)
            st = p.lstat()
            out[str(p.relative_to(home))] = (st.st_size, st.st_mtime_ns)
    return out


def test_startup_script_installs_configures_and_is_idempotent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
        # the test user's pip cache (the suite's own install filled it): the packages still come from PyPI
        "PIP_CACHE_DIR": str(Path(os.environ.get("HOME", "/nonexistent")) / ".cache" / "pip"),
        "BOUNDARY_ALLOWLIST": "domain=api.github.com method=GET;registry.example.test",
        "BOUNDARY_AGENT": "codex", "BOUNDARY_PRESETS": "github",
    }  # fmt: skip

    def setup() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "scripts" / "coder-startup.sh")], env=env, capture_output=True, text=True,
                              timeout=900, stdin=subprocess.DEVNULL, check=False)  # fmt: skip

    first = setup()
    if first.returncode != 0 and "pip" in first.stderr and "Could not" in first.stderr:
        pytest.skip(f"PyPI is not reachable: {first.stderr.strip().splitlines()[-1]}")
    assert first.returncode == 0, first.stderr
    assert "ready: start the agent jailed with:" in first.stderr
    conf = yaml.safe_load((home / ".config" / "boundary" / "config.yaml").read_text())
    assert conf == {"allowlist": ["domain=api.github.com method=GET", "registry.example.test"], "agent": "codex",
                    "presets": ["github"]}  # fmt: skip

    before = snapshot(home)
    second = setup()
    assert second.returncode == 0, second.stderr
    assert "config unchanged" in second.stderr
    assert "installed and current" in second.stderr
    assert snapshot(home) == before  # nothing changed

    ws = tmp_path / "ws"
    ws.mkdir()
    r = subprocess.run(
        [str(home / ".local" / "bin" / "boundary"), "run", "--", "sh", "-c", "echo jailed in $BOUNDARY_JAIL"],
        env={**env, "PATH": f"{home / '.local' / 'bin'}:{env['PATH']}"}, cwd=ws, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("jailed in ")
    assert (home / ".codex").is_dir()  # --agent codex (from the config) made its state directory
