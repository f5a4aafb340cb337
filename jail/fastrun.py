"""``boundary run`` without typer: the common invocation parsed from a table of its options, so a run does not
pay for importing typer and click and building their command tree (about 30 ms of every start).

The table mirrors the options ``jail.cli.run`` declares to typer (tests/unit/test_cli.py checks that it does,
option by option, and that both parse a table of command lines alike). Anything the table does not cover
exactly (help, an unknown option, a missing or malformed value, no command) goes to typer, which answers it as
before: this path never has to reproduce an error message. ``execute`` is ``run``'s body, shared by both.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

# option -> (parameter, kind, type); kind: one | many | true | false | count; type: str | path | int
OPTIONS: dict[str, tuple[str, str, str]] = {
    "--allow": ("allow", "many", "str"), "--deny": ("deny", "many", "str"), "--config": ("config", "one", "path"),
    "--jail-type": ("jail_type", "one", "str"), "--workspace": ("workspace", "one", "path"),
    "--rw": ("rw", "many", "path"), "--ro": ("ro", "many", "path"), "--hide": ("hide", "many", "path"),
    "--tmpfs": ("tmpfs", "many", "path"), "--audit-log": ("audit_log", "one", "path"),
    "--mitm": ("mitm", "one", "str"), "--upstream-proxy": ("upstream_proxy", "one", "str"),
    "--upstream-ca": ("upstream_ca", "one", "path"), "--pids-limit": ("pids_limit", "one", "str"),
    "--memory": ("memory", "one", "str"), "--tmpfs-size": ("tmpfs_size", "one", "str"),
    "--host-map": ("host_map", "many", "str"), "--allow-private": ("allow_private", "true", "str"),
    "--no-allow-private": ("allow_private", "false", "str"), "--allow-unix": ("allow_unix", "many", "path"),
    "--env-deny": ("env_deny", "many", "str"), "--env-allow": ("env_allow", "many", "str"),
    "--no-bind": ("no_bind", "true", "str"), "--bind": ("no_bind", "false", "str"),
    "--publish": ("publish", "many", "str"), "--shim": ("shim", "true", "str"), "--no-shim": ("shim", "false", "str"),
    "--proxy-port": ("proxy_port", "one", "int"), "--secret": ("secret", "many", "str"),
    "--preset": ("preset", "many", "str"), "--agent": ("agent", "one", "str"),
    "--nested-userns": ("nested_userns", "true", "str"), "--no-nested-userns": ("nested_userns", "false", "str"),
    "--learn": ("learn", "true", "str"), "-v": ("verbose", "count", "int"), "--verbose": ("verbose", "count", "int"),
    "-q": ("quiet", "true", "str"), "--quiet": ("quiet", "true", "str"),
}  # fmt: skip
DEFAULTS: dict[str, Any] = {"verbose": 0, "quiet": False}  # the rest: [] for many, None for one and flags
EXIT_BOUNDARY = 125


class _Unsure(Exception):
    """Not a command line this table answers exactly: typer takes it."""


def parse(argv: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    """``run``'s parameters and COMMAND from the arguments after ``run``; None when typer should parse them."""
    try:
        return _parse(argv)
    except _Unsure:
        return None


def _parse(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    params: dict[str, Any] = {}
    for name, kind, _ in OPTIONS.values():
        params[name] = DEFAULTS.get(name, [] if kind == "many" else None)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":  # options end at COMMAND (no interspersed options)
            break
        opt, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if opt not in OPTIONS and not eq and _short_run(arg):  # -vv, -qv
            for letter in arg[1:]:
                _apply(params, f"-{letter}", None)
            i += 1
            continue
        spec = OPTIONS.get(opt)
        if spec is None:
            raise _Unsure
        takes_value = spec[1] in ("one", "many")
        if takes_value and not eq:
            if i + 1 >= len(argv):
                raise _Unsure
            value = argv[i + 1]
            i += 1
        elif eq and not takes_value:
            raise _Unsure
        _apply(params, opt, value if takes_value else None)
        i += 1
    command = argv[i:]
    if not command:
        raise _Unsure
    return params, command


def _short_run(arg: str) -> bool:
    return len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and all(f"-{c}" in OPTIONS for c in arg[1:])


def _apply(params: dict[str, Any], opt: str, value: str | None) -> None:
    name, kind, typ = OPTIONS[opt]
    if kind == "count":
        params[name] += 1
        return
    if kind in ("true", "false"):
        params[name] = kind == "true"
        return
    assert value is not None
    converted: Any = value
    if typ == "path":
        converted = Path(value)
    elif typ == "int":
        try:
            converted = int(value, 10)
        except ValueError:
            raise _Unsure from None
    if kind == "many":
        params[name].append(converted)
    else:
        params[name] = converted


class Failed(Exception):
    """``run`` failed before the command's status was known: one line for stderr, exit 125."""


def execute(params: dict[str, Any], command: list[str]) -> int:
    """``boundary run``: COMMAND's status; raise Failed with the one line to print."""
    from .config import ConfigError, Flags, build_config
    from .errors import BoundaryError
    from .runner import run_command

    opts = dict(params)
    verbose, quiet = opts.pop("verbose"), opts.pop("quiet")
    setup_logging(verbose, quiet)
    try:
        cfg = build_config(Flags(**opts))
        return run_command(cfg, command, quiet=quiet)
    except (ConfigError, BoundaryError) as e:
        raise Failed(str(e)) from e
    except Exception as e:  # boundary's own bug or an unforeseen failure: one line, never a traceback
        logging.getLogger("jail.cli").debug("internal error", exc_info=True)
        raise Failed(f"internal error: {one_line(e)} (hint: -vv shows where)") from e


class _Format(logging.Formatter):
    """``boundary: warning: message`` (with -vv, the module that said it too)."""

    def __init__(self, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        where = f"{record.name}: " if self.verbose >= 2 else ""
        text = f"boundary: {record.levelname.lower()}: {where}{record.getMessage()}"
        if record.exc_info and self.verbose >= 2:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING - 10 * verbose if not quiet else logging.ERROR
    handler = logging.StreamHandler()
    handler.setFormatter(_Format(verbose))
    logging.basicConfig(level=max(level, logging.DEBUG), handlers=[handler])


def one_line(e: BaseException) -> str:
    if isinstance(e, OSError):
        from .errors import describe

        return describe(e)
    return f"{type(e).__name__}: {e}".splitlines()[0]


def leave(code: int) -> None:
    """End ``run`` at once: its jail is closed, its files removed and its audit log closed by now; what is left is
    the interpreter's own tear-down (tens of milliseconds of finalisers)."""
    import contextlib
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main() -> None:
    """Console entry point: ``run`` on the lean path when the table covers its arguments, typer otherwise."""
    argv = sys.argv[1:]
    parsed = parse(argv[1:]) if argv[:1] == ["run"] else None
    if parsed is None:
        from .cli import main as typer_main

        typer_main()
        return
    try:
        status = execute(*parsed)
    except Failed as e:
        print(f"boundary: {e}", file=sys.stderr)
        status = EXIT_BOUNDARY
    except KeyboardInterrupt:
        status = 130
    leave(status)
