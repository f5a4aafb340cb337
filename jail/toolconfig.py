"""Proxy settings for the jailed command, everywhere tools look (DESIGN.md section 3, the
npm findings of the landjail prototype): built as a pure function of the caller's
environment, returning a new environment.

- ``HTTP(S)_PROXY``/``ALL_PROXY`` in both cases; npm 11 reads only ``https_proxy`` for https
  URLs, and ``npm_config_*`` env beats a project ``.npmrc``, so both are set.
- ``NO_PROXY`` names loopback only, never allowlisted names (an inherited value that exempted
  the registry sent npm around the proxy into EACCES); npm skips an empty ``NPM_CONFIG_NOPROXY``,
  so it gets the same non-empty value.
- npm's global prefix moves to boundary's own (``$XDG_DATA_HOME/boundary/npm-global``, bin on PATH inside
  the jail only, never the host's ``~/.npm-global``) unless the caller chose one;
  moving the prefix would also move ``globalconfig`` and drop the distro npmrc (and its
  ``cafile``), so ``NPM_CONFIG_GLOBALCONFIG`` keeps pointing at it.
- git through ``GIT_CONFIG_COUNT``/``KEY``/``VALUE`` (appended to the caller's), pip through
  ``PIP_PROXY``, yarn through ``YARN_HTTP(S)_PROXY``, Java through ``JAVA_TOOL_OPTIONS``,
  gRPC through ``GRPC_PROXY``, Node >= 22.21 through ``NODE_USE_ENV_PROXY``.
Side effects: none (``npm_global_prefix`` reads the file system).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

LOOPBACK = "localhost,127.0.0.1,::1"
# what the LD_PRELOAD shim puts back when a parent strips the environment
JAIL_KEYS = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy",
    "NPM_CONFIG_PROXY", "NPM_CONFIG_HTTPS_PROXY", "NPM_CONFIG_NOPROXY", "NODE_USE_ENV_PROXY", "PIP_PROXY",
    "YARN_HTTP_PROXY", "YARN_HTTPS_PROXY", "GRPC_PROXY",
)  # fmt: skip


def restore_keys(env: Mapping[str, str]) -> list[str]:
    """The variables the shim puts back when a parent strips them: the proxy settings, npm's
    prefix and global config, git's injected config, Java's options."""
    extra = [k for k in env if k.startswith("GIT_CONFIG_")]
    extra += [k for k in ("NPM_CONFIG_PREFIX", "NPM_CONFIG_GLOBALCONFIG", "JAVA_TOOL_OPTIONS") if k in env]
    return [*JAIL_KEYS, *extra]


def proxy_env(env: Mapping[str, str], proxy_url: str) -> dict[str, str]:
    out = dict(env)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        out[key] = proxy_url
    out["NO_PROXY"] = out["no_proxy"] = LOOPBACK
    for key in ("YARN_HTTP_PROXY", "YARN_HTTPS_PROXY", "PIP_PROXY", "GRPC_PROXY"):
        out[key] = proxy_url
    set_npm(out, "NPM_CONFIG_PROXY", proxy_url)
    set_npm(out, "NPM_CONFIG_HTTPS_PROXY", proxy_url)
    set_npm(out, "NPM_CONFIG_NOPROXY", LOOPBACK)
    out["NODE_USE_ENV_PROXY"] = "1"
    _git(out, proxy_url)
    _java(out, proxy_url)
    return out


def set_npm(env: dict[str, str], key: str, value: str) -> None:
    """Set an ``NPM_CONFIG_*`` key, dropping its other spellings (npm reads them case-insensitively)."""
    for k in [k for k in env if k.lower() == key.lower()]:
        del env[k]
    env[key] = value


def _git(out: dict[str, str], proxy_url: str) -> None:
    try:
        n = int(out.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        n = 0
    out[f"GIT_CONFIG_KEY_{n}"] = "http.proxy"
    out[f"GIT_CONFIG_VALUE_{n}"] = proxy_url
    out["GIT_CONFIG_COUNT"] = str(n + 1)


def _java(out: dict[str, str], proxy_url: str) -> None:
    host, _, port = proxy_url.removeprefix("http://").rpartition(":")
    props = (
        " ".join(f"-D{scheme}.proxyHost={host} -D{scheme}.proxyPort={port}" for scheme in ("http", "https"))
        + " -Dhttp.nonProxyHosts=localhost|127.0.0.1"
    )
    out["JAVA_TOOL_OPTIONS"] = (out.get("JAVA_TOOL_OPTIONS", "") + " " + props).strip()


def npm_env(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """Redirect npm's global prefix to ``prefix`` (boundary's own, its bin first on PATH inside the jail only)
    unless the caller set one; keep the distro npmrc."""
    out = dict(env)
    if any(k.lower() == "npm_config_prefix" for k in out):
        return out
    node = shutil.which("node", path=out.get("PATH"))
    node_prefix = Path(os.path.realpath(node)).parent.parent if node else Path("/usr/local")
    if not any(k.lower() == "npm_config_globalconfig" for k in out):
        out["NPM_CONFIG_GLOBALCONFIG"] = str(node_prefix / "etc" / "npmrc")
    target = Path(prefix)
    out["NPM_CONFIG_PREFIX"] = str(target)
    path = out.get("PATH", os.defpath)
    if str(target / "bin") not in path.split(":"):
        out["PATH"] = f"{target / 'bin'}:{path}"
    return out
