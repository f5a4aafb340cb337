"""The typer app: parse, build the Config, call the core, map errors to exit codes.

Exit codes: ``run`` passes COMMAND's status through (128+N for signal N);
125 for boundary's own failures and bad ``run`` input; ``explain`` 0 allow,
1 deny, 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from . import __version__
from .config import ConfigError, Flags, build_config
from .errors import BoundaryError
from .fastrun import Failed, execute, leave
from .fastrun import setup_logging as _setup_logging

EXIT_BOUNDARY = 125
EXIT_BAD_INPUT = 2
_COMMAND_STATUS: list[int] = []  # set when `run` returns the command's status (not a usage error)

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain help: no boxes, no text cut at 80 columns
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Run a command so that it reaches only allowlisted network destinations and the files its policy grants.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)

Allow = Annotated[
    list[str], typer.Option("--allow", metavar="RULE", help="Allow rule, e.g. 'domain=api.github.com method=GET'.")
]
Deny = Annotated[list[str], typer.Option("--deny", metavar="RULE", help="Deny rule; deny wins over allow.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", metavar="PATH", help="YAML config (coder/boundary keys).")]
HostMap = Annotated[
    list[str], typer.Option("--host-map", metavar="NAME=IP", help="NAME=IP: proxy-side static resolution.")
]
AllowPrivate = Annotated[
    bool | None, typer.Option("--allow-private/--no-allow-private", help="Let names resolve to private addresses.")
]

AuditLog = Annotated[Path | None, typer.Option("--audit-log", metavar="PATH", help="JSON lines, one per decision.")]
Mitm = Annotated[str | None, typer.Option("--mitm", metavar="MODE", help="auto | always | never.")]
UpstreamProxyOpt = Annotated[
    str | None, typer.Option("--upstream-proxy", metavar="URL", help="http://HOST:PORT to chain to.")
]
UpstreamCa = Annotated[Path | None, typer.Option("--upstream-ca", metavar="PEM", help="Extra CA for upstream TLS.")]
Verbose = Annotated[int, typer.Option("-v", "--verbose", count=True, help="More logging.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="No denial lines on stderr.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"boundary {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _fail(msg: str, code: int) -> NoReturn:
    typer.echo(f"boundary: {msg}", err=True)
    raise typer.Exit(code)


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    command: Annotated[list[str], typer.Argument(metavar="COMMAND", hidden=True, show_default=False)],
    allow: Allow = [],  # noqa: B006 (typer reads defaults, never mutates them)
    deny: Deny = [],  # noqa: B006
    config: ConfigOpt = None,
    jail_type: Annotated[
        str | None, typer.Option("--jail-type", metavar="TYPE", help="auto | nsjail | landjail.")
    ] = None,
    workspace: Annotated[
        Path | None, typer.Option("--workspace", metavar="DIR", help="Writable project dir (default: cwd).")
    ] = None,
    rw: Annotated[
        list[Path], typer.Option("--rw", metavar="PATH", help="Extra writable path (a missing directory is made).")
    ] = [],  # noqa: B006
    ro: Annotated[list[Path], typer.Option("--ro", metavar="PATH", help="Extra read-only path.")] = [],  # noqa: B006
    hide: Annotated[list[Path], typer.Option("--hide", metavar="PATH", help="Extra hidden path.")] = [],  # noqa: B006
    tmpfs: Annotated[
        list[Path], typer.Option("--tmpfs", metavar="PATH", help="Empty tmpfs (mode 1777, exec) here.")
    ] = [],  # noqa: B006
    audit_log: AuditLog = None,
    mitm: Mitm = None,
    upstream_proxy: UpstreamProxyOpt = None,
    upstream_ca: UpstreamCa = None,
    pids_limit: Annotated[
        str | None, typer.Option("--pids-limit", metavar="N", help="Max processes (0 = none).")
    ] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", metavar="SIZE", help="Memory limit, e.g. 2g (0 = none).")
    ] = None,
    tmpfs_size: Annotated[
        str | None,
        typer.Option(
            "--tmpfs-size",
            metavar="SIZE",
            help="nsjail: size cap of each tmpfs (/tmp, /dev/shm, --tmpfs), default 1g; 0 = the kernel's default "
            "(half of RAM). No effect in landjail.",
        ),
    ] = None,
    host_map: HostMap = [],  # noqa: B006
    allow_private: AllowPrivate = None,
    allow_unix: Annotated[
        list[Path],
        typer.Option("--allow-unix", metavar="PATH", help="Unix socket outside the jail that it may connect to."),
    ] = [],  # noqa: B006
    env_deny: Annotated[
        list[str],
        typer.Option("--env-deny", metavar="PATTERN", help="Remove variables matching this name or glob ('AWS_*')."),
    ] = [],  # noqa: B006
    env_allow: Annotated[
        list[str],
        typer.Option("--env-allow", metavar="PATTERN", help="Keep variables matching this even where a deny matches."),
    ] = [],  # noqa: B006
    no_bind: Annotated[
        bool | None, typer.Option("--no-bind/--bind", help="landjail: forbid listening on TCP ports.")
    ] = None,
    publish: Annotated[
        list[str],
        typer.Option(
            "--publish",
            metavar="PORT",
            help="landjail: binds on this port keep the address asked (wildcard included), so other machines can "
            "connect; otherwise they are kept on loopback. Repeatable, or comma-separated.",
        ),
    ] = [],  # noqa: B006
    shim: Annotated[
        bool | None,
        typer.Option("--shim/--no-shim", help="landjail: preload the connect shim (faster name lookups; default on)."),
    ] = None,
    proxy_port: Annotated[
        int | None, typer.Option("--proxy-port", metavar="PORT", help="The proxy's loopback port (default: random).")
    ] = None,
    secret: Annotated[
        list[str],
        typer.Option(
            "--secret",
            metavar="NAME[=HOST,...]",
            help="The command gets a placeholder in variable NAME; the proxy swaps in the real value (from "
            "boundary's environment, or NAME=@FILE) only on requests to HOST (default for known provider "
            "variables such as OPENAI_API_KEY, GITHUB_TOKEN, NPM_TOKEN: their API or registry hosts), and denies "
            "requests that carry it anywhere else. Add +body to swap in request bodies too.",
        ),
    ] = [],  # noqa: B006
    preset: Annotated[
        list[str],
        typer.Option(
            "--preset",
            metavar="NAME",
            help="Allow a named set of hosts, read from the tool's own config at run time: npm, pypi, github "
            "(boundary presets lists what each expands to here). Repeatable, or comma-separated.",
        ),
    ] = [],  # noqa: B006
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            metavar="NAME",
            help="codex | claude | gemini | opencode: allow the agent's API hosts (a custom base URL in its config "
            "included) and make its state directory writable (created if missing).",
        ),
    ] = None,
    nested_userns: Annotated[
        bool | None,
        typer.Option(
            "--nested-userns/--no-nested-userns",
            help="nsjail: let the command create user, mount and network namespaces of its own (agents that "
            "sandbox their commands with bubblewrap); what the jail hides stays hidden in them and a network "
            "namespace made inside reaches nothing. Implied by --agent codex. No effect in landjail.",
        ),
    ] = None,
    learn: Annotated[
        bool | None,
        typer.Option(
            "--learn",
            help="Learning mode, for building a policy: allow every destination no rule allows (private addresses "
            "stay refused), record each, and at the end write the allowlist a strict run would need.",
        ),
    ] = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Run COMMAND in a jail: boundary run [OPTIONS] -- COMMAND [ARGS...]

    Exit status: COMMAND's own (128+N if it died of signal N); 125 when boundary itself fails;
    126/127 when COMMAND cannot be executed / is not found. Never runs COMMAND unconfined.
    """
    params = {
        "allow": allow, "deny": deny, "config": config, "jail_type": jail_type, "workspace": workspace, "rw": rw,
        "ro": ro, "hide": hide, "tmpfs": tmpfs, "audit_log": audit_log, "mitm": mitm, "upstream_proxy": upstream_proxy,
        "upstream_ca": upstream_ca, "pids_limit": pids_limit, "memory": memory, "tmpfs_size": tmpfs_size,
        "host_map": host_map, "allow_private": allow_private, "no_bind": no_bind, "allow_unix": allow_unix,
        "env_deny": env_deny, "env_allow": env_allow, "publish": publish, "shim": shim, "proxy_port": proxy_port,
        "secret": secret, "learn": learn, "preset": preset, "agent": agent, "nested_userns": nested_userns,
        "verbose": verbose, "quiet": quiet,
    }  # fmt: skip
    try:
        status = execute(params, command)
    except Failed as e:
        _fail(str(e), EXIT_BOUNDARY)
    _COMMAND_STATUS.append(status)  # the command's own: passed through as it is, 2 included
    raise typer.Exit(status)


