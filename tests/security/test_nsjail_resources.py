"""nsjail resources the command could use to reach past its jail: the tmpfs mounts it writes (/tmp, /dev/shm,
--tmpfs) are size-capped, so filling them cannot take the host's memory; /sys is a fresh sysfs of the jail's
own network namespace, so the host's interfaces and MAC addresses stay out of sight."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import boundary_cmd, boundary_env, boundary_run, read_until

MIB = 1 << 20
DEFAULT_CAP = 1 << 30  # --tmpfs-size default
SMALL = 8 * MIB
SIZE_OF = "import os, sys\nfor p in sys.argv[1:]:\n    s = os.statvfs(p); print(p, s.f_blocks * s.f_frsize)\n"


def _sizes(stdout: str) -> dict[str, int]:
    return {p: int(n) for p, n in re.findall(r"^(\S+) (\d+)$", stdout, re.M)}


def _meminfo_kb(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB$", Path("/proc/meminfo").read_text(), re.M)
    assert m, key
    return int(m.group(1))


def test_writing_past_the_cap_gets_enospc_and_stops_at_the_cap(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    script = (
        'for d in /tmp /dev/shm "$1"; do dd if=/dev/zero of="$d/big" bs=1M count=32 2>&1; '
        'echo "$d dd=$?"; echo "$d $(stat -c %s "$d/big")"; done'
    )
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--tmpfs-size", "8m", "--tmpfs", str(scratch),
                     "--", "sh", "-c", script, "sh", str(scratch))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("No space left on device") == 3, r.stdout
    sizes = _sizes(r.stdout)
    for d in ("/tmp", "/dev/shm", str(scratch)):
        assert f"{d} dd=1" in r.stdout, r.stdout
        assert SMALL - MIB <= sizes[d] <= SMALL, (d, sizes)  # full up to the cap, never past it


def test_the_default_cap_is_in_force(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--tmpfs", str(scratch),
                     "--", "python3", "-c", SIZE_OF, "/tmp", "/dev/shm", str(scratch))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _sizes(r.stdout) == {"/tmp": DEFAULT_CAP, "/dev/shm": DEFAULT_CAP, str(scratch): DEFAULT_CAP}


EMPTY_FILES = (
    "import os, sys\nn = 0\ntry:\n    while n < 100000:\n"
    "        os.close(os.open(f'{sys.argv[1]}/f{n}', os.O_CREAT | os.O_WRONLY)); n += 1\n"
    "except OSError as e:\n    print(os.strerror(e.errno))\nprint('created', n)\n"
)


def test_empty_files_are_capped_too(tmp_path: Path) -> None:
    """An empty file costs the kernel ~1 KiB outside tmpfs's size: the inode count is capped with it."""
    r = boundary_run(
        tmp_path, "--jail-type", "nsjail", "--tmpfs-size", "8m", "--", "python3", "-c", EMPTY_FILES, "/tmp"
    )
    assert r.returncode == 0, r.stderr
    assert "No space left on device" in r.stdout
    created = int(r.stdout.split("created ")[1])
    assert SMALL // 1024 - 16 <= created <= SMALL // 1024, r.stdout


@pytest.mark.parametrize("source", ["flag", "env", "yaml"])
def test_the_cap_comes_from_flag_env_or_config_file(tmp_path: Path, source: str) -> None:
    conf = tmp_path / "boundary.yaml"
    conf.write_text("tmpfs_size: 4m\n")
    args = {"flag": ["--tmpfs-size", "4m"], "env": [], "yaml": ["--config", str(conf)]}[source]
    env = {"BOUNDARY_TMPFS_SIZE": "4m"} if source == "env" else {}
    r = boundary_run(tmp_path, "--jail-type", "nsjail", *args, "--", "python3", "-c", SIZE_OF, "/tmp", env=env)
    assert r.returncode == 0, r.stderr
    assert _sizes(r.stdout) == {"/tmp": 4 * MIB}


@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_or_negative_means_the_kernel_default(tmp_path: Path, value: str) -> None:
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--tmpfs-size", value, "--", "python3", "-c", SIZE_OF, "/tmp")
    assert r.returncode == 0, r.stderr
    half_ram = _meminfo_kb("MemTotal") * 1024 // 2  # tmpfs's own default: half of RAM
    assert abs(_sizes(r.stdout)["/tmp"] - half_ram) < half_ram // 100


def test_a_bad_size_is_refused(tmp_path: Path) -> None:
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--tmpfs-size", "lots", "--", "true")
    assert r.returncode == 125
    assert "--tmpfs-size" in r.stderr


def test_landjail_accepts_the_option(tmp_path: Path) -> None:
    """landjail has no mount namespace: /tmp is the host's and the option has no effect there."""
    r = boundary_run(tmp_path, "--jail-type", "landjail", "--tmpfs-size", "8m", "--", "true")
    assert r.returncode == 0, r.stderr


