"""Domain fronting over plain HTTP: a connection to an allowed name carrying a request whose Host names another
site. Through an allowed server (a CDN, a shared front end) that request would reach the other site; boundary
decides each request by its own Host, so it is refused and the allowed server never sees it. Both modes, with
the request sent transparently (no proxy settings): in nsjail to the address the jail's DNS gave the allowed
name, in landjail to the allowed name's address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Upstream, boundary_run

pytestmark = pytest.mark.jail


@pytest.fixture(scope="module")
def front() -> Iterator[Upstream]:
    u = Upstream().start()
    yield u
    u.stop()


OPTS = {
    "nsjail": "-sS --max-time 30 -i",
    # landjail, no proxy settings: the name resolved by the command (its connect goes to the transparent
    # listener), or by the shim (which makes the connect a CONNECT tunnel through the proxy)
    "landjail": "-sS --max-time 30 -i --noproxy '*' --resolve one.test:{port}:127.0.0.1",
    "landjail-shim": "-sS --max-time 30 -i --noproxy '*'",
}


@pytest.mark.parametrize("case", list(OPTS))
@pytest.mark.parametrize("keep_alive", [False, True])
def test_a_fronted_request_never_reaches_the_allowed_server(
    tmp_path: Path, front: Upstream, case: str, keep_alive: bool
) -> None:
    mode = case.split("-")[0]
    tag = f"fronted-{case}-{keep_alive}"
    opts, url = OPTS[case].format(port=front.port), f"http://one.test:{front.port}"
    fronted = f"{opts} -H 'Host: nope.test:{front.port}' {url}/{tag}"
    # keep-alive: an honest request first, the fronted one on the same connection (curl --next reuses it)
    cmd = f"curl {opts} {url}/honest --next {fronted}" if keep_alive else f"curl {fronted}"
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--allow", "domain=one.test", "--allow-private", "--host-map",
        "one.test=127.0.0.1", "--", "sh", "-c", cmd,
    )  # fmt: skip
    assert "HTTP/1.1 403" in r.stdout, (r.stdout, r.stderr)
    assert "--allow domain=nope.test" in r.stdout
    if keep_alive:
        assert "hello from /honest" in r.stdout
    assert not [h for h in front.hosts_seen if h.startswith("nope.test")]
    assert front.last_request_path != f"/{tag}"


MALFORMED_FIRST = (
    "import socket, sys\n"
    "p, first = int(sys.argv[1]), sys.argv[2].encode().decode('unicode_escape').encode()\n"
    "s = socket.create_connection(('one.test', p), timeout=30)\n"
    "s.sendall(first + b'GET /smuggled HTTP/1.1\\r\\nHost: nope.test\\r\\n\\r\\n')\n"
    "data = b''\n"
    "while chunk := s.recv(65536):\n"
    "    data += chunk\n"
    "print(data.decode(errors='replace'))\n"
)


@pytest.mark.parametrize(
    "first",
    [
        r"GET /first HTTP/1.1\r\nHost: one.test\r\nX-Foo : bar\r\n\r\n",  # a space before the colon
        r"GET /first http/1.1\r\nHost: one.test\r\n\r\n",  # a lower-case version (a lenient server takes it)
    ],
)
def test_a_malformed_first_request_is_refused_not_relayed(tmp_path: Path, front: Upstream, first: str) -> None:
    """nsjail, transparent: a first request that does not parse used to turn the connection into a byte relay,
    carrying the requests after it (another Host) to the allowed server, which took them."""
    import sys

    r = boundary_run(
        tmp_path, "--jail-type", "nsjail", "--allow", "domain=one.test", "--allow-private", "--host-map",
        "one.test=127.0.0.1", "--", sys.executable, "-c", MALFORMED_FIRST, str(front.port), first,
    )  # fmt: skip
    assert "HTTP/1.1 400" in r.stdout, (r.stdout, r.stderr)
    assert not [h for h in front.hosts_seen if h.startswith("nope.test")]
    assert front.last_request_path != "/smuggled"


@pytest.mark.parametrize("case", list(OPTS))
def test_a_fronted_request_is_refused_when_secrets_are_bound_too(tmp_path: Path, front: Upstream, case: str) -> None:
    """With a secret bound (to another host), plain HTTP is not on the fast path: it went to a byte relay for a
    host with no method/path rule, and the fronted request reached the allowed server."""
    mode = case.split("-")[0]
    tag = f"fronted-secret-{case}"
    opts, url = OPTS[case].format(port=front.port), f"http://one.test:{front.port}"
    r = boundary_run(
        tmp_path, "--jail-type", mode, "--allow", "domain=one.test", "--allow-private", "--host-map",
        "one.test=127.0.0.1", "--secret", "SOME_TOKEN=secure.test", "--",
        "sh", "-c", f"curl {opts} {url}/honest-{tag} --next {opts} -H 'Host: nope.test:{front.port}' {url}/{tag}",
        env={"SOME_TOKEN": "tok-" + "x" * 30},
    )  # fmt: skip
    assert f"hello from /honest-{tag}" in r.stdout, (r.stdout, r.stderr)
    assert "HTTP/1.1 403" in r.stdout, (r.stdout, r.stderr)
    assert not [h for h in front.hosts_seen if h.startswith("nope.test")]
    assert front.last_request_path != f"/{tag}"
