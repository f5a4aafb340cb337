"""TLS interception inside jails: the merged CA bundle (system roots + boundary's CA) is what
tools trust without being told: the distro bundle path in nsjail, the CA variables in both."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import CA, Upstream, boundary_run


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_intercepted_https_is_trusted_by_default_tools(tmp_path: Path, ca: CA, tls: Upstream, mode: str) -> None:
    url = f"https://secure.test:{tls.port}"
    script = (
        f"curl -sS --max-time 30 {url}/ok/curl; "
        f"curl -sS --max-time 30 -o /dev/null -w '%{{http_code}}\\n' {url}/no; "
        f"python3 -c \"import urllib.request as u; print(u.urlopen('{url}/ok/python', timeout=30).read().decode())\"; "
        f"node -e \"fetch('{url}/ok/node').then(r => r.text()).then(t => process.stdout.write(t), "
        'e => { console.error(String(e.cause || e)); process.exit(3) })"'
    )
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--allow-private", "--host-map", "secure.test=127.0.0.1",
        "--upstream-ca", str(ca.ca_pem), "--allow", "domain=secure.test path=/ok/*", "--", "sh", "-c", script,
        timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for tool in ("curl", "python", "node"):
        assert f"hello from /ok/{tool}" in r.stdout, (tool, r.stdout, r.stderr)
    assert "403" in r.stdout  # the path rule is enforced inside the tunnel
    state = tmp_path.parent / f"{tmp_path.name}.boundary" / "state"
    assert (state / "boundary-trust" / "ca-bundle.pem").exists()
    key = state / "boundary" / "ca" / "mitmproxy-ca.pem"
    assert key.stat().st_mode & 0o777 == 0o600  # the CA's key: the user's alone
    assert key.parent.stat().st_mode & 0o777 == 0o700