def test_the_hosts_memory_is_untouched_beyond_the_cap(tmp_path: Path) -> None:
    """Fill three capped tmpfs with 3 x 128 MiB while the jail stays alive: the host's shared memory grows by
    at most the caps (3 x 8 MiB), plus a margin for whatever else runs on the machine meanwhile."""
    scratch = tmp_path / "scratch"
    script = (
        'for d in /tmp /dev/shm "$1"; do dd if=/dev/zero of="$d/big" bs=1M count=128 2>/dev/null; done; '
        "echo written; read _"
    )
    before = _meminfo_kb("Shmem") * 1024
    cmd = boundary_cmd(tmp_path, "--jail-type", "nsjail", "--tmpfs-size", "8m", "--tmpfs", str(scratch),
                       "--", "sh", "-c", script, "sh", str(scratch))  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=boundary_env(tmp_path))
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        read_until(proc.stdout.fileno(), b"", b"written", 120)
        grown = _meminfo_kb("Shmem") * 1024 - before
        proc.stdin.write(b"\n")
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if not proc.stdin.closed:
            proc.stdin.close()
    assert grown < 3 * SMALL + 64 * MIB, f"host Shmem grew by {grown // MIB} MiB"


HOST_NICS = sorted(os.listdir("/sys/class/net"))


def _host_macs() -> set[str]:
    macs = set()
    for nic in HOST_NICS:
        try:
            mac = Path(f"/sys/class/net/{nic}/address").read_text().strip()
        except OSError:
            continue
        if mac and mac.strip("0:"):
            macs.add(mac)
    return macs


def test_sys_class_net_shows_only_the_jails_interfaces(tmp_path: Path) -> None:
    host_dirs = [os.path.realpath(f"/sys/class/net/{nic}") for nic in HOST_NICS]  # e.g. /sys/devices/.../net/eth0
    script = 'ls /sys/class/net; echo ==; cat /sys/class/net/*/address; echo ==; ls -d "$@" 2>/dev/null; echo =='
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--", "sh", "-c", script, "sh", *host_dirs)
    assert r.returncode == 0, r.stderr
    names, addresses, visible, _ = r.stdout.split("==\n")
    assert sorted(names.split()) == ["bj0", "lo"]
    assert sorted(HOST_NICS) != ["bj0", "lo"]  # the comparison means something
    for mac in _host_macs():
        assert mac not in addresses
    assert [v for v in visible.split() if not v.endswith(("/lo", "/bj0"))] == []  # no host NIC's device dir


INFO = (
    "python3 -c 'import os; print(\"cpus\", os.cpu_count())'; echo nproc $(nproc); "
    "echo cgroup $(ls /sys/fs/cgroup); echo cpu $(ls /sys/fs/cgroup/cpu | head -3); "
    "echo devices $(ls /sys/devices/system/cpu | grep -c '^cpu[0-9]'); "
    "cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo no-thp"
)


def test_the_rest_of_sys_still_works_and_is_read_only(tmp_path: Path) -> None:
    host = subprocess.run(["sh", "-c", INFO], capture_output=True, text=True, check=True, timeout=30).stdout
    script = INFO + "; touch /sys/kernel/x 2>/dev/null; echo touch=$?; grep ' /sys ' /proc/self/mountinfo"
    r = boundary_run(tmp_path, "--jail-type", "nsjail", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(host), (host, r.stdout)
    assert "touch=1" in r.stdout
    sys_line = r.stdout.strip().splitlines()[-1]
    assert " - sysfs " in sys_line, sys_line
    opts = sys_line.split()[5].split(",")
    for opt in ("ro", "nosuid", "nodev", "noexec"):
        assert opt in opts, sys_line


REFUSED_SYSFS = """
import errno, json, os, sys
from jail.kernel import mounts, syscalls, userns
userns.enter_as_root(syscalls.CLONE_NEWNET | syscalls.CLONE_NEWNS)
real = syscalls.mount
def refuse_sysfs(source, target, fstype, flags, data=None):
    if fstype == "sysfs":
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))
    return real(source, target, fstype, flags, data)
syscalls.mount = refuse_sysfs
mounts.apply(mounts.Plan())
print(json.dumps({p: os.path.exists(p) and os.listdir(p) for p in sys.argv[1:]}))
"""


def test_where_a_fresh_sysfs_is_refused_the_hosts_net_directories_are_hidden() -> None:
    """The fallback: /sys/class/net, /sys/devices/virtual/net and each NIC's net/ directory become empty."""
    dirs = ["/sys/class/net", "/sys/devices/virtual/net"]
    dirs += [os.path.dirname(os.path.realpath(f"/sys/class/net/{nic}")) for nic in HOST_NICS]
    r = subprocess.run([sys.executable, "-c", REFUSED_SYSFS, *dirs], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {d: [] for d in dirs}
