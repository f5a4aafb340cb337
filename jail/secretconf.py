"""``--secret``: which secrets the run has, their values (from boundary's environment or a file), the hosts
each is bound to (given, or a provider preset read at run time), and taking the values out of boundary's
own environment so that no process the jail can see holds them (proxy.secretswap does the swapping).

Spec: ``NAME`` or ``NAME=ITEM,ITEM...``; an item is a host pattern (``api.example.com``, ``*.example.com``),
``@FILE`` (the value is the file's content, trailing newline dropped) or ``+body`` (swap in request bodies
too). YAML ``secrets:`` takes the same strings, or mappings ``{name, hosts, file, body}``.
Side effects: reads secret files; a preset may ask npm or pip for their configured index (subprocess).
"""

from __future__ import annotations

import configparser
import ctypes
import logging
import os
import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.rules import Action, HostPattern, Policy
from proxy.secretswap import MIN_LEN, Secret, make_placeholder

from . import presets

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    hosts: tuple[str, ...] = ()
    file: str | None = None
    body: bool = False
    source: str = "--secret"


def parse_spec(text: str, source: str = "--secret") -> Spec:
    name, sep, rest = text.strip().partition("=")
    if not _NAME_RE.fullmatch(name):
        raise SecretError(f"{source} {text!r}: expected NAME or NAME=HOST,... (NAME an environment variable name)")
    hosts: list[str] = []
    file = None
    body = False
    for item in (i.strip() for i in rest.split(",")) if sep else ():
        if not item:
            continue
        if item.startswith("@"):
            file = item[1:]
        elif item == "+body":
            body = True
        else:
            hosts.append(item)
    return Spec(name, tuple(hosts), file, body, source)


def specs_from_yaml(value: Any, where: str) -> list[Spec]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = [{"name": k, **(v or {})} if isinstance(v, dict) or v is None else v for k, v in value.items()]
    if not isinstance(value, list):
        raise SecretError(f"{where}: 'secrets' must be a list of NAME[=HOST,...] or of {{name, hosts, file, body}}")
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(parse_spec(item, where))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SecretError(f"{where}: each secret is NAME[=HOST,...] or a mapping with a 'name'")
        unknown = set(item) - {"name", "hosts", "file", "body"}
        if unknown:
            raise SecretError(f"{where}: secret {item['name']!r}: unknown key {sorted(unknown)[0]!r}")
        hosts = item.get("hosts") or []
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise SecretError(f"{where}: secret {item['name']!r}: 'hosts' must be a list of host patterns")
        spec = parse_spec(item["name"], where)
        file = item.get("file")
        out.append(Spec(spec.name, tuple(hosts), str(file) if file else None, bool(item.get("body")), where))
    return out


# -- presets: the hosts a well-known variable's secret is for, read from the tool's configuration where it has one
def _url_host(env: Mapping[str, str], var: str, default: Sequence[str]) -> list[str]:
    host = presets.url_host(env.get(var, ""))
    return [host] if host else list(default)


def _npm_registry(env: Mapping[str, str]) -> list[str]:
    try:
        return presets.npm_registry(env)
    except presets.PresetError as e:
        raise SecretError(str(e)) from None


def _github(env: Mapping[str, str]) -> list[str]:
    host = env.get("GH_HOST", "").strip().lower()
    if host and host != "github.com":  # GitHub Enterprise Server: the API is under the same name
        return [host]
    return ["github.com", "api.github.com", "uploads.github.com"]


def _pypi_upload(env: Mapping[str, str]) -> list[str]:
    """Where uploads go: twine's or uv's variable, ~/.pypirc's [pypi] repository, else the upload name of
    pip's default index (read from pip, not written here)."""
    for var in ("TWINE_REPOSITORY_URL", "UV_PUBLISH_URL"):
        if env.get(var):
            return _url_host(env, var, [])
    rc = configparser.ConfigParser()
    try:
        rc.read(Path(env.get("HOME") or Path.home()) / ".pypirc", encoding="utf-8")
        repo = rc.get("pypi", "repository", fallback="")
    except configparser.Error:
        repo = ""
    if repo:
        return _url_host({"u": repo}, "u", [])
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        raise SecretError("pip is not importable, so PyPI's upload host is unknown") from None
    host = str(getattr(PyPI, "netloc", ""))  # the index pip knows; uploads go to its "upload." name
    if not host:
        raise SecretError("pip names no package index")
    host = f"upload.{host}"
    return [host]


def _provider(var: str, default: str) -> Callable[[Mapping[str, str]], list[str]]:
    return lambda env: _url_host(env, var, [default])


