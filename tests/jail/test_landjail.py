"""landjail for real (no namespaces): proxy settings, proxy-unaware programs with the LD_PRELOAD shim
and without it (boundary's socket supervisor routes them), a stripped environment, direct connects
through boundary, files by grant, bind on/off.
Upstreams are loopback servers reached only through the proxy (--host-map + --allow-private)."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    CA,
    Canary,
    Upstream,
    boundary_cmd,
    boundary_env,
    boundary_run,
    processes_with,
    wait_for,
)

LJ = ("--jail-type", "landjail", "--allow-private", "--host-map", "secure.test=127.0.0.1",
      "--host-map", "other.test=127.0.0.1")  # fmt: skip
PY = sys.executable


def run_lj(tmp: Path, ca: CA, tls: Upstream, *cmd: str, shim: bool = True) -> tuple[int, str, str]:
    r = boundary_run(
        tmp, *LJ, *(() if shim else ("--no-shim",)), "--allow", f"domain=secure.test port={tls.port}", "--", *cmd,
        env={"NODE_EXTRA_CA_CERTS": str(ca.ca_pem), "CA": str(ca.ca_pem), "PORT": str(tls.port)},
    )  # fmt: skip
    return r.returncode, r.stdout, r.stderr


CLIENTS = {
    "curl with proxy env": "curl -sS --max-time 30 --cacert $CA https://{host}:$PORT/{tag}",
    "curl --noproxy": "curl -sS --max-time 30 --noproxy '*' --cacert $CA https://{host}:$PORT/{tag}",
    "python urllib, proxies off": (
        f'{PY} -c "import ssl, sys, urllib.request as u; '
        "ctx = ssl.create_default_context(cafile=sys.argv[1]); "
        "o = u.build_opener(u.ProxyHandler({{}}), u.HTTPSHandler(context=ctx)); "
        "print(o.open(sys.argv[2], timeout=30).read().decode(), end='')\" $CA https://{host}:$PORT/{tag}"
    ),
    "node https.get": (
        "node -e \"require('https').get(process.argv[1], r => r.pipe(process.stdout)).on('error', e => "
        '{{ console.error(e.message); process.exit(3) }})" https://{host}:$PORT/{tag}'
    ),
    "node fetch": (
        'node -e "fetch(process.argv[1]).then(r => r.text()).then(t => process.stdout.write(t), e => '
        '{{ console.error(String(e.cause || e)); process.exit(3) }})" https://{host}:$PORT/{tag}'
    ),
}


@pytest.mark.parametrize("shim", [True, False], ids=["shim", "no shim"])
@pytest.mark.parametrize("client", CLIENTS)
def test_clients_reach_allowed_hosts_and_are_denied_others(
    tmp_path: Path, ca: CA, tls: Upstream, client: str, shim: bool
) -> None:
    """With the shim, proxy-unaware clients are sent to the explicit proxy; without it (as for a static binary),
    their DNS queries and connects are routed by boundary's socket supervisor: the same answers either way."""
    line = CLIENTS[client]
    script = (
        f"{line.format(host='secure.test', tag='ok')}; echo; {line.format(host='other.test', tag='no')}; echo rc=$?"
    )
    rc, out, err = run_lj(tmp_path, ca, tls, "sh", "-c", script, shim=shim)
    assert rc == 0, err
    assert "hello from /ok" in out, (out, err)
    assert "hello from /no" not in out
    assert not out.rstrip().endswith("rc=0"), out
    assert re.search(r"denied (CONNECT|tls) other\.test", err), err


def test_a_stripped_environment_still_goes_through_the_proxy(tmp_path: Path, ca: CA, tls: Upstream) -> None:
    script = (
        "env -i PATH=/usr/bin:/bin HOME=$HOME CA=$CA PORT=$PORT sh -c "
        "'echo proxy=$HTTPS_PROXY; curl -sS --max-time 30 --cacert $CA https://secure.test:$PORT/stripped'"
    )
    rc, out, err = run_lj(tmp_path, ca, tls, "sh", "-c", script)
    assert rc == 0, err
    assert re.search(r"proxy=http://127\.0\.0\.1:\d+", out)  # the shim put the jail's variables back
    assert "hello from /stripped" in out


