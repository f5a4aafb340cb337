"""The run configuration: built once from flags, ``BOUNDARY_*`` env vars and the
YAML file (coder/boundary-compatible keys), validated, frozen. Rules are parsed
here and never again.

Precedence for single values: flag > env > YAML > default. Rule lists are
merged: YAML ``allowlist``, then ``BOUNDARY_ALLOW``, then ``--allow``.
Side effects: reads the config file.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.rules import Action, Policy, Rule, parse_rule
from proxy.secretswap import Secret
from proxy.server import MitmMode
from proxy.upstream import UpstreamProxy, parse_host_map

from . import presets, secretconf

log = logging.getLogger(__name__)

YAML_KEYS = {
    "allowlist", "denylist", "jail_type", "log_dir", "log_level", "proxy_port", "audit_log", "mitm",
    "host_map", "allow_private", "upstream_proxy", "pids_limit", "memory", "workspace", "firewall", "no_bind",
    "tmpfs_size", "allow_unix", "env_deny", "env_allow", "publish", "shim", "secrets", "learn", "presets", "agent",
    "nested_userns",
}  # fmt: skip
FIREWALL_BACKENDS = ("netlink", "nft", "iptables-nft", "iptables-legacy")
COMPAT_IGNORED = {"pprof_enabled", "pprof_port", "use_real_dns", "no_user_namespace", "session_correlation_enabled"}
LOG_LEVELS = ("error", "warn", "warning", "info", "debug")
# nsjail: each tmpfs the command writes (/tmp, /dev/shm, --tmpfs) holds at most this much of the host's memory
DEFAULT_TMPFS_SIZE = 1 << 30  # 1 GiB


class ConfigError(ValueError):
    """Bad input; the message names the source (flag, env var, file key)."""


class JailType(enum.Enum):
    AUTO = "auto"
    NSJAIL = "nsjail"
    LANDJAIL = "landjail"


def state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "boundary"


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "boundary" / "config.yaml"


@dataclass(frozen=True, slots=True)
class Config:
    rules: tuple[Rule, ...]
    jail_type: JailType = JailType.AUTO
    workspace: Path = field(default_factory=Path.cwd)
    rw: tuple[Path, ...] = ()
    ro: tuple[Path, ...] = ()
    hide: tuple[Path, ...] = ()
    tmpfs: tuple[Path, ...] = ()
    audit_log: Path | None = None
    mitm: MitmMode = MitmMode.AUTO
    upstream_proxy: UpstreamProxy | None = None
    upstream_ca: Path | None = None
    pids_limit: int | None = 4096
    memory: int | None = None
    tmpfs_size: int | None = DEFAULT_TMPFS_SIZE  # bytes; None: the kernel's default (half of RAM)
    host_map: Mapping[str, str] = field(default_factory=dict)
    allow_private: bool = False
    proxy_port: int = 0
    log_level: str = "warn"
    state_dir: Path = Path()
    run_id: str = ""
    firewall: tuple[str, ...] = FIREWALL_BACKENDS  # nsjail: backends to try, in order
    no_bind: bool = False  # landjail: forbid TCP bind (local dev servers)
    publish: tuple[int, ...] = ()  # landjail: ports whose binds keep their address (else loopback)
    shim: bool = True  # landjail: preload the connect shim
    allow_unix: tuple[Path, ...] = ()  # unix sockets outside the jail that it may connect to
    env_deny: tuple[str, ...] = ()  # variable-name globs removed from the command's environment
    env_allow: tuple[str, ...] = ()  # variable-name globs kept even where a deny (or boundary's own list) matches
    secrets: tuple[Secret, ...] = ()  # --secret: placeholders in the jail, real values swapped in by the proxy
    learn: bool = False  # --learn: allow what no rule allows (not private addresses), record it, suggest rules
    agent: str | None = None  # --agent: its hosts are allowed and its state directory writable
    nested_userns: bool = False  # nsjail: the command may make namespaces of its own (an agent's own sandbox)

    def policy(self) -> Policy:
        return Policy(self.rules, inspect=[p for s in self.secrets for p in s.hosts], learn=self.learn)


def split_rules_env(value: str) -> list[str]:
    """``BOUNDARY_ALLOW``/``BOUNDARY_DENY``: rules separated by newlines or ';'."""
    return [r.strip() for r in re.split(r"[;\n]", value) if r.strip()]


def parse_size(value: str | int, what: str) -> int | None:
    """``512m``, ``2G``, ``1048576``; 0 or negative means no limit (None)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    m = re.fullmatch(r"\s*(-?\d+)\s*([kmgt]?)i?b?\s*", str(value).lower())
    if not m:
        raise ConfigError(f"{what}: {value!r} is not a size (e.g. 512m, 2g, 1048576)")
    n = int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_")
    return n if n > 0 else None