PRESETS: dict[str, Callable[[Mapping[str, str]], list[str]]] = {
    "OPENAI_API_KEY": _provider("OPENAI_BASE_URL", "api.openai.com"),
    "ANTHROPIC_API_KEY": _provider("ANTHROPIC_BASE_URL", "api.anthropic.com"),
    "ANTHROPIC_AUTH_TOKEN": _provider("ANTHROPIC_BASE_URL", "api.anthropic.com"),
    "GEMINI_API_KEY": _provider("GOOGLE_GEMINI_BASE_URL", "generativelanguage.googleapis.com"),
    "GOOGLE_API_KEY": _provider("GOOGLE_GEMINI_BASE_URL", "generativelanguage.googleapis.com"),
    "GITHUB_TOKEN": _github,
    "GH_TOKEN": _github,
    "NPM_TOKEN": _npm_registry,
    "NODE_AUTH_TOKEN": _npm_registry,
    "TWINE_PASSWORD": _pypi_upload,
    "PYPI_TOKEN": _pypi_upload,
    "PYPI_API_TOKEN": _pypi_upload,
    "UV_PUBLISH_TOKEN": _pypi_upload,
}


def build(specs: Sequence[Spec], env: Mapping[str, str]) -> tuple[Secret, ...]:
    """The run's secrets; a later spec for the same name replaces an earlier one. Raises SecretError."""
    by_name = {s.name: s for s in specs}
    return tuple(_secret(spec, env) for spec in by_name.values())


def _secret(spec: Spec, env: Mapping[str, str]) -> Secret:
    what = f"{spec.source} {spec.name}"
    if spec.file is not None:
        path = Path(os.path.expanduser(spec.file))
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise SecretError(f"{what}: failed to read {path}: {getattr(e, 'strerror', None) or e}") from None
    else:
        value = env.get(spec.name, "")
        if not value:
            raise SecretError(
                f"{what}: {spec.name} is not set in boundary's environment (export it, or read it from a file: "
                f"--secret {spec.name}=@PATH)"
            )
    if not value.isascii() or not value.isprintable():
        raise SecretError(f"{what}: the value holds characters a header cannot carry (only printable ASCII)")
    if len(value) < MIN_LEN:
        raise SecretError(
            f"{what}: the value has {len(value)} characters; boundary needs at least {MIN_LEN} to give the jail "
            "a placeholder of the same length"
        )
    hosts = list(spec.hosts)
    if not hosts:
        preset = PRESETS.get(spec.name)
        if preset is None:
            raise SecretError(
                f"{what}: name the hosts it is for, e.g. --secret {spec.name}=api.example.com ({spec.name} is not "
                f"a known provider variable: {', '.join(sorted(PRESETS))})"
            )
        try:
            hosts = preset(env)
        except SecretError as e:
            raise SecretError(f"{what}: {e}; name the hosts: --secret {spec.name}=HOST") from None
    try:
        patterns = tuple(HostPattern.parse(h) for h in hosts)
    except ValueError as e:
        raise SecretError(f"{what}: {e}") from None
    return Secret(spec.name, value, make_placeholder(len(value)), patterns, tuple(hosts), spec.body)


def warn_unreachable(secrets: Sequence[Secret], policy: Policy) -> None:
    """A secret bound to a name that no allow rule names, on any port, is of no use: said once."""
    allows = [r.hosts for r in policy.rules if r.action is Action.ALLOW and r.hosts is not None]
    for s in secrets:
        for p, text in zip(s.hosts, s.host_texts, strict=True):
            if p.is_literal_name and not any(a.matches(".".join(p.labels)) for a in allows):
                log.warning("secret %s is bound to %s, which no --allow rule allows (add --allow %s)", s.name, text,
                            text)  # fmt: skip


def withdraw(secrets: Sequence[Secret], environ: MutableMapping[str, str]) -> None:
    """Put the placeholders where the values were: ``NAME`` and any variable holding a value, in ``environ``
    (what every process boundary starts inherits) and in this process's original environment block (what
    ``/proc/PID/environ`` shows, for boundary and every process it forks)."""
    for s in secrets:
        environ[s.name] = s.placeholder
        for k, v in list(environ.items()):
            if s.value in v:
                environ[k] = v.replace(s.value, s.placeholder)
    _scrub_environ_block({s.value.encode(): s.placeholder.encode() for s in secrets})


def _scrub_environ_block(swap: Mapping[bytes, bytes]) -> None:
    """Overwrite the values in the environment block the kernel set up at exec (Python copied it at start)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51 of proc(5))
    except (OSError, IndexError, ValueError):
        return
    if not 0 < start < end or end - start > 1 << 24:
        return
    block = ctypes.string_at(start, end - start)
    for value, placeholder in swap.items():
        at = block.find(value)
        while at >= 0:
            ctypes.memmove(start + at, placeholder, len(placeholder))
            at = block.find(value, at + len(value))
