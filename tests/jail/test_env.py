"""--env-deny / --env-allow in both modes: the command's environment as asked, boundary's own settings kept."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support import boundary_run

DUMP = "import json, os; print(json.dumps(dict(os.environ)))"


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_env_deny_and_allow(tmp_path: Path, mode: str) -> None:
    secrets = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_REGION": "eu-west-1", "OPENAI_API_KEY": "sk-test"}
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--env-deny", "AWS_*", "--env-allow", "AWS_REGION", "--", sys.executable,
        "-c", DUMP, env=secrets,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["OPENAI_API_KEY"] == "sk-test"  # everything else passes through (agents need their keys)
    assert env["NPM_CONFIG_PREFIX"].endswith("/boundary/npm-global")  # boundary's own settings are added after


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_the_commands_status_2_passes_through(tmp_path: Path, mode: str) -> None:
    """2 is also typer's usage-error status, which `run` maps to 125: the command's own 2 must stay 2."""
    r = boundary_run(tmp_path, "--jail-type", mode, "--", "sh", "-c", "exit 2")
    assert r.returncode == 2, r.stderr