@app.command()
def explain(
    target: Annotated[str, typer.Argument(metavar="URL|HOST:PORT", help="URL, or HOST:PORT for an opaque connection.")],
    allow: Allow = [],  # noqa: B006
    deny: Deny = [],  # noqa: B006
    config: ConfigOpt = None,
    method: Annotated[
        str | None, typer.Option("--method", metavar="METHOD", help="HTTP method (default GET for URLs).")
    ] = None,
) -> None:
    """Print the decision for TARGET and the rule that decided it (exit 0 allow, 1 deny, 2 bad input)."""
    from .explain import explain_target

    try:
        cfg = build_config(Flags(allow=allow, deny=deny, config=config, use_secrets=False))
        allowed, text = explain_target(cfg.policy(), target, method)
    except (ConfigError, ValueError) as e:
        _fail(str(e), EXIT_BAD_INPUT)
    typer.echo(text)
    raise typer.Exit(0 if allowed else 1)


@app.command()
def proxy(
    allow: Allow = [],  # noqa: B006
    deny: Deny = [],  # noqa: B006
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option("--port", metavar="PORT", help="Loopback port (default: random).")] = None,
    audit_log: AuditLog = None,
    mitm: Mitm = None,
    upstream_proxy: UpstreamProxyOpt = None,
    upstream_ca: UpstreamCa = None,
    host_map: HostMap = [],  # noqa: B006
    allow_private: AllowPrivate = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Serve the filtering proxy alone on loopback (HTTP_PROXY-style), until Ctrl-C."""
    from .runner import serve_proxy

    _setup_logging(verbose, quiet)
    flags = Flags(
        allow=allow, deny=deny, config=config, audit_log=audit_log, mitm=mitm, upstream_proxy=upstream_proxy,
        upstream_ca=upstream_ca, host_map=host_map, allow_private=allow_private, proxy_port=port, use_secrets=False,
    )  # fmt: skip
    try:
        raise typer.Exit(serve_proxy(build_config(flags), quiet=quiet))
    except (ConfigError, BoundaryError) as e:
        _fail(str(e), EXIT_BOUNDARY)


@app.command()
def audit(
    run_id: Annotated[
        str | None, typer.Option("--run", metavar="ID", help="This run (its id, or a unique prefix of it).")
    ] = None,
    last: Annotated[bool, typer.Option("--last", help="The last run in the log (the default).")] = False,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Print the run's records as they are written.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    audit_log: AuditLog = None,
    config: ConfigOpt = None,
) -> None:
    """A run's audit log for people: denials first, grouped by host, each with the --allow that would permit it."""
    import json
    import threading

    from . import auditview

    if run_id is not None and last:
        _fail("--run and --last name different runs; give one", EXIT_BAD_INPUT)
    try:
        path = build_config(Flags(config=config, audit_log=audit_log, use_secrets=False)).audit_log
        assert path is not None
        if follow:
            stop = threading.Event()
            try:
                auditview.follow(path, run_id, lambda text: typer.echo(text), stop)
            except KeyboardInterrupt:
                stop.set()
            raise typer.Exit(0)
        chosen, records = auditview.select(auditview.read(path), run_id)
    except (ConfigError, auditview.AuditViewError) as e:
        _fail(str(e), EXIT_BAD_INPUT)
    if as_json:
        typer.echo(json.dumps(auditview.as_json(chosen, records), indent=2))
    else:
        typer.echo(auditview.report(chosen, records))


