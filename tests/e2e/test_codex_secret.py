"""Codex (installed from the real npm registry) completes a streamed turn in both modes with
``--secret OPENAI_API_KEY``: a local TLS mock of the Responses API receives the real key, while inside the jail
the variable holds the placeholder. The mock is reached by name through --host-map; codex trusts boundary's CA
through SSL_CERT_FILE, which both modes set."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import ssl
import string
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CA, Upstream, audit_path, boundary_env, boundary_run, serve_loopback, server_tls

MODES = ("nsjail", "landjail")
EVENTS = [
    {"type": "response.created", "response": {"id": "resp_1"}},
    {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "content": [{"type": "output_text", "text": "hello from the mock"}],
        },
    },
    {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "usage": {
                "input_tokens": 1,
                "input_tokens_details": None,
                "output_tokens": 1,
                "output_tokens_details": None,
                "total_tokens": 2,
            },
        },
    },
]


class ResponsesMock:
    """POST /v1/responses answers one streamed assistant message (server-sent events); records Authorization."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.auth: list[str] = []
        self.tool_command: str | None = None  # set: the first answer asks codex to run this shell command
        self.tool_outputs: list[str] = []
        self.sock = serve_loopback(self._serve)
        self.port: int = self.sock.getsockname()[1]

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(60)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as c, c.makefile("rb") as f:
                while line := f.readline(65536):
                    headers = {}
                    while (h := f.readline(65536)) not in (b"\r\n", b""):
                        k, _, v = h.decode("latin-1").partition(":")
                        headers[k.strip().lower()] = v.strip()
                    body = b""
                    if "content-length" in headers:
                        body = f.read(int(headers["content-length"]))
                    elif headers.get("transfer-encoding", "").lower() == "chunked":
                        while n := int(f.readline(100).split(b";")[0], 16):
                            body += f.read(n)
                            f.readline(10)
                        f.readline(10)
                    if b"/responses" not in line:
                        c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        continue
                    self.auth.append(headers.get("authorization", ""))
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                    for e in self._events(body):
                        c.sendall(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode())
                    return
        except (OSError, ValueError, ssl.SSLError):
            return

    def _events(self, body: bytes) -> list[dict[str, object]]:
        """A message; or, in tool mode and before codex has run the tool, a call of codex's code-mode ``exec`` tool
        that runs the shell command (codex 0.17x offers its tools through that one JavaScript tool)."""
        try:
            items = json.loads(body).get("input", [])
        except ValueError:
            items = []
        done = [i for i in items if isinstance(i, dict) and i.get("type") == "custom_tool_call_output"]
        self.tool_outputs += [json.dumps(i.get("output")) for i in done]
        if self.tool_command is None or done:
            return EVENTS
        js = f"const r = await tools.exec_command({{cmd: {json.dumps(self.tool_command)}}}); text(JSON.stringify(r));"
        call = {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_1", "name": "exec", "input": js,
                "status": "completed"}  # fmt: skip
        return [EVENTS[0], {"type": "response.output_item.done", "output_index": 0, "item": call}, EVENTS[2]]


def write_provider(home: Path, port: int) -> None:
    """codex's config: the mock as its model provider (streamed HTTPS, no WebSocket)."""
    (home / "config.toml").write_text(
        'model_provider = "mock"\n[model_providers.mock]\nname = "mock"\n'
        f'base_url = "https://secure.test:{port}/v1"\nenv_key = "OPENAI_API_KEY"\nwire_api = "responses"\n'
        "supports_websockets = false\n"
    )


@pytest.fixture(scope="module")
def codex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed (scripts/test.sh as root installs it)")
    prefix = tmp_path_factory.mktemp("codex")
    r = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "@openai/codex"],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": ssl.get_default_verify_paths().openssl_cafile},  # system roots
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"codex could not be installed from the npm registry: {r.stderr.strip().splitlines()[-1:]}")
    return prefix / "node_modules" / ".bin" / "codex"


@pytest.fixture(scope="module")
def responses(ca: CA) -> Iterator[ResponsesMock]:
    m = ResponsesMock(server_tls(ca))
    yield m
    m.sock.close()


