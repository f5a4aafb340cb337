"""Table-driven tests of the rule grammar and matching semantics (proxy/rules.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.rules import Action, L4Verdict, Policy, normalize_host, normalize_path, parse_rule

# (rule, host, port, expected match at L4)
HOST_TABLE = [
    ("domain=github.com", "github.com", 443, True),
    ("domain=github.com", "api.github.com", 443, False),
    ("domain=github.com", "evilgithub.com", 443, False),
    ("github.com", "github.com", 80, True),  # bare token is a domain
    ("domain=GitHub.COM", "github.com", 443, True),
    ("domain=github.com.", "github.com", 443, True),
    ("domain=*.github.com", "api.github.com", 443, True),
    ("domain=*.github.com", "v1.api.github.com", 443, True),
    ("domain=*.github.com", "github.com", 443, False),
    ("domain=*.github.com", "evilgithub.com", 443, False),
    ("domain=*.github.com", "api.evilgithub.com", 443, False),
    ("domain=.github.com", "github.com", 443, True),
    ("domain=.github.com", "api.github.com", 443, True),
    ("domain=.github.com", "evilgithub.com", 443, False),
    ("domain=api.*.example.com", "api.eu.example.com", 443, True),
    ("domain=api.*.example.com", "api.a.b.example.com", 443, False),
    ("domain=api.*.example.com", "api.example.com", 443, False),
    ("domain=10.1.2.3", "10.1.2.3", 443, True),
    ("domain=10.1.2.3", "10.1.2.4", 443, False),
    ("domain=10.0.0.0/8", "10.200.3.4", 22, True),
    ("domain=10.0.0.0/8", "11.0.0.1", 22, False),
    ("domain=10.0.0.0/8", "ten.example", 22, False),
    ("domain=[::1]", "::1", 443, True),
    ("domain=fd00::/8", "fd00::5", 443, True),
    ("domain=bücher.example", "xn--bcher-kva.example", 443, True),
    ("domain=github.com port=443", "github.com", 443, True),
    ("domain=github.com port=443", "github.com", 80, False),
    ("domain=github.com port=22,443", "github.com", 22, True),
    ("domain=github.com port=8000-8100", "github.com", 8050, True),
    ("domain=github.com port=8000-8100", "github.com", 8101, False),
]


@pytest.mark.parametrize(("rule", "host", "port", "expected"), HOST_TABLE)
def test_host_and_port_matching(rule: str, host: str, port: int, expected: bool) -> None:
    r = parse_rule(rule)
    assert r.matches_l4(normalize_host(host), port) is expected


# (rule, method, path, expected)
L7_TABLE = [
    ("domain=x.com method=GET", "GET", "/", True),
    ("domain=x.com method=GET", "get", "/", True),
    ("domain=x.com method=get", "GET", "/", True),
    ("domain=x.com method=GET,HEAD", "HEAD", "/", True),
    ("domain=x.com method=GET", "POST", "/", False),
    ("domain=x.com method=*", "PATCH", "/", True),
    ("domain=x.com path=/repos", "GET", "/repos", True),
    ("domain=x.com path=/repos", "GET", "/repos/", True),
    ("domain=x.com path=/repos", "GET", "/repos/a", False),
    ("domain=x.com path=/repos/*", "GET", "/repos/a", True),
    ("domain=x.com path=/repos/*", "GET", "/repos/a/b/c", True),
    ("domain=x.com path=/repos/*", "GET", "/repos", False),
    ("domain=x.com path=/repos/*/issues", "GET", "/repos/a/issues", True),
    ("domain=x.com path=/repos/*/issues", "GET", "/repos/a/b/issues", False),
    ("domain=x.com path=/repos/*", "GET", "/repos/a?x=1", True),
    ("domain=x.com path=/a,/b", "GET", "/b", True),
    # percent-encoding: decoded per segment, %2F never splits a segment
    ("domain=x.com path=/repos/*", "GET", "/rep%6Fs/a", True),
    ("domain=x.com path=/repos", "GET", "/repos%2Fevil", False),
    ("domain=x.com path=/a%20b", "GET", "/a b", True),
    # dot segments resolved before matching (no escape from an allowed prefix)
    ("domain=x.com path=/public/*", "GET", "/public/../admin", False),
    ("domain=x.com path=/public/*", "GET", "/public/%2e%2e/admin", False),
    ("domain=x.com path=/admin", "GET", "/public/../admin", True),
    ("domain=x.com method=POST path=/upload", "POST", "/upload", True),
    ("domain=x.com method=POST path=/upload", "GET", "/upload", False),
]


@pytest.mark.parametrize(("rule", "method", "path", "expected"), L7_TABLE)
def test_method_and_path_matching(rule: str, method: str, path: str, expected: bool) -> None:
    policy = Policy([parse_rule(rule)])
    assert policy.decide_request("x.com", 443, method, path).allowed is expected


INVALID = [
    ("domain=*", "every host"),
    ("*", "every host"),
    ("", "empty rule"),
    ("domain=github.*", "top-level label"),
    ("domain=git*hub.com", "whole"),
    ("domain=", "empty value"),
    ("host=github.com", "unknown key 'host'"),
    ("domain=a.com domain=b.com", "given twice"),
    ("domain=a.com port=0", "outside 1-65535"),
    ("domain=a.com port=70000", "outside 1-65535"),
    ("domain=a.com port=http", "not a number"),
    ("domain=a.com port=90-80", "outside"),
    ("domain=a.com method=GE(T", "not an HTTP method"),
    ("domain=a.com path=repos", "must start with '/'"),
    ("domain=a.com path=/re*pos", "whole segment"),
    ("domain=a.com path=/%ff", "percent"),
    ("domain=bad_host!.com", "bad label"),
    ("domain=10.0.0.0/33", "invalid CIDR"),
    ("method=GET", "needs a domain"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID)
def test_invalid_rules_have_precise_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid rule") as info:
        parse_rule(text)
    msg = str(info.value)
    assert msg.startswith(f"invalid rule {text!r}: ")
    assert fragment in msg


def test_deny_rule_may_omit_domain() -> None:
    r = parse_rule("method=DELETE", Action.DENY)
    assert r.hosts is None


NORMALIZE = [
    ("GitHub.com", "github.com"),
    ("github.com.", "github.com"),
    ("[::1]", "::1"),
    ("0:0:0:0:0:0:0:1", "::1"),
    ("Bücher.Example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
]


@pytest.mark.parametrize(("raw", "norm"), NORMALIZE)
def test_normalize_host(raw: str, norm: str) -> None:
    assert normalize_host(raw) == norm


@pytest.mark.parametrize("bad", ["", ".", "a..b", "-a.com", "a b.com", "x" * 300])
def test_normalize_host_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(bad)


def test_normalize_path() -> None:
    assert normalize_path("/a/./b/../c%2Fd?q") == "/a/c/d"


# Policy level: (allow rules, deny rules, host, port, expected L4 verdict)
L4_TABLE = [
    (["github.com"], [], "github.com", 443, L4Verdict.ALLOW),
    (["github.com"], [], "gitlab.com", 443, L4Verdict.DENY),
    ([], [], "github.com", 443, L4Verdict.DENY),
    (["domain=github.com method=GET"], [], "github.com", 443, L4Verdict.INSPECT),
    (["github.com", "domain=github.com method=GET"], [], "github.com", 443, L4Verdict.ALLOW),
    (["github.com"], ["domain=github.com method=POST"], "github.com", 443, L4Verdict.INSPECT),
    (["*.github.com"], ["domain=evil.github.com"], "evil.github.com", 443, L4Verdict.DENY),
    (["*.github.com"], ["domain=evil.github.com"], "api.github.com", 443, L4Verdict.ALLOW),
    (["github.com"], ["port=22"], "github.com", 22, L4Verdict.DENY),
]


@pytest.mark.parametrize(("allow", "deny", "host", "port", "verdict"), L4_TABLE)
def test_policy_l4(allow: list[str], deny: list[str], host: str, port: int, verdict: L4Verdict) -> None:
    assert Policy.from_strings(allow, deny).l4(host, port)[0] is verdict


def test_deny_wins_and_names_its_rule() -> None:
    p = Policy.from_strings(["api.github.com"], ["domain=api.github.com method=DELETE"])
    d = p.decide_request("api.github.com", 443, "DELETE", "/repos/x")
    assert not d.allowed
    assert d.rule_text == "domain=api.github.com method=DELETE"
    assert "deny rules win" in d.suggestion()
    assert p.decide_request("api.github.com", 443, "GET", "/repos/x").allowed


def test_decision_carries_rule_and_suggestion() -> None:
    p = Policy.from_strings(["domain=api.github.com method=GET"])
    ok = p.decide_request("api.github.com", 443, "GET", "/repos")
    assert ok.allowed
    assert ok.rule_text == "domain=api.github.com method=GET"
    no = p.decide_request("api.github.com", 443, "POST", "/repos")
    assert no.suggestion() == "--allow 'domain=api.github.com method=POST path=/repos'"
    other = p.decide_connection("example.org", 443)
    assert other.suggestion() == "--allow domain=example.org"


@given(st.text(max_size=200))
def test_parse_rule_never_crashes(text: str) -> None:
    try:
        parse_rule(text)
    except ValueError as e:
        assert str(e).startswith("invalid rule")


@given(st.text(max_size=300))
def test_decide_request_total_on_any_path(path: str) -> None:
    p = Policy.from_strings(["domain=x.com path=/a/*"])
    d = p.decide_request("x.com", 443, "GET", "/" + path)
    assert isinstance(d.allowed, bool)