@pytest.fixture(scope="session")
def static_connect(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A statically linked program that connect()s straight to 127.0.0.1:PORT (no libc shim can see it)."""
    d = tmp_path_factory.mktemp("static")
    src = d / "connect.c"
    src.write_text(
        "#include <arpa/inet.h>\n#include <errno.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
        "#include <sys/socket.h>\nint main(int c, char **v) { int s = socket(AF_INET, SOCK_STREAM, 0);\n"
        "struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(atoi(v[1]));\n"
        "a.sin_addr.s_addr = htonl(0x7f000001);\n"
        "if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {\n"
        '  printf("connect: %s\\n", strerror(errno)); return 1; }\n'
        'puts("connected"); return 0; }\n'
    )
    subprocess.run(["gcc", "-static", "-O", "-o", str(d / "connect"), str(src)], check=True, timeout=120)
    return d / "connect"


def test_direct_connects_go_through_boundary_and_udp_is_refused(
    tmp_path: Path, ca: CA, tls: Upstream, static_connect: Path
) -> None:
    canary = Canary()
    try:
        code = (
            "import socket, sys\n"
            "try:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', int(sys.argv[1])))\n"
            "    print('udp sent')\nexcept OSError as e:\n    print('udp', e.errno)\n"
        )
        script = f'{static_connect} {canary.tcp_port}; {PY} -c "$0" {canary.udp_port}'
        rc, out, err = run_lj(tmp_path, ca, tls, "sh", "-c", script, code)
        assert rc == 0, err
        assert "connected" in out  # to boundary's proxy, which decides (and refuses: no rule for the canary)
        assert "udp 13" in out  # the socket supervisor: UDP only to port 53
        assert canary.heard() == []
        assert f"denied tcp 127.0.0.1:{canary.tcp_port}" in err, err
    finally:
        canary.close()


def test_files_outside_the_grants_are_read_only(tmp_path: Path, ca: CA, tls: Upstream) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    script = (
        f"cd {ws} && echo ok > inside && cat inside; touch $HOME/boundary-outside; echo home=$?; "
        "touch /usr/x; echo usr=$?"
    )
    r = boundary_run(tmp_path, *LJ, "--workspace", str(ws), "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    assert "home=1" in r.stdout
    assert "usr=1" in r.stdout
    assert not (Path.home() / "boundary-outside").exists()


def _dev_server(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    port_file = tmp_path / "port"
    code = (
        "import http.server, sys\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n"
        "open(sys.argv[1] + '.tmp', 'w').write(str(s.server_port))\n"
        "import os; os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "s.handle_request()\n"
    )
    argv = boundary_cmd(tmp_path, "--jail-type", "landjail", *extra, "--", PY, "-c", code, str(port_file))
    proc = subprocess.Popen(
        argv, env=boundary_env(tmp_path), cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, port_file


def test_a_dev_server_inside_can_bind_and_serve(tmp_path: Path) -> None:
    proc, port_file = _dev_server(tmp_path)
    try:
        wait_for(port_file.exists)
        with socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.0 200")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_no_bind_forbids_listening(tmp_path: Path) -> None:
    proc, port_file = _dev_server(tmp_path, "--no-bind")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "PermissionError" in err
    assert not port_file.exists()


@pytest.mark.parametrize(("command", "status"), [(["sh", "-c", "exit 7"], 7), (["no-such-command-boundary"], 127)])
def test_exit_status_passes_through(tmp_path: Path, command: list[str], status: int) -> None:
    assert boundary_run(tmp_path, "--jail-type", "landjail", "--", *command).returncode == status


def test_capabilities_and_no_new_privs(tmp_path: Path) -> None:
    r = boundary_run(
        tmp_path, "--jail-type", "landjail", "--", "grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/self/status"
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"CapEff:\s+0+\n", r.stdout)
    assert re.search(r"NoNewPrivs:\s+1", r.stdout)


def test_nothing_the_command_leaves_running_outlives_the_run(tmp_path: Path) -> None:
    token = str(random.randint(10**8, 10**9))
    script = f"(sleep {token} &); setsid sleep {int(token) + 1} & echo started"
    r = boundary_run(tmp_path, "--jail-type", "landjail", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert "started" in r.stdout
    assert not processes_with(token)
    assert not processes_with(str(int(token) + 1))


FD_PASSING = (
    "import os, socket\n"
    "a, b = socket.socketpair()\n"
    "r, w = os.pipe()\n"
    "socket.send_fds(a, [b'here'], [w])\n"
    "msg, fds, _, _ = socket.recv_fds(b, 100, 1)\n"
    "os.write(fds[0], b'through the passed pipe')\n"
    "print(msg.decode(), os.read(r, 100).decode())\n"
    "d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "d1.sendmsg([b'part1-', b'part2'])\n"
    "print(d2.recv(100).decode())\n"
)


def test_sendmsg_carried_out_by_boundary_keeps_its_meaning(tmp_path: Path) -> None:
    """landjail's supervisor sends sendmsg itself: passed descriptors are the caller's own, iovecs joined."""
    r = boundary_run(tmp_path, "--jail-type", "landjail", "--", PY, "-c", FD_PASSING)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["here through the passed pipe", "part1-part2"], r.stdout


BIG_SENDMSG = (
    "import socket, threading\n"
    "srv = socket.create_server(('127.0.0.1', 0))\n"
    "got = []\n"
    "def drain():\n"
    "    c, _ = srv.accept()\n"
    "    while (chunk := c.recv(1 << 16)):\n"
    "        got.append(len(chunk))\n"
    "t = threading.Thread(target=drain)\n"
    "t.start()\n"
    "s = socket.create_connection(('127.0.0.1', srv.getsockname()[1]))\n"
    "data = b'x' * (3 << 20)\n"
    "print('sent', s.sendmsg([data]) == len(data))\n"
    "s.close()\n"
    "t.join()\n"
    "print('received', sum(got) == len(data))\n"
)


def test_a_blocking_sendmsg_on_a_stream_sends_all_of_it(tmp_path: Path) -> None:
    r = boundary_run(tmp_path, "--jail-type", "landjail", "--", PY, "-c", BIG_SENDMSG)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["sent True", "received True"], r.stdout
