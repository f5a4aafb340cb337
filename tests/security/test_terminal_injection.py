"""TIOCSTI pushes keystrokes into the terminal's input: typed commands that the user's shell runs, outside
the jail, after the command ends. On a real terminal (a pty that is the command's controlling terminal,
where the kernel itself would allow it) the seccomp filter must refuse it in both modes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import boundary_cmd, pty_run

PROBE = (
    "import errno, fcntl, os, termios\n"
    "fd = os.open('/dev/tty', os.O_RDWR)\n"
    "try:\n"
    "    fcntl.ioctl(fd, termios.TIOCSTI, b'#')\n"
    "    print('TIOCSTI injected')\n"
    "except OSError as e:\n"
    "    print('TIOCSTI', errno.errorcode[e.errno])\n"
)


@pytest.mark.parametrize("mode", ["nsjail", "landjail"])
def test_no_keystrokes_pushed_into_the_terminal(tmp_path: Path, mode: str) -> None:
    if Path("/proc/sys/dev/tty/legacy_tiocsti").read_text().strip() == "0":
        pytest.skip("this kernel refuses TIOCSTI itself (dev.tty.legacy_tiocsti=0): nothing for the filter to do")
    argv = boundary_cmd(tmp_path, "--jail-type", mode, "--", sys.executable, "-c", PROBE)
    status, out = pty_run(tmp_path, argv, [])
    assert status == 0, out
    assert "TIOCSTI EPERM" in out, out
