"""The CLI's own output: plain help, and every usage error one line (run's exit 125, the others 2)."""

from __future__ import annotations

import subprocess
import sys

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
