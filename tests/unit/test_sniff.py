"""SNI / HTTP head parsers: real ClientHellos from the ssl module, tables, and fuzzing."""

from __future__ import annotations

import contextlib
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sniff import (
    MAX_HEAD,
    Status,
    parse_client_hello,
    parse_request_head,
    request_target,
    split_authority,
)


def client_hello(server_name: str | None) -> bytes:
    ctx = ssl.create_default_context()
    if server_name is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_sni_from_real_client_hello() -> None:
    hello = client_hello("api.github.com")
    res = parse_client_hello(hello)
    assert res.status is Status.OK
    assert res.sni == "api.github.com"


def test_sni_needs_more_when_truncated() -> None:
    hello = client_hello("example.org")
    for cut in (0, 3, 5, 40, len(hello) - 1):
        assert parse_client_hello(hello[:cut]).status is Status.MORE


def test_sni_split_over_two_records() -> None:
    hello = client_hello("split.example")
    body = hello[5:]
    half = len(body) // 2
    rec = lambda b: b"\x16\x03\x01" + len(b).to_bytes(2, "big") + b  # noqa: E731
    assert parse_client_hello(rec(body[:half]) + rec(body[half:])).sni == "split.example"


def test_no_sni() -> None:
    res = parse_client_hello(client_hello(None))
    assert res.status is Status.OK
    assert res.sni is None


def test_not_tls() -> None:
    assert parse_client_hello(b"GET / HTTP/1.1\r\n\r\n").status is Status.NO


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_client_hello_parser_total(data: bytes) -> None:
    res = parse_client_hello(data)
    assert res.status in (Status.MORE, Status.NO, Status.OK)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=8))
def test_client_hello_mutations(pos: int, junk: bytes) -> None:
    hello = bytearray(client_hello("fuzz.example"))
    pos = min(pos, len(hello) - 1)
    hello[pos : pos + len(junk)] = junk
    res = parse_client_hello(bytes(hello))
    assert res.status in (Status.MORE, Status.NO, Status.OK)
    if res.sni is not None:
        assert res.sni.isascii()


HEADS = [
    (b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n", ("api.github.com", 443, "", True)),
    (b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n", ("::1", 8443, "", True)),
    (b"GET http://example.org/a?b=1 HTTP/1.1\r\nHost: example.org\r\n\r\n", ("example.org", 80, "/a?b=1", False)),
    (b"GET http://example.org:8080 HTTP/1.1\r\n\r\n", ("example.org", 8080, "/", False)),
    (b"GET http://user@example.org/ HTTP/1.1\r\n\r\n", ("example.org", 80, "/", False)),
    (b"GET /x HTTP/1.1\r\nhost: Example.org:81\r\n\r\n", ("Example.org", 81, "/x", False)),
]


@pytest.mark.parametrize(("raw", "expected"), HEADS)
def test_request_targets(raw: bytes, expected: tuple[str, int, str, bool]) -> None:
    res = parse_request_head(raw + b"body")
    assert res.status is Status.OK
    assert res.head is not None
    assert res.head.length == len(raw)
    t = request_target(res.head)
    assert (t.host, t.port, t.path, t.connect) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"CONNECT example.org HTTP/1.1\r\n\r\n",  # no port
        b"GET /x HTTP/1.1\r\n\r\n",  # no Host
        b"GET ftp://x/ HTTP/1.1\r\n\r\n",
        b"CONNECT example.org:99999 HTTP/1.1\r\n\r\n",
    ],
)
def test_unknowable_targets(raw: bytes) -> None:
    res = parse_request_head(raw)
    assert res.head is not None
    with pytest.raises(ValueError):
        request_target(res.head)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/2\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
    ],
)
def test_malformed_heads(raw: bytes) -> None:
    assert parse_request_head(raw).status is Status.NO


def test_head_size_bound() -> None:
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD
    assert parse_request_head(big).status is Status.NO
    assert parse_request_head(b"GET / HTTP/1.1\r\nHost: x").status is Status.MORE


@settings(max_examples=500)
@given(st.binary(max_size=1024))
def test_head_parser_total(data: bytes) -> None:
    res = parse_request_head(data)
    if res.status is Status.OK and res.head is not None:
        with contextlib.suppress(ValueError):
            request_target(res.head)


@given(st.text(max_size=100))
def test_split_authority_total(s: str) -> None:
    try:
        host, port = split_authority(s, 443)
    except ValueError:
        return
    assert 1 <= port <= 65535
    assert host
