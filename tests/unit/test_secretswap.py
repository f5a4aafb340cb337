"""The pure secret core: placeholders, header/URL swaps and leaks, and the streaming body rewriter (fuzzed
against the same replacement done on the whole body)."""

from __future__ import annotations

import base64
import json
import urllib.parse

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
    sent = evil(b"hello " * 20)  # what cannot begin a needle any more goes out
    assert sent
    assert sent + evil(b"x" + OPENAI.placeholder.encode() + b"y") == (b"hello " * 20)[: len(sent)]
    assert evil(b"more") == b""
    assert evil(b"") == b""
    assert [(x.secret.name, x.kind) for x in leaks] == [("OPENAI_API_KEY", "placeholder")]


def test_responses_from_the_bound_host_hide_the_value() -> None:
    assert SET.response_text(H, f"you sent {VALUE}") == f"you sent {OPENAI.placeholder}"
    assert SET.response_text("evil.test", f"you sent {VALUE}") == f"you sent {VALUE}"  # it was never sent there
    rw = SET.response_body(H)
    half = len(VALUE) // 2
    out = rw(b"echo " + VALUE[:half].encode()) + rw(VALUE[half:].encode() + b" end") + rw(b"")
    assert out == b"echo " + OPENAI.placeholder.encode() + b" end"


@pytest.mark.parametrize("prefix", ["", "u:", "us:", "user:"])
def test_responses_hide_the_value_in_base64_too(prefix: str) -> None:
    echoed = base64.b64encode(f"{prefix}{VALUE}".encode()).decode()
    for form in (echoed, echoed.replace("+", "-").replace("/", "_")):
        hidden = SET.response_text(H, f"Basic {form}")[6:]
        assert VALUE[1:-1] not in base64.urlsafe_b64decode(hidden.replace("+", "-").replace("/", "_")).decode("latin-1")


ODD = secret("ODD_TOKEN", "Zq+/=&<>%AbCdEf12345678~", "odd.test")


@pytest.mark.parametrize(
    "form",
    [
        ODD.value,
        urllib.parse.quote(ODD.value, safe=""),
        urllib.parse.quote_plus(ODD.value),
        json.dumps(ODD.value)[1:-1],
        json.dumps(ODD.value)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
        base64.urlsafe_b64encode(ODD.value.encode()).decode(),
    ],
)
def test_responses_hide_common_encodings_of_the_value(form: str) -> None:
    body = f'{{"echo": "{form}"}}'
    hidden = SecretSet([ODD]).response_text("odd.test", body)
    assert form not in hidden
    assert len(hidden) == len(body)  # the same length: a body's framing holds


def test_what_is_held_back_does_not_depend_on_the_secret() -> None:
    """A prefix oracle: if only bytes that could begin the value were held, what comes back (and when) would tell
    how much of it a guess matches. Guesses of the same length come out the same way, whatever they match."""
    outs = []
    for guess in (VALUE[:20], "Q" * 20, VALUE[:19] + "Q"):
        rw = SET.response_body(H)
        outs.append([len(rw(b".")), len(rw(guess.encode())), len(rw(b"x" * 100)), len(rw(b""))])
    assert outs[0] == outs[1] == outs[2]


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


def test_nothing_to_send_yet_is_no_chunk_at_all() -> None:
    """mitmproxy frames each returned chunk; an empty one ends a chunked HTTP/1.1 body (a stream cut short)."""
    from proxy.addon import _Counter, _Rewrite

    counter = _Counter()
    rw = _Rewrite(SET.response_body(H), counter)
    assert rw(b"GET /tri") == []  # all of it held back
    tail = rw(b"")
    assert tail == b"GET /tri"
    assert counter.n == len(tail)
    assert counter.done