def parse_int_limit(value: str | int, what: str) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {value!r} is not a whole number") from None
    return n if n > 0 else None


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: {value!r} is not a boolean")


def _ports(from_yaml: Any, from_env: str, given: Sequence[str], cfg_path: Path | None) -> tuple[int, ...]:
    """``--publish`` ports: YAML list, then ``BOUNDARY_PUBLISH`` (comma-separated), then flags (commas too)."""
    if from_yaml is not None and not isinstance(from_yaml, list):
        raise ConfigError(f"config file {cfg_path}: 'publish' must be a list of ports")
    texts = [str(p) for p in from_yaml or []] + from_env.split(",") + [p for g in given for p in str(g).split(",")]
    out = []
    for t in (t.strip() for t in texts):
        if not t:
            continue
        if not t.isdigit() or not 0 < int(t) <= 65535:
            raise ConfigError(f"--publish {t!r}: expected a port number 1-65535")
        out.append(int(t))
    return tuple(sorted(set(out)))


def _names(from_yaml: Any, from_env: str, given: Sequence[str], cfg_path: Path | None) -> list[str]:
    """``--preset`` names: YAML list, then ``BOUNDARY_PRESETS``, then flags (each may hold several, comma-separated)."""
    if from_yaml is not None and (not isinstance(from_yaml, list) or not all(isinstance(p, str) for p in from_yaml)):
        raise ConfigError(f"config file {cfg_path}: 'presets' must be a list of preset names")
    texts = [*(from_yaml or []), from_env, *given]
    return list(dict.fromkeys(n.strip().lower() for t in texts for n in t.split(",") if n.strip()))


def _allow_unix(from_yaml: Any, from_env: str, given: Sequence[Path], cfg_path: Path | None) -> tuple[Path, ...]:
    """``--allow-unix`` paths: YAML list, then ``BOUNDARY_ALLOW_UNIX`` (``:``-separated), then flags."""
    if from_yaml is not None and (not isinstance(from_yaml, list) or not all(isinstance(p, str) for p in from_yaml)):
        raise ConfigError(f"config file {cfg_path}: 'allow_unix' must be a list of paths")
    paths = [*(from_yaml or []), *(p for p in from_env.split(":") if p), *map(str, given)]
    out = []
    for p in paths:
        if not os.path.isabs(os.path.expanduser(p)):
            raise ConfigError(f"--allow-unix {p!r}: give an absolute path")
        out.append(Path(os.path.expanduser(p)))
    return tuple(out)


def _globs(from_yaml: Any, from_env: str, given: Sequence[str], key: str, cfg_path: Path | None) -> tuple[str, ...]:
    """Variable-name patterns: YAML list, then the env var (separated by ``,``), then flags."""
    if from_yaml is not None and (not isinstance(from_yaml, list) or not all(isinstance(p, str) for p in from_yaml)):
        raise ConfigError(f"config file {cfg_path}: {key!r} must be a list of variable names or globs")
    out = [*(from_yaml or []), *(p.strip() for p in from_env.split(",") if p.strip()), *given]
    for p in out:
        if not re.fullmatch(r"[A-Za-z0-9_*?\[\]!-]+", p):
            raise ConfigError(f"--{key.replace('_', '-')} {p!r}: expected a variable name or a glob such as 'AWS_*'")
    return tuple(out)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"failed to read config file {path}: {e.strerror}") from e
    import yaml  # only when there is a file to read (a tenth of a run's start otherwise)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {where}: not valid YAML: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    for key in data:
        if key in COMPAT_IGNORED:
            log.warning("config file %s: key %r is not used by boundary; ignored", path, key)
        elif key not in YAML_KEYS:
            raise ConfigError(f"config file {path}: unknown key {key!r} (known: {', '.join(sorted(YAML_KEYS))})")
    return data


@dataclass
class Flags:
    """What the CLI parsed; None = not given on the command line."""

    allow: Sequence[str] = ()
    deny: Sequence[str] = ()
    config: Path | None = None
    jail_type: str | None = None
    workspace: Path | None = None
    rw: Sequence[Path] = ()
    ro: Sequence[Path] = ()
    hide: Sequence[Path] = ()
    tmpfs: Sequence[Path] = ()
    audit_log: Path | None = None
    mitm: str | None = None
    upstream_proxy: str | None = None
    upstream_ca: Path | None = None
    pids_limit: str | None = None
    memory: str | None = None
    tmpfs_size: str | None = None
    host_map: Sequence[str] = ()
    allow_private: bool | None = None
    proxy_port: int | None = None
    log_level: str | None = None
    no_bind: bool | None = None
    publish: Sequence[str] = ()
    shim: bool | None = None
    allow_unix: Sequence[Path] = ()
    env_deny: Sequence[str] = ()
    env_allow: Sequence[str] = ()
    secret: Sequence[str] = ()
    learn: bool | None = None
    preset: Sequence[str] = ()
    agent: str | None = None
    nested_userns: bool | None = None
    use_secrets: bool = True  # False: the YAML's secrets are not read (explain, proxy: nothing to swap them into)