@app.command()
def presets(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """What each --preset and --agent expands to on this machine (hosts allowed, directories made writable)."""
    import json
    import os

    from . import presets as p

    out: dict[str, dict[str, object]] = {}
    for kind, table in (("preset", p.PRESETS), ("agent", p.AGENTS)):
        for name, preset in table.items():
            writable = [str(d) for d in preset.state(os.environ)]
            try:
                hosts = preset.hosts(os.environ)
                text = ", ".join(hosts)
            except p.PresetError as e:
                hosts, text = [], f"unavailable here: {e}"
            out[f"--{kind} {name}"] = {"hosts": hosts, "writable": writable, "from": preset.summary}
            if not as_json:
                typer.echo(f"--{kind} {name}: {text}")
                if writable:
                    typer.echo(f"    writable: {', '.join(writable)}")
                typer.echo(f"    from: {preset.summary}")
    if as_json:
        typer.echo(json.dumps(out, indent=2))


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Which jail modes work here, and exactly why not + how to fix (exit 0 when one does)."""
    from .doctor import report

    code, text = report(as_json=as_json)
    typer.echo(text)
    raise typer.Exit(code)


def main() -> None:
    """Console entry point. A usage error is one line (``run``'s exits 125 like boundary's own failures, the
    others 2); everything else exits as the command said."""
    import click  # typer 0.15 (pinned: later ones build pydantic models at every start) uses click itself

    sub = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    try:
        code = app(standalone_mode=False)
    except click.exceptions.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `boundary` (newer click): the help
            typer.echo(e.ctx.get_help() if e.ctx is not None else str(e), err=True)
            sys.exit(EXIT_BAD_INPUT)
        usage = "boundary run [OPTIONS] -- COMMAND [ARGS...]" if sub == "run" else "boundary -h"
        if sub in ("explain", "proxy", "doctor", "audit", "presets"):
            usage = f"boundary {sub} -h"
        typer.echo(f"boundary: {_usage_message(e)} (usage: {usage})", err=True)
        sys.exit(EXIT_BOUNDARY if sub == "run" else EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        sys.exit(130)
    code = code if isinstance(code, int) else 0
    if sub == "run":
        leave(code)
    sys.exit(code)


def _usage_message(e: Exception) -> str:
    msg = str(getattr(e, "format_message", lambda: str(e))())
    if "Missing parameter: command" in msg or ("Missing argument" in msg and "COMMAND" in msg):
        return "no command given"
    return msg.splitlines()[0] if msg else "bad usage"
