"""--preset and --agent: hosts read from the tools' own configuration at run time (npm and pip asked for real)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from jail.config import ConfigError, Flags, build_config
from jail.presets import AGENTS, PRESETS, agent_argv, codex_hosts, opencode_hosts


def test_codex_reads_its_provider_base_url(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert codex_hosts(env) == ["api.openai.com", "chatgpt.com", "auth.openai.com"]
    assert codex_hosts({**env, "OPENAI_BASE_URL": "https://gw.corp.test/v1"}) == ["gw.corp.test"]
    home = tmp_path / "ch"
    home.mkdir()
    (home / "config.toml").write_text(
        'model_provider = "corp"\n[model_providers.corp]\nname = "corp"\nbase_url = "https://llm.corp.test/v1"\n'
    )
    assert codex_hosts({**env, "CODEX_HOME": str(home)}) == ["llm.corp.test"]
    (home / "config.toml").write_text("not = [toml")
    assert codex_hosts({**env, "CODEX_HOME": str(home)})[0] == "api.openai.com"
    assert AGENTS["codex"].state({**env, "CODEX_HOME": str(home)}) == [home]


def test_opencode_reads_its_providers(tmp_path: Path) -> None:
    cfg = tmp_path / ".config" / "opencode"
    cfg.mkdir(parents=True)
    (cfg / "opencode.json").write_text('{"provider": {"x": {"options": {"baseURL": "https://x.corp.test/v1"}}}}')
    hosts = opencode_hosts({"HOME": str(tmp_path), "ANTHROPIC_API_KEY": "k"})
    assert hosts == ["models.dev", "x.corp.test", "api.anthropic.com"]


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed (scripts/test.sh installs it)")
def test_npm_preset_follows_npms_configuration(tmp_path: Path) -> None:
    env = {**os.environ, "npm_config_registry": "https://npm-mirror.corp.test/", "HOME": str(tmp_path)}
    assert PRESETS["npm"].hosts(env) == ["npm-mirror.corp.test"]


def test_pypi_preset_follows_pip(tmp_path: Path) -> None:
    assert PRESETS["pypi"].hosts({**os.environ, "PIP_INDEX_URL": "https://pypi.corp.test/simple"}) == ["pypi.corp.test"]
    hosts = PRESETS["pypi"].hosts({**os.environ, "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull})
    assert len(hosts) == 2  # pip's own default index and its file host, read from pip


def test_config_adds_rules_and_state(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "GH_HOST": "git.corp.test"}
    cfg = build_config(Flags(agent="codex", preset=["github"], workspace=tmp_path), env)
    assert [r.raw for r in cfg.rules] == ["domain=git.corp.test", "domain=api.openai.com", "domain=chatgpt.com",
                                          "domain=auth.openai.com"]  # fmt: skip
    assert cfg.rw == (tmp_path / ".codex",)
    assert cfg.agent == "codex"
    assert cfg.nested_userns  # codex's own sandbox needs namespaces
    assert not build_config(Flags(agent="codex", nested_userns=False, workspace=tmp_path), env).nested_userns
    assert not build_config(Flags(agent="claude", workspace=tmp_path), env).nested_userns
    with pytest.raises(ConfigError, match="not one of codex"):
        build_config(Flags(agent="copilot", workspace=tmp_path), env)
    with pytest.raises(ConfigError, match="--preset 'cargo' is not one of npm, pypi, github"):
        build_config(Flags(preset=["cargo"], workspace=tmp_path), env)
    y = tmp_path / "c.yaml"
    y.write_text("agent: claude\npresets: [github]\n")
    assert "domain=api.anthropic.com" in [r.raw for r in build_config(Flags(config=y, workspace=tmp_path), env).rules]


@pytest.mark.parametrize(
    ("agent", "argv", "want"),
    [
        ("codex", ["codex", "exec", "hi"], ["codex", "-c", 'sandbox_mode="danger-full-access"', "exec", "hi"]),
        ("codex", ["/opt/bin/codex"], ["/opt/bin/codex", "-c", 'sandbox_mode="danger-full-access"']),
        ("codex", ["codex", "exec", "-s", "read-only", "hi"], ["codex", "exec", "-s", "read-only", "hi"]),
        ("codex", ["codex", "--sandbox=workspace-write"], ["codex", "--sandbox=workspace-write"]),
        ("codex", ["npx", "codex"], ["npx", "codex"]),
        ("claude", ["codex"], ["codex"]),
    ],
)
def test_codex_is_told_it_is_externally_sandboxed(agent: str, argv: list[str], want: list[str]) -> None:
    assert agent_argv(agent, argv) == want
