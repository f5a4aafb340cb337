"""The CLI's own output: plain help, and every usage error one line (run's exit 125, the others 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def boundary(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jail", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def test_help_is_plain_and_whole() -> None:
    r = boundary("run", "-h")
    assert r.returncode == 0
    assert "--allow RULE" in r.stdout
    assert "'domain=api.github.com" in r.stdout
    assert "method=GET'" in r.stdout
    for noise in ("<list[", "<str>", "<path>", "╭", "…"):
        assert noise not in r.stdout, noise


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (("run",), 125, "boundary: no command given (usage: boundary run [OPTIONS] -- COMMAND [ARGS...])"),
        (("run", "--bogus", "--", "true"), 125, "boundary: No such option: --bogus"),
        (("run", "--jail-type"), 125, "boundary: Option '--jail-type' requires an argument."),
        (("explain",), 2, "boundary: Missing argument 'URL|HOST:PORT'."),
        (("nosuch",), 2, "boundary: No such command 'nosuch'."),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...], code: int, line: str) -> None:
    r = boundary(*args)
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(line), r.stderr


def test_every_run_option_is_in_the_readme() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()
    options = set(re.findall(r"^\s+(--[a-z][a-z-]+)", boundary("run", "-h").stdout, re.M)) - {"--help"}
    assert options, "no options parsed from --help"
    missing = sorted(o for o in options if o not in readme)
    assert missing == [], missing


# -- the lean `run` path (jail.fastrun) agrees with typer ---------------------------------------------------------
def _typer_run_command():  # type: ignore[no-untyped-def]
    import typer.main

    from jail.cli import app

    return typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]


def test_the_lean_table_is_runs_options() -> None:
    """Every option typer declares for `run` is in the table with the same parameter, kind and type, and nothing
    else is (a new option added to jail.cli.run must be added to jail.fastrun.OPTIONS too)."""
    from jail import fastrun

    declared: dict[str, tuple[str, str, str]] = {}
    for p in _typer_run_command().params:
        if p.name == "command":
            continue
        typ = {"INT": "int", "STRING": "str", "BOOL": "str"}.get(str(p.type), "path")
        if getattr(p, "count", False):
            kind, typ = "count", "int"
        elif getattr(p, "is_flag", False):
            kind = "true"
        else:
            kind = "many" if p.multiple else "one"
        for opt in p.opts:
            declared[opt] = (str(p.name), kind, typ)
        for opt in p.secondary_opts:
            declared[opt] = (str(p.name), "false", typ)
    assert declared == fastrun.OPTIONS


LINES = [
    ["--", "true"],
    ["true", "--allow", "x"],  # options end at COMMAND
    ["--allow", "domain=a", "--allow=domain=b", "--deny", "domain=c", "--", "sh", "-c", "x"],
    ["-q", "--rw", "/tmp/x", "--ro=/etc", "--hide", "~/.ssh", "--tmpfs", "/cache", "cmd"],
    ["-vv", "--no-shim", "--bind", "--allow-private", "--learn", "--proxy-port", "3128", "--", "a", "--b"],
    ["-qv", "--no-allow-private", "--nested-userns", "--no-nested-userns", "--shim", "--", "-x"],
    ["--jail-type", "landjail", "--workspace", "w", "--audit-log", "a.jsonl", "--mitm", "never", "--", "x"],
    ["--upstream-proxy", "http://p:1", "--upstream-ca", "ca.pem", "--pids-limit", "5", "--memory", "1g", "x"],
    ["--tmpfs-size", "0", "--host-map", "a=1.2.3.4", "--allow-unix", "/s", "--env-deny", "A*", "--", "x"],
    ["--env-allow", "B", "--publish", "80", "--secret", "T=h", "--preset", "npm", "--agent", "codex", "--", "x"],
    ["--config", "c.yaml", "--verbose", "--quiet", "-", "arg"],
]


@pytest.mark.parametrize("argv", LINES)
def test_lean_and_typer_parse_alike(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the lean path would run is what typer hands `run`'s body (jail.fastrun.execute)."""
    from jail import cli, fastrun

    parsed = fastrun.parse(argv)
    assert parsed is not None
    seen: list[tuple[dict[str, object], list[str]]] = []
    monkeypatch.setattr(cli, "execute", lambda params, command: seen.append((params, list(command))) or 0)
    cli.app(["run", *argv], standalone_mode=False)
    assert seen == [parsed]


@pytest.mark.parametrize(
    "argv",
    [
        [], ["--"], ["--allow"], ["-h"], ["--help", "--", "x"], ["--allow", "a"], ["--nope", "--", "x"],
        ["--proxy-port", "x", "--", "y"], ["--learn=yes", "--", "x"], ["-x", "cmd"], ["--alow", "a", "--", "x"],
    ],
)  # fmt: skip
def test_anything_else_goes_to_typer(argv: list[str]) -> None:
    from jail import fastrun

    assert fastrun.parse(argv) is None


def test_a_run_imports_neither_typer_nor_click(tmp_path: Path) -> None:
    """`boundary run` on the lean path (a usage error, which exits before any jail, proves the module set)."""
    probe = (
        "import sys, runpy; sys.argv = ['boundary', 'run', '--jail-type', 'bogus', '--', 'true']\n"
        "import jail.fastrun as f\n"
        "try:\n    f.execute(*f.parse(sys.argv[2:]))\nexcept f.Failed as e:\n    print('failed:', e)\n"
        "print(sorted(m for m in ('typer', 'click', 'yaml') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.stdout.splitlines()[-1] == "[]", (r.stdout, r.stderr)
    assert "failed:" in r.stdout
