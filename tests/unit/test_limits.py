"""RLIMIT_NOFILE: boundary raises its own soft limit to the hard one; the command gets the caller's back.

Each case runs in a child Python started with a low soft limit, so this process's limits stay as they are."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

LOW_SOFT = 256

# raise, then fork and exec a shell as the jail modes do, restoring right before exec
SCRIPT = textwrap.dedent(
    """
    import os, resource
    from jail.kernel import limits
    print(*resource.getrlimit(resource.RLIMIT_NOFILE))
    limits.raise_nofile()
    limits.raise_nofile()  # twice (run -> proxy code paths): the caller's limit is still the one remembered
    print(*resource.getrlimit(resource.RLIMIT_NOFILE), flush=True)
    pid = os.fork()
    if pid == 0:
        limits.restore_nofile()
        os.execvp("sh", ["sh", "-c", "echo $(ulimit -Sn) $(ulimit -Hn)"])
    os.waitpid(pid, 0)
    """
)


def run_low(script: str, soft: int = LOW_SOFT) -> list[str]:
    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    r = subprocess.run(
        [sys.executable, "-c", script], preexec_fn=low, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@pytest.fixture(autouse=True)
def _room() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= LOW_SOFT:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is no higher than {LOW_SOFT}")


def test_supervisor_gets_the_hard_limit_and_the_command_the_callers_soft() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    started, raised, command = run_low(SCRIPT)
    assert started == f"{LOW_SOFT} {hard}"
    assert raised == f"{hard} {hard}"
    assert command == f"{LOW_SOFT} {hard}"  # the hard limit was never lowered


def test_restore_without_raise_changes_nothing() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = run_low(
        "import resource\nfrom jail.kernel import limits\nlimits.restore_nofile()\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    assert out == [f"{LOW_SOFT} {hard}"]
