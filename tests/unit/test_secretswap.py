"""The pure secret core: placeholders, header/URL swaps and leaks, and the streaming body rewriter (fuzzed
against the same replacement done on the whole body)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.rules import HostPattern
from proxy.secretswap import MIN_LEN, PREFIX, Leak, Secret, SecretSet, StreamRewriter, make_placeholder

VALUE = "sk-test-" + "A1b2C3d4" * 5  # 48 characters
OTHER = "ghp_" + "Z9y8X7w6" * 5  # 44


def secret(name: str, value: str, *hosts: str, body: bool = False) -> Secret:
    return Secret(name, value, make_placeholder(len(value)), tuple(map(HostPattern.parse, hosts)), hosts, body)


OPENAI = secret("OPENAI_API_KEY", VALUE, "api.openai.test")
GITHUB = secret("GITHUB_TOKEN", OTHER, "github.test", "*.github.test", body=True)
SET = SecretSet([OPENAI, GITHUB])


def test_placeholders_have_the_value_length_and_are_random() -> None:
    for n in (MIN_LEN, 20, 31, 32, 40, 200):
        p = make_placeholder(n)
        assert len(p) == n
        assert p.startswith(PREFIX if n >= len(PREFIX) + 16 else "bsecret-")
    assert make_placeholder(64) != make_placeholder(64)
    with pytest.raises(ValueError, match="at least 16"):
        make_placeholder(MIN_LEN - 1)
    assert VALUE not in repr(OPENAI)


H = "api.openai.test"
CASES = [
    # host, header value, swapped to, leak (secret, kind) or None
    (H, f"Bearer {OPENAI.placeholder}", f"Bearer {VALUE}", None),
    (H, "no secret here", "no secret here", None),
    ("evil.test", f"Bearer {OPENAI.placeholder}", None, ("OPENAI_API_KEY", "placeholder")),
    ("evil.test", f"x{OPENAI.placeholder[:10]}%{ord(OPENAI.placeholder[10]):02x}{OPENAI.placeholder[11:]}", None,
     ("OPENAI_API_KEY", "placeholder")),  # percent-encoded
    (H, f"Bearer {VALUE}", None, ("OPENAI_API_KEY", "value")),  # the real value, even to its own host
    ("evil.test", f"Bearer {VALUE}", None, ("OPENAI_API_KEY", "value")),
    (H, f"token {GITHUB.placeholder}", None, ("GITHUB_TOKEN", "placeholder")),  # bound elsewhere
    ("api.github.test", f"token {GITHUB.placeholder}", f"token {OTHER}", None),
    ("api.github.test", "Basic " + base64.b64encode(f"x-access-token:{GITHUB.placeholder}".encode()).decode(),
     "Basic " + base64.b64encode(f"x-access-token:{OTHER}".encode()).decode(), None),
    ("evil.test", "Basic " + base64.b64encode(f"u:{GITHUB.placeholder}".encode()).decode(), None,
     ("GITHUB_TOKEN", "placeholder")),
    ("evil.test", "Basic !!not base64", "Basic !!not base64", None),
]  # fmt: skip


@pytest.mark.parametrize(("host", "value", "want", "leak"), CASES)
def test_header_values(host: str, value: str, want: str | None, leak: tuple[str, str] | None) -> None:
    headers, got = SET.request_headers(host, [("Authorization", value)])
    if leak is None:
        assert got is None
        assert headers == [("Authorization", want)]
    else:
        assert got is not None
        assert (got.secret.name, got.kind) == leak
        assert VALUE not in got.reason()
        assert OTHER not in got.reason()


def test_no_value_goes_out_without_tls() -> None:
    _, leak = SET.request_headers(H, [("Authorization", f"Bearer {OPENAI.placeholder}")], tls=False)
    assert leak is not None
    assert leak.kind == "clear"
    assert "plain HTTP" in leak.reason()
    leaks: list[Leak] = []
    rw = SET.request_body("github.test", leaks.append, tls=False)
    assert rw(GITHUB.placeholder.encode()) == b""
    assert [x.kind for x in leaks] == ["clear"]


def test_header_names_and_urls_are_checked() -> None:
    _, leak = SET.request_headers("evil.test", [(f"x-{OPENAI.placeholder}", "1")])
    assert leak is not None
    assert "header name" in leak.where
    url, leak = SET.scan_text(H, f"/v1?key={OPENAI.placeholder}", "the URL", swap=True)
    assert (url, leak) == (f"/v1?key={VALUE}", None)
    _, leak = SET.scan_text("evil.test", f"/v1?key={OPENAI.placeholder}", "the URL", swap=True)
    assert leak is not None
    assert leak.where == "the URL"


def test_bodies_swap_only_where_opted_in_and_stop_at_a_leak() -> None:
    leaks: list[Leak] = []
    gh = SET.request_body("github.test", leaks.append)
    assert gh(b"{'t': '" + GITHUB.placeholder.encode() + b"'}") + gh(b"") == b"{'t': '" + OTHER.encode() + b"'}"
    oa = SET.request_body(H, leaks.append)  # OPENAI does not opt in: its placeholder passes as it is
    assert oa(OPENAI.placeholder.encode()) + oa(b"") == OPENAI.placeholder.encode()
    evil = SET.request_body("evil.test", leaks.append)
    assert evil(b"hello ") == b"hello "
    assert evil(b"x" + OPENAI.placeholder.encode() + b"y") == b""
    assert evil(b"more") == b""
    assert evil(b"") == b""
    assert [(x.secret.name, x.kind) for x in leaks] == [("OPENAI_API_KEY", "placeholder")]


def test_responses_hide_the_value() -> None:
    assert SET.response_text(f"you sent {VALUE}") == f"you sent {OPENAI.placeholder}"
    rw = SET.response_body()
    half = len(VALUE) // 2
    out = rw(b"echo " + VALUE[:half].encode()) + rw(VALUE[half:].encode() + b" end") + rw(b"")
    assert out == b"echo " + OPENAI.placeholder.encode() + b" end"


@pytest.mark.parametrize("prefix", ["", "u:", "us:", "user:"])
def test_responses_hide_the_value_in_base64_too(prefix: str) -> None:
    echoed = base64.b64encode(f"{prefix}{VALUE}".encode()).decode()
    hidden = base64.b64decode(SET.response_text(f"Basic {echoed}")[6:]).decode("latin-1")
    assert VALUE[1:-1] not in hidden
    assert OPENAI.placeholder[1:-1] in hidden


def test_only_a_possible_match_is_held_back() -> None:
    rw = SET.response_body()
    assert rw(b"data: one\n\n") == b"data: one\n\n"  # an event goes out at once
    assert rw(b"data: " + VALUE[:5].encode()) == b"data: "


NEEDLES = [b"needle-one", b"second", b"xyz-3"]


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from([*NEEDLES, b"need", b"sec", b"xy"]), st.binary(max_size=12))),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_streaming_equals_whole_body(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    swap = {NEEDLES[0]: b"NEEDLE-ONE", NEEDLES[1]: b"SECOND"}
    leak = Leak(OPENAI, "placeholder", "the body")
    want, found = b"", None
    pos = 0
    while True:  # the whole-body reference: leftmost needle, swap it or stop
        hits = [(data.find(n, pos), n) for n in NEEDLES if data.find(n, pos) >= 0]
        if not hits:
            want += data[pos:]
            break
        at, n = min(hits)
        want += data[pos:at]
        if n == NEEDLES[2]:
            found = leak
            break
        want += swap[n]
        pos = at + len(n)
    rw = StreamRewriter(swap, {NEEDLES[2]: leak})
    got, prev = b"", 0
    for c in [*sorted(set(cuts)), len(data)]:
        piece = data[prev : max(prev, min(c, len(data)))]
        if piece:  # b"" means the end
            got += rw(piece)
        prev = max(prev, min(c, len(data)))
    got += rw(b"")
    assert rw.leak is found
    if found is None:
        assert got == want
    else:
        assert want.startswith(got)  # nothing after the leak's start went out
