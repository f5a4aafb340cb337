"""Per-run tool config files in both modes: the user's npm, git and pip settings reach the tools inside,
their credentials do not; boundary removes the files after the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support import boundary_env, boundary_run

PROBE = r"""
import json, os, subprocess
def run(*a):
    return subprocess.run(a, capture_output=True, text=True).stdout.strip()
home = os.environ["HOME"]
try:
    npmrc = open(os.path.join(home, ".npmrc")).read()
except OSError as e:
    npmrc = "error %d" % e.errno
print(json.dumps({
    "registry": run("npm", "config", "get", "registry"),
    "token": run("npm", "config", "get", "//npm.example.test/:_authToken"),
    "npmrc": npmrc,
    "userconfig": os.environ.get("NPM_CONFIG_USERCONFIG", ""),
    "git": run("git", "config", "--global", "--list"),
    "pip": open(os.environ["PIP_CONFIG_FILE"]).read(),
}))
"""


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_user_settings_without_credentials(tmp_path: Path, mode: str) -> None:
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".npmrc").write_text("registry=https://npm.example.test/\n//npm.example.test/:_authToken=NPMSECRET\n")
    (home / ".gitconfig").write_text("[user]\n\tname = Someone\n[credential]\n\thelper = store\n")
    (home / ".config" / "pip" / "pip.conf").write_text("[global]\nindex-url = https://u:PIPSECRET@p.example.test/s\n")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    r = boundary_run(tmp_path, "--jail-type", mode, "--", sys.executable, str(probe), env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["registry"] == "https://npm.example.test/"
    assert out["token"] in ("", "undefined"), out
    assert "NPMSECRET" not in out["npmrc"]  # ~/.npmrc itself: hidden (landjail) or the generated one (nsjail)
    assert "user.name=Someone" in out["git"]
    assert "credential" not in out["git"]
    assert "PIPSECRET" not in out["pip"]
    assert "p.example.test" in out["pip"]
    where = Path(out["userconfig"]).parent
    if mode == "nsjail":
        assert where == Path("/tmp/.boundary-tools")  # in the jail's own /tmp: never on the host
    else:
        assert where.parent == Path(boundary_env(tmp_path)["XDG_STATE_HOME"]) / "boundary-run"
        assert not where.exists()  # removed after the run