@pytest.mark.parametrize("mode", MODES)
def test_codex_gets_a_streamed_turn_with_the_key_swapped_in(
    tmp_path: Path, ca: CA, codex: Path, responses: ResponsesMock, mode: str
) -> None:
    key = "sk-test-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))
    base = f"https://secure.test:{responses.port}/v1"
    provider = {
        "model_provider": "mock", "model_providers.mock.name": "mock", "model_providers.mock.base_url": base,
        "model_providers.mock.env_key": "OPENAI_API_KEY", "model_providers.mock.wire_api": "responses",
        "model_providers.mock.supports_websockets": "false",
    }  # fmt: skip
    overrides = [a for k, v in provider.items() for a in ("-c", f"{k}={v}")]
    (tmp_path / "codex-home").mkdir()
    script = 'echo "key inside: $OPENAI_API_KEY"; exec "$@"'
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--allow-private", "--upstream-ca", str(ca.ca_pem),
        "--host-map", "secure.test=127.0.0.1", "--allow", f"domain=secure.test port={responses.port}",
        "--secret", "OPENAI_API_KEY", "--rw", str(codex.parents[2]), "--workspace", str(tmp_path),
        "--", "sh", "-c", script, "sh", str(codex), "exec", "--skip-git-repo-check", *overrides, "say hello",
        env={"OPENAI_API_KEY": key, "OPENAI_BASE_URL": base, "CODEX_HOME": str(tmp_path / "codex-home"),
             "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hello from the mock" in r.stdout
    assert f"Bearer {key}" in responses.auth  # OPENAI_BASE_URL's host is where the preset bound the key
    inside = r.stdout.split("key inside: ", 1)[1].split()[0]
    assert inside.startswith("boundary-secret-")
    assert key not in r.stdout + r.stderr


@pytest.mark.parametrize("mode", MODES)
def test_agent_codex_works_from_its_own_config_and_audit_names_what_it_was_denied(
    tmp_path: Path, ca: CA, codex: Path, responses: ResponsesMock, mode: str
) -> None:
    """--agent codex: the provider's host comes from codex's config.toml, codex is told it is externally
    sandboxed, and `boundary audit --last` lists exactly the hosts the run denied."""
    home = tmp_path / "codex-home"
    home.mkdir()
    write_provider(home, responses.port)
    key = "sk-test-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--allow-private", "--upstream-ca", str(ca.ca_pem),
        "--host-map", "secure.test=127.0.0.1", "--agent", "codex", "--secret", "OPENAI_API_KEY=secure.test",
        "--rw", str(codex.parents[2]), "--workspace", str(tmp_path),
        "--", str(codex), "exec", "--skip-git-repo-check", "say hello",
        env={"OPENAI_API_KEY": key, "CODEX_HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hello from the mock" in r.stdout
    # landjail: codex is told it is externally sandboxed; nsjail (--nested-userns implied): its own sandbox stays
    assert ("sandbox: danger-full-access" in r.stderr + r.stdout) is (mode == "landjail")
    assert f"Bearer {key}" in responses.auth
    said = set(re.findall(r"boundary: denied \S+ ([a-z0-9.-]+):\d+", r.stderr))
    audit = subprocess.run(
        [sys.executable, "-m", "jail", "audit", "--last", "--json", "--audit-log", str(audit_path(tmp_path))],
        capture_output=True, text=True, env=boundary_env(tmp_path), timeout=60, check=True, cwd=tmp_path,
    )  # fmt: skip
    denied = {g["host"] for g in json.loads(audit.stdout)["denied"]}
    assert denied == said
    assert "secure.test" not in denied


@pytest.mark.parametrize("mode", MODES)
def test_codex_runs_the_shell_command_the_model_asks_for(
    tmp_path: Path,
    ca: CA,
    codex: Path,
    responses: ResponsesMock,
    tls: Upstream,
    mode: str,
    request: pytest.FixtureRequest,
) -> None:
    """--agent codex: the mock model asks for one shell command. In nsjail (--nested-userns implied) it runs in
    codex's own workspace-write sandbox (bubblewrap) inside boundary's; in landjail codex is told it is
    externally sandboxed and it runs in boundary's jail. Either way a file appears in the workspace, nothing is
    written outside it, and a host the policy does not allow is denied and audited."""
    # not under /tmp: there codex refuses to make its helper aliases (codex-linux-sandbox on PATH), and a system
    # bubblewrap, which codex prefers to its own, then cannot start the command (a user's ~/.codex is elsewhere)
    home = Path(tempfile.mkdtemp(prefix="boundary-codex-home-", dir="/var/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    write_provider(home, responses.port)
    responses.tool_command = (
        "echo made > made-by-codex.txt; touch $HOME/outside-$$ 2>/dev/null && echo wrote-outside; "
        f"curl -sS --max-time 20 https://other.test:{tls.port}/from-codex; echo curl=$?"
    )
    if mode == "nsjail" and os.geteuid() == 0:
        pytest.skip("under unshare -r the command is uid 0, which the kernel will not map into codex's namespace")
    own_sandbox = ["-s", "workspace-write", "-c", "sandbox_workspace_write.network_access=true"]
    try:
        r = boundary_run(
            tmp_path, "--jail-type", mode, "--allow-private", "--upstream-ca", str(ca.ca_pem), "--host-map",
            "secure.test=127.0.0.1", "--host-map", "other.test=127.0.0.1", "--agent", "codex",
            "--secret", "OPENAI_API_KEY=secure.test", "--rw", str(codex.parents[2]), "--rw", str(home),
            "--workspace", str(tmp_path),
            "--", str(codex), "exec", *(own_sandbox if mode == "nsjail" else []), "--skip-git-repo-check",
            "make a file",
            env={"OPENAI_API_KEY": "sk-test-" + "x" * 40, "CODEX_HOME": str(home),
                 "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd=tmp_path, timeout=300,
        )  # fmt: skip
    finally:
        responses.tool_command = None
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "made-by-codex.txt").read_text() == "made\n", r.stdout + r.stderr[-3000:]
    assert "wrote-outside" not in r.stdout
    assert "hello from the mock" in r.stdout  # codex sent the command's output back and got the final answer
    assert [x for x in r.audit_records() if x["host"] == "other.test" and x["decision"] == "deny"], r.stderr