def build_config(flags: Flags, env: Mapping[str, str] | None = None) -> Config:
    """Merge flags, env and file into a validated Config; raise ConfigError."""
    env = os.environ if env is None else env
    cfg_path = flags.config or (Path(env["BOUNDARY_CONFIG"]) if env.get("BOUNDARY_CONFIG") else None)
    if cfg_path is None and default_config_path(env).is_file():
        cfg_path = default_config_path(env)
    y = load_yaml(cfg_path) if cfg_path else {}

    def pick(flag: Any, env_key: str, yaml_key: str, default: Any) -> Any:
        if flag is not None:
            return flag
        if env.get(env_key):
            return env[env_key]
        if yaml_key in y and y[yaml_key] is not None:
            return y[yaml_key]
        return default

    def rule_list(yaml_key: str, env_key: str, given: Sequence[str], action: Action) -> list[Rule]:
        src = y.get(yaml_key) or []
        if not isinstance(src, list) or not all(isinstance(r, str) for r in src):
            raise ConfigError(f"config file {cfg_path}: {yaml_key!r} must be a list of rule strings")
        texts = [*src, *split_rules_env(env.get(env_key, "")), *given]
        try:
            return [parse_rule(t, action) for t in texts]
        except ValueError as e:
            raise ConfigError(str(e)) from None

    agent_s = pick(flags.agent, "BOUNDARY_AGENT", "agent", None)
    try:
        agent = presets.lookup(str(agent_s), presets.AGENTS, "--agent") if agent_s else None
        names = _names(y.get("presets"), env.get("BOUNDARY_PRESETS", ""), flags.preset, cfg_path)
        chosen = [presets.lookup(n, presets.PRESETS, "--preset") for n in names]
        hosts = [h for p in chosen for h in presets.expand(p, env, "--preset")]
        if agent is not None:
            hosts += presets.expand(agent, env, "--agent")
        preset_rules = [parse_rule(f"domain={h}", Action.ALLOW) for h in dict.fromkeys(hosts)]
    except (presets.PresetError, ValueError) as e:
        raise ConfigError(str(e)) from None
    codex = agent is not None and agent.name == "codex"  # its own sandbox needs namespaces: --nested-userns
    rules = (
        *rule_list("allowlist", "BOUNDARY_ALLOW", flags.allow, Action.ALLOW),
        *preset_rules,
        *rule_list("denylist", "BOUNDARY_DENY", flags.deny, Action.DENY),
    )
    jt = str(pick(flags.jail_type, "BOUNDARY_JAIL_TYPE", "jail_type", "auto")).lower()
    try:
        jail_type = JailType(jt)
    except ValueError:
        raise ConfigError(f"jail type {jt!r} is not one of auto, nsjail, landjail") from None
    mitm_s = str(pick(flags.mitm, "BOUNDARY_MITM", "mitm", "auto")).lower()
    try:
        mitm = MitmMode(mitm_s)
    except ValueError:
        raise ConfigError(f"--mitm {mitm_s!r} is not one of auto, always, never") from None
    up_s = pick(flags.upstream_proxy, "BOUNDARY_UPSTREAM_PROXY", "upstream_proxy", None)
    try:
        upstream = UpstreamProxy.parse(str(up_s)) if up_s else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    hm_yaml = y.get("host_map") or []
    if isinstance(hm_yaml, dict):  # the mapping form, name: ip
        hm_yaml = [f"{k}={v}" for k, v in hm_yaml.items()]
    if not isinstance(hm_yaml, list):
        raise ConfigError(f"config file {cfg_path}: 'host_map' must be a list of NAME=IP or a mapping NAME: IP")
    hm_items = [
        *(str(i) for i in hm_yaml),
        *env.get("BOUNDARY_HOST_MAP", "").replace(",", " ").split(),
        *flags.host_map,
    ]
    try:
        host_map = parse_host_map(hm_items)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    port = parse_int_limit(pick(flags.proxy_port, "BOUNDARY_PROXY_PORT", "proxy_port", 0), "--proxy-port") or 0
    if port > 65535:
        raise ConfigError(f"--proxy-port {port} is outside 0-65535")
    level = str(pick(flags.log_level, "BOUNDARY_LOG_LEVEL", "log_level", "warn")).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    fw_s = str(pick(None, "BOUNDARY_FIREWALL", "firewall", ",".join(FIREWALL_BACKENDS)))
    firewall = tuple(b.strip() for b in fw_s.split(",") if b.strip())
    if not firewall or any(b not in FIREWALL_BACKENDS for b in firewall):
        raise ConfigError(f"firewall {fw_s!r}: expected a comma-separated list of {', '.join(FIREWALL_BACKENDS)}")
    sdir = state_dir(env)
    run_id = uuid.uuid4().hex[:12]
    audit = pick(flags.audit_log, "BOUNDARY_AUDIT_LOG", "audit_log", None)
    log_dir = env.get("BOUNDARY_LOG_DIR") or y.get("log_dir")
    if audit is None:
        audit = Path(log_dir).expanduser() / "boundary-audit.jsonl" if log_dir else sdir / "audit.jsonl"
    workspace = Path(pick(flags.workspace, "BOUNDARY_WORKSPACE", "workspace", os.getcwd())).expanduser().resolve()
    if not workspace.is_dir():
        what = "is not a directory" if workspace.exists() else "does not exist"
        raise ConfigError(f"--workspace {workspace} {what} (the command runs there; create it first)")
    try:
        specs = (
            []
            if not flags.use_secrets
            else [
                *secretconf.specs_from_yaml(y.get("secrets"), f"config file {cfg_path}"),
                *(
                    secretconf.parse_spec(t, "BOUNDARY_SECRETS")
                    for t in split_rules_env(env.get("BOUNDARY_SECRETS", ""))
                ),
                *(secretconf.parse_spec(t) for t in flags.secret),
            ]
        )
        secrets = secretconf.build(specs, env)
    except secretconf.SecretError as e:
        raise ConfigError(str(e)) from None
    if secrets and mitm is MitmMode.NEVER:
        raise ConfigError("--secret needs interception of the hosts it is bound to, and --mitm is 'never'")
    upstream_ca = flags.upstream_ca or (Path(env["BOUNDARY_UPSTREAM_CA"]) if env.get("BOUNDARY_UPSTREAM_CA") else None)
    if upstream_ca is not None and not upstream_ca.is_file():
        raise ConfigError(f"--upstream-ca {upstream_ca}: no such file")
    return Config(
        rules=rules,
        jail_type=jail_type,
        workspace=workspace,
        rw=(*flags.rw, *(agent.state(env) if agent is not None else ())),
        ro=tuple(flags.ro),
        hide=tuple(flags.hide),
        tmpfs=tuple(flags.tmpfs),
        audit_log=Path(audit).expanduser().absolute(),
        mitm=mitm,
        upstream_proxy=upstream,
        upstream_ca=upstream_ca,
        pids_limit=parse_int_limit(pick(flags.pids_limit, "BOUNDARY_PIDS_LIMIT", "pids_limit", 4096), "--pids-limit"),
        memory=parse_size(pick(flags.memory, "BOUNDARY_MEMORY", "memory", 0), "--memory"),
        tmpfs_size=parse_size(
            pick(flags.tmpfs_size, "BOUNDARY_TMPFS_SIZE", "tmpfs_size", DEFAULT_TMPFS_SIZE), "--tmpfs-size"
        ),
        host_map=host_map,
        allow_private=_bool(
            pick(flags.allow_private, "BOUNDARY_ALLOW_PRIVATE", "allow_private", False), "allow_private"
        ),
        proxy_port=port,
        log_level=level,
        state_dir=sdir,
        run_id=run_id,
        firewall=firewall,
        no_bind=_bool(pick(flags.no_bind, "BOUNDARY_NO_BIND", "no_bind", False), "no_bind"),
        publish=_ports(y.get("publish"), env.get("BOUNDARY_PUBLISH", ""), flags.publish, cfg_path),
        shim=_bool(pick(flags.shim, "BOUNDARY_SHIM", "shim", True), "shim"),
        env_deny=_globs(y.get("env_deny"), env.get("BOUNDARY_ENV_DENY", ""), flags.env_deny, "env_deny", cfg_path),
        env_allow=_globs(y.get("env_allow"), env.get("BOUNDARY_ENV_ALLOW", ""), flags.env_allow, "env_allow", cfg_path),
        allow_unix=_allow_unix(y.get("allow_unix"), env.get("BOUNDARY_ALLOW_UNIX", ""), flags.allow_unix, cfg_path),
        secrets=secrets,
        learn=_bool(pick(flags.learn, "BOUNDARY_LEARN", "learn", False), "learn"),
        agent=agent.name if agent is not None else None,
        nested_userns=_bool(
            pick(flags.nested_userns, "BOUNDARY_NESTED_USERNS", "nested_userns", codex), "nested_userns"
        ),
    )
