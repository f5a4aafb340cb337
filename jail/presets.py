"""Presets: named sets of hosts (``--preset npm``) and agents (``--agent codex``: its API hosts, its state
directory writable), read from the tools' own configuration at run time, so corporate mirrors and custom base
URLs work and no registry host is written here.

Side effects: reads tools' config files; asks npm and pip for their configured index (subprocess).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TOOL_TIMEOUT = 20.0


class PresetError(ValueError):
    pass


Env = Mapping[str, str]


def url_host(url: str) -> str | None:
    url = url.strip()
    return urlsplit(url if "://" in url else f"https://{url}").hostname if url else None


def _home(env: Env) -> Path:
    return Path(env.get("HOME") or Path.home())


def _ask(argv: list[str], env: Env) -> str:
    exe = shutil.which(argv[0], path=env.get("PATH")) if not os.path.isabs(argv[0]) else argv[0]
    if exe is None:
        raise PresetError(f"{argv[0]} is not installed")
    try:
        out = subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=dict(env),
            stdin=subprocess.DEVNULL, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        raise PresetError(f"'{' '.join(argv)}' failed ({e})") from None
    return out.stdout.strip()


def npm_registry(env: Env) -> list[str]:
    """The registry npm is configured to use (a corporate mirror included), asked of npm itself."""
    url = _ask(["npm", "config", "get", "registry"], env)
    host = url_host(url)
    if not host:
        raise PresetError(f"npm's registry {url!r} is not a URL")
    return [host]


def pip_index(env: Env) -> list[str]:
    """pip's index (PIP_INDEX_URL, or pip's configuration), else pip's own default index and its file host."""
    url = env.get("PIP_INDEX_URL", "")
    if not url:
        try:
            url = _ask([sys.executable, "-m", "pip", "config", "get", "global.index-url"], env)
        except PresetError:
            url = ""
    if url and (host := url_host(url)):
        return [host]
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        raise PresetError("pip is not importable, so its default index is unknown") from None
    return [str(PyPI.netloc), str(PyPI.file_storage_domain)]


def github(env: Env) -> list[str]:
    host = env.get("GH_HOST", "").strip().lower()
    if host and host != "github.com":  # GitHub Enterprise Server: one name
        return [host]
    return ["github.com", "api.github.com", "codeload.github.com", "raw.githubusercontent.com",
            "objects.githubusercontent.com", "release-assets.githubusercontent.com"]  # fmt: skip


# -- agents ----------------------------------------------------------------------------------------------------
def codex_home(env: Env) -> Path:
    return Path(env["CODEX_HOME"]).expanduser() if env.get("CODEX_HOME") else _home(env) / ".codex"


def codex_hosts(env: Env) -> list[str]:
    """The model provider's host from codex's config (``model_provider`` and its ``base_url``), or
    OPENAI_BASE_URL's, or OpenAI's API and the ChatGPT sign-in hosts."""
    import tomllib  # only for --agent codex

    try:
        cfg = tomllib.loads((codex_home(env) / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        cfg = {}
    provider = cfg.get("model_provider")
    providers = cfg.get("model_providers") if isinstance(cfg.get("model_providers"), dict) else {}
    chosen = providers.get(provider) if isinstance(provider, str) and isinstance(providers, dict) else None
    if isinstance(chosen, dict) and isinstance(chosen.get("base_url"), str) and (h := url_host(chosen["base_url"])):
        return [h]
    if h := url_host(env.get("OPENAI_BASE_URL", "")):
        return [h]
    return ["api.openai.com", "chatgpt.com", "auth.openai.com"]


def claude_hosts(env: Env) -> list[str]:
    return [url_host(env.get("ANTHROPIC_BASE_URL", "")) or "api.anthropic.com"]


def gemini_hosts(env: Env) -> list[str]:
    if h := url_host(env.get("GOOGLE_GEMINI_BASE_URL", "")):
        return [h]
    return ["generativelanguage.googleapis.com", "cloudcode-pa.googleapis.com", "oauth2.googleapis.com"]


def opencode_hosts(env: Env) -> list[str]:
    """The base URLs of opencode's configured providers, the providers whose keys are set, and its model list."""
    hosts: list[str] = ["models.dev"]
    try:
        cfg = json.loads((_home(env) / ".config" / "opencode" / "opencode.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    providers = cfg.get("provider") if isinstance(cfg, dict) else None
    for p in providers.values() if isinstance(providers, dict) else ():
        options = p.get("options") if isinstance(p, dict) else None
        url = options.get("baseURL") if isinstance(options, dict) else None
        if isinstance(url, str) and (h := url_host(url)):
            hosts.append(h)
    if env.get("ANTHROPIC_API_KEY"):
        hosts += claude_hosts(env)
    if env.get("OPENAI_API_KEY"):
        hosts.append(url_host(env.get("OPENAI_BASE_URL", "")) or "api.openai.com")
    return list(dict.fromkeys(hosts))


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    summary: str
    hosts: Callable[[Env], list[str]]
    state: Callable[[Env], list[Path]] = lambda env: []  # agents: directories made writable (created if missing)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("npm", "the registry npm is configured with (npm config get registry)", npm_registry),
        Preset("pypi", "pip's index (PIP_INDEX_URL, pip config), else pip's default index and file host", pip_index),
        Preset("github", "github.com, its API, code and release downloads (or GH_HOST)", github),
    )
}
AGENTS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("codex", "the model provider in codex's config, or OpenAI's API and sign-in; $CODEX_HOME writable",
               codex_hosts, lambda env: [codex_home(env)]),
        Preset("claude", "Anthropic's API (or ANTHROPIC_BASE_URL); ~/.claude writable", claude_hosts,
               lambda env: [_home(env) / ".claude"]),
        Preset("gemini", "Gemini's API and Google sign-in (or GOOGLE_GEMINI_BASE_URL); ~/.gemini writable",
               gemini_hosts, lambda env: [_home(env) / ".gemini"]),
        Preset("opencode", "models.dev, opencode's configured providers and those whose keys are set; its data "
               "directories writable", opencode_hosts,
               lambda env: [_home(env) / ".local" / d / "opencode" for d in ("share", "state")]),
    )
}  # fmt: skip


def lookup(name: str, table: Mapping[str, Preset], what: str) -> Preset:
    found = table.get(name.strip().lower())
    if found is None:
        raise PresetError(f"{what} {name!r} is not one of {', '.join(table)}")
    return found


def expand(preset: Preset, env: Env, what: str) -> list[str]:
    try:
        return preset.hosts(env)
    except PresetError as e:
        raise PresetError(f"{what} {preset.name}: {e}") from None


CODEX_EXTERNAL_SANDBOX = 'sandbox_mode="danger-full-access"'


def agent_argv(agent: str | None, argv: list[str]) -> list[str]:
    """--agent codex started as ``codex ...``: codex is told it is externally sandboxed (its documented setting
    for running inside a container: its own sandbox, which needs user namespaces that boundary's jail refuses,
    would fail every command). Its commands stay inside boundary's jail; an explicit ``--sandbox``/``-s`` or
    ``sandbox_mode`` of the caller's wins."""
    if agent != "codex" or not argv or os.path.basename(argv[0]) != "codex":
        return argv
    if any(a.startswith(("-s", "--sandbox", "--dangerously")) or "sandbox_mode" in a for a in argv[1:]):
        return argv
    return [argv[0], "-c", CODEX_EXTERNAL_SANDBOX, *argv[1:]]
