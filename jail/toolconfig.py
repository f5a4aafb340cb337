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
- per-run config files (``ToolFiles``): npm (``NPM_CONFIG_USERCONFIG``), git (``GIT_CONFIG_GLOBAL``) and pip
  (``PIP_CONFIG_FILE``) get the user's own settings without credentials, plus the proxy and CA.
Side effects: ``npm_env`` and ``config_files`` read the file system; ``ToolFiles.write`` writes the files.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import BoundaryError, describe

LOOPBACK = "localhost,127.0.0.1,::1"
# what the LD_PRELOAD shim puts back when a parent strips the environment
JAIL_KEYS = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy",
    "NPM_CONFIG_PROXY", "NPM_CONFIG_HTTPS_PROXY", "NPM_CONFIG_NOPROXY", "NODE_USE_ENV_PROXY", "PIP_PROXY",
    "YARN_HTTP_PROXY", "YARN_HTTPS_PROXY", "GRPC_PROXY", "TMPDIR", "TMP", "TEMP",
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
    if out.get("TMPDIR"):  # the JVM ignores TMPDIR
        props += f" -Djava.io.tmpdir={out['TMPDIR']}"
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


# -- per-run config files ---------------------------------------------------------------------
# npm keys that carry credentials (also in the //registry/:_authToken form)
NPM_SECRET_KEYS = ("_auth", "_authtoken", "_password", "username", "password", "email", "certfile", "keyfile")
GIT_DROPPED_SECTIONS = ("credential", "include", "includeif")  # helpers; includes could bring them back


def npmrc(user: str | None, *, proxy: str | None, cafile: str | None, prefix: str | None) -> str:
    """The user's npmrc without credentials, plus boundary's proxy, noproxy, cafile and prefix."""
    keep = []
    for line in (user or "").splitlines():
        if "=" not in line or line.lstrip().startswith((";", "#", "[")):
            continue  # only key=value settings are carried over (a stray line could be a token)
        key = line.split("=", 1)[0].strip().lower()
        last = key.rsplit(":", 1)[-1]
        if last in NPM_SECRET_KEYS or any(w in key for w in ("auth", "token", "password", "secret")):
            continue
        if key in ("proxy", "https-proxy", "noproxy", "prefix"):
            continue
        keep.append(line)
    ours = [f"proxy={proxy}", f"https-proxy={proxy}", f"noproxy={LOOPBACK}"] if proxy else []
    ours += [f"cafile={cafile}"] if cafile else []
    ours += [f"prefix={prefix}"] if prefix else []
    return "\n".join(["; generated by boundary for this run", *keep, *ours]) + "\n"


def gitconfig(user: str | None, *, proxy: str | None, cainfo: str | None) -> str:
    """The user's global git config without credential helpers or includes, plus proxy and CA."""
    keep: list[str] = []
    dropping = False
    for line in (user or "").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            name = stripped[1:].split("]", 1)[0].split(None, 1)[0].split(".", 1)[0].strip('"').lower()
            dropping = name in GIT_DROPPED_SECTIONS
        if not dropping:
            keep.append(line)
    ours = ["[http]"] if proxy or cainfo else []
    ours += [f"\tproxy = {proxy}"] if proxy else []
    ours += [f"\tsslCAInfo = {cainfo}"] if cainfo else []
    return "\n".join(["# generated by boundary for this run", *keep, *ours]) + "\n"


def pipconf(user: str | None, *, proxy: str | None, cert: str | None) -> str:
    """The user's pip config without credentials in index URLs, plus proxy and CA."""
    import configparser
    import urllib.parse

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(user or "")
    except configparser.Error:
        parser = configparser.ConfigParser(interpolation=None)  # unreadable: start from nothing
    for section in parser.sections():
        for key, value in list(parser[section].items()):
            urls = []
            for url in value.split():
                parts = urllib.parse.urlsplit(url)
                if parts.password or parts.username:
                    parts = parts._replace(netloc=parts.hostname or "")
                urls.append(urllib.parse.urlunsplit(parts))
            parser[section][key] = " ".join(urls)
    if not parser.has_section("global"):
        parser.add_section("global")
    if proxy:
        parser["global"]["proxy"] = proxy
    if cert:
        parser["global"]["cert"] = cert
    out = io.StringIO()
    parser.write(out)
    return "# generated by boundary for this run\n" + out.getvalue()


def _read_first(paths: list[str]) -> str | None:
    for p in paths:
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                return f.read(1 << 20)
        except OSError:
            continue
    return None


def config_files(
    home: str, env: Mapping[str, str], *, proxy: str | None, ca: str | None, prefix: str | None
) -> dict[str, str]:
    """name -> content of npmrc, gitconfig and pip.conf for this run, from the user's own (read here)."""
    git_user = "\n".join(filter(None, (_read_first([f"{home}/.gitconfig"]),
                                       _read_first([f"{home}/.config/git/config"]))))  # fmt: skip
    pip_user = _read_first([env.get("PIP_CONFIG_FILE", ""), f"{home}/.config/pip/pip.conf", f"{home}/.pip/pip.conf"])
    return {
        "npmrc": npmrc(_read_first([f"{home}/.npmrc"]), proxy=proxy, cafile=ca, prefix=prefix),
        "gitconfig": gitconfig(git_user, proxy=proxy, cainfo=ca),
        "pip.conf": pipconf(pip_user, proxy=proxy, cert=ca),
    }


CONFIG_ENV = {"npmrc": "NPM_CONFIG_USERCONFIG", "gitconfig": "GIT_CONFIG_GLOBAL", "pip.conf": "PIP_CONFIG_FILE"}


def write_config_files(directory: str, files: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Write ``files`` into ``directory`` (created 0755, files 0644) and point the tools at them."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    out = dict(env)
    for name, content in files.items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(path, 0o644)
        if name == "npmrc":
            set_npm(out, CONFIG_ENV[name], path)
        else:
            out[CONFIG_ENV[name]] = path
    return out


@dataclass(frozen=True, slots=True)
class ToolFiles:
    """The per-run npmrc, gitconfig and pip.conf (jail.toolconfig), written where the mode knows its proxy."""

    directory: str
    home: str
    ca: str | None
    npm_prefix: str

    def write(self, env: Mapping[str, str], *, proxy: str | None) -> tuple[dict[str, str], bytes | None]:
        """The environment pointing at them, and the npmrc's content when the user has a ~/.npmrc."""
        files = config_files(self.home, env, proxy=proxy, ca=self.ca, prefix=self.npm_prefix)
        try:
            out = write_config_files(self.directory, files, env)
        except OSError as e:
            raise BoundaryError("write the tool config files", describe(e), hint="check $XDG_STATE_HOME") from e
        has_npmrc = os.path.isfile(os.path.join(self.home, ".npmrc"))
        return out, files["npmrc"].encode() if has_npmrc else None

    def in_jail(self, env: Mapping[str, str], directory: str) -> tuple[dict[str, str], dict[str, bytes]]:
        """nsjail: the same files, to be written inside the jail's own /tmp (``directory``), so nothing of them
        is on the host, whatever ends the run; the environment pointing at them."""
        files = config_files(self.home, env, proxy=None, ca=self.ca, prefix=self.npm_prefix)
        out = dict(env)
        placed: dict[str, bytes] = {}
        for name, content in files.items():
            path = os.path.join(directory, name)
            placed[path] = content.encode()
            if name == "npmrc":
                set_npm(out, CONFIG_ENV[name], path)
            else:
                out[CONFIG_ENV[name]] = path
        return out, placed
