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
    # path=* is "any path" (coder-compatible), alone or in a list
    ("domain=x.com path=*", "GET", "/", True),
    ("domain=x.com path=*", "GET", "/any/thing?q=1", True),
    ("domain=x.com path=/a,*", "GET", "/b", True),
    ("domain=x.com method=GET path=*", "GET", "/x", True),
    ("domain=x.com method=GET path=*", "POST", "/x", False),
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
    ("domain=a.com domain=b.com", "key 'domain' given twice; a rule names one domain, give one rule per domain"),
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
    # a query or fragment in path= would be dropped silently and widen the rule: refused
    ("domain=x.com path=/api/users?limit=10", "path '/api/users?limit=10' has a query ('?limit=10')"),
    ("domain=x.com path=/api/users?", "has a query ('?')"),
    ("domain=x.com path=/docs#top", "path '/docs#top' has a fragment ('#top')"),
    ("domain=x.com path=/a#b?c", "has a fragment ('#b?c')"),
    ("domain=x.com path=/ok,/api?admin=1", "path '/api?admin=1' has a query"),
    ("domain=x.com path=/*?x", "has a query"),
    ("domain=x.com path=*?x", "has a query"),
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


def test_query_refusal_explains_why() -> None:
    with pytest.raises(ValueError, match=r"query is never matched.*remove it") as info:
        parse_rule("domain=x.com path=/api/users?limit=10")
    assert "/api/users?admin=1" not in str(info.value)


def test_path_star_is_any_path_and_keeps_its_text() -> None:
    r = parse_rule("domain=x.com path=*")
    assert r.paths is None
    assert not r.is_l7  # nothing to inspect: relayed like a domain-only rule
    assert r.raw == "domain=x.com path=*"
    assert Policy([r]).l4("x.com", 443)[0] is L4Verdict.ALLOW


# a deny rule without domain that matches every request is refused like 'domain=*'
@pytest.mark.parametrize("text", ["path=*", "method=*", "method=* path=*"])
def test_deny_rule_matching_everything_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="matches every request") as info:
        parse_rule(text, Action.DENY)
    assert str(info.value).startswith(f"invalid rule {text!r}: ")


# old-style "METHOD domain[/path]" rules, or two domains: (rule, fragments the message must hold)
OLD_STYLE = [
    (
        "GET *google.com",
        [
            "'GET' and '*google.com' are both read as a domain",
            "a rule is space-separated key=value pairs (domain=, port=, method=, path=)",
            "a bare word is short for domain=",
            "write 'method=GET domain=.google.com'",
        ],
    ),
    ("GET,HEAD github.com/api/*", ["'GET,HEAD' and", "write 'method=GET,HEAD domain=github.com path=/api/*'"]),
    ("domain=x.com POST", ["'x.com' and 'POST' are both read as a domain", "write 'domain=x.com method=POST'"]),
    ("* *.github.com", ["write 'method=* domain=*.github.com'"]),
    ("github.com gitlab.com", ["'github.com' and 'gitlab.com' are both read as a domain", "give one rule per domain"]),
    ("domain=a.com b.com", ["'a.com' and 'b.com' are both read as a domain", "give one rule per domain"]),
]


@pytest.mark.parametrize(("text", "fragments"), OLD_STYLE)
def test_old_style_rule_explains_the_grammar(text: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError, match="invalid rule") as info:
        parse_rule(text)
    msg = str(info.value)
    assert msg.startswith(f"invalid rule {text!r}: ")
    assert "given twice" not in msg
    for f in fragments:
        assert f in msg


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


# (allow rules, host, port, method or None for a connection, the '.name' form offered or None)
SUGGESTION_TABLE = [
    (["*.github.com"], "github.com", 443, None, "github.com"),  # the apex of '*.name'
    (["*.github.com"], "github.com", 443, "GET", "github.com"),
    (["github.com"], "api.github.com", 443, None, "github.com"),  # below an exact name
    (["domain=github.com port=443"], "a.b.github.com", 443, None, "github.com"),
    (["github.com", "api.github.com"], "v1.api.github.com", 443, None, "api.github.com"),  # the closest
    (["api.github.com"], "github.com", 443, None, None),  # a parent is not offered
    (["github.com"], "evilgithub.com", 443, None, None),
    (["*.github.com"], "evilgithub.com", 443, None, None),
    (["domain=*.github.com port=443"], "api.github.com", 80, None, None),  # the host matched, the port did not
    (["domain=github.com port=443"], "github.com", 80, None, None),
    ([".github.com"], "evil.com", 443, None, None),
    (["api.*.example.com"], "example.com", 443, None, None),
    (["10.0.0.0/8"], "11.0.0.1", 443, None, None),
]


@pytest.mark.parametrize(("allow", "host", "port", "method", "dot"), SUGGESTION_TABLE)
def test_suggestion_offers_the_dot_form(
    allow: list[str], host: str, port: int, method: str | None, dot: str | None
) -> None:
    p = Policy.from_strings(allow)
    d = p.decide_connection(host, port) if method is None else p.decide_request(host, port, method, "/")
    assert not d.allowed
    want = f"--allow domain={host}"
    if dot is not None:
        want += f" (or --allow domain=.{dot} for {dot} and every name below it)"
    assert d.suggestion() == want


def test_dot_form_not_offered_for_a_deny_or_a_method_miss() -> None:
    p = Policy.from_strings(["github.com", "domain=*.github.com method=GET"], ["domain=evil.github.com"])
    assert "deny rules win" in p.decide_connection("evil.github.com", 443).suggestion()
    miss = p.decide_request("api.github.com", 443, "POST", "/x")
    assert miss.suggestion() == "--allow 'domain=api.github.com method=POST path=/x'"


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


def test_an_upstream_failure_suggests_no_rule() -> None:
    from proxy.denial import denial_body
    from proxy.rules import Decision

    failed = Decision(False, "a.test", 443, None, "cannot resolve a.test", upstream_failed=True)
    guarded = Decision(False, "a.test", 443, None, "a.test resolves to 10.0.0.1 (use --allow-private)", guarded=True)
    assert failed.suggestion() == ""
    assert guarded.suggestion() == ""
    assert denial_body(failed, "CONNECT a.test:443") == (
        "boundary: CONNECT a.test:443 is allowed, but the upstream could not be reached: cannot resolve a.test.\n"
    )
    assert "To allow" not in denial_body(guarded, "CONNECT a.test:443")


@pytest.mark.parametrize(("path", "shown"), [("/simple/", "/simple/"), ("/simple", "/simple"), ("/", "/"),
                                             ("/a/./b/?q=1", "/a/b/"), ("/a/../", "/")])  # fmt: skip
def test_the_decided_path_keeps_its_trailing_slash(path: str, shown: str) -> None:
    from proxy.rules import Policy

    d = Policy(()).decide_request("a.test", 443, "GET", path)
    assert d.path == shown


@pytest.mark.parametrize(
    ("path", "shown", "as_sent"),
    [
        ("/public/..%2fadmin", "/public/../admin", "/public/..%2fadmin"),  # one segment '../admin', not a climb
        ("/public/../admin", "/admin", "/public/../admin"),
        ("/a/./b/?q=1", "/a/b/", "/a/./b/"),
        ("/a%20b?token=SECRET", "/a b", "/a%20b"),
        ("/simple?token=SECRET#frag", "/simple", None),  # the same as decided: nothing more to say
        ("/bad%ff?token=SECRET", "/bad%ff", None),  # undecodable: the request's own path, still no query
    ],
)
def test_a_decided_path_keeps_the_request_s_own_spelling_but_never_its_query(
    path: str, shown: str, as_sent: str | None
) -> None:
    from proxy.rules import Policy

    for policy in (Policy(()), Policy.from_strings(["domain=a.test path=/public/*"])):
        d = policy.decide_request("a.test", 443, "GET", path)
        assert (d.path, d.raw_path) == (shown, as_sent)
        assert "SECRET" not in repr((d.path, d.raw_path, d.suggestion()))


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("::1", "--allow 'domain=[::1]'"),
        ("fd00::2", "--allow 'domain=[fd00::2]'"),
        ("10.1.2.3", "--allow domain=10.1.2.3"),
    ],
)
def test_an_ipv6_literal_is_suggested_in_brackets_and_the_suggestion_parses_back(host: str, want: str) -> None:
    from proxy.rules import Policy, parse_rule

    d = Policy(()).decide_connection(host, 8080)
    assert d.suggestion() == want
    assert parse_rule(d.suggested_rule()).hosts.matches(host)


# (path, ambiguous?) : what a server could read as another path than the decided one
AMBIGUITY_TABLE = [
    ("/public/..%2fprivate/x", True), ("/public/..%2Fprivate", True), ("/public/%2e%2e%2fprivate", True),
    ("/public/..%5cprivate", True), ("/public/..\\private", True), ("/public/..;/private", True),
    ("/public/..;jsessionid=1/x", True), ("/public/%252e%252e/private", True), ("/public/%252fx", True),
    ("/public/x#/../../private", True), ("/a%2f../b", True),
    # a second review's forms: IIS %u escapes, full-width dots (NFKC), Windows trimming, NUL and tab
    ("/public/%u002e%u002e/admin", True), ("/public/..%u002fadmin", True), ("/public/%ef%bc%8e%ef%bc%8e/admin", True),
    ("/public/..%20/admin", True), ("/public/.../admin", True), ("/public/..%00/admin", True),
    ("/public/.%00./admin", True), ("/public/..%09/admin", True),
    ("/public/file.tar.gz", False), ("/public/caf%c3%a9", False), ("/public/a%20b", False), ("/public/x.", False),
    ("/public/.well-known/x", False), ("/public/%ef%bc%8fetc", False),
    ("/@types%2fnode", False), ("/public/a%2fb", False), ("/a/../b", False), ("/a/./b", False), ("/a;b/c", False),
    ("/a/%2e%2e/b", False), ("/q?x=..%2f&y=#", False), ("/", False), ("", False),
]  # fmt: skip


@pytest.mark.parametrize(("path", "ambiguous"), AMBIGUITY_TABLE)
def test_an_ambiguous_path_is_refused_only_where_a_path_rule_decides(path: str, ambiguous: bool) -> None:
    from proxy.rules import Policy, path_ambiguity

    assert (path_ambiguity(path) is not None) == ambiguous
    ruled = Policy.from_strings(["domain=a.test path=/public/*", "domain=a.test path=/a/*", "domain=a.test path=/*",
                                 "domain=a.test path=/q"])  # fmt: skip
    d = ruled.decide_request("a.test", 443, "GET", path)
    if ambiguous:
        assert not d.allowed
        assert d.reason.startswith("ambiguous path")
    assert Policy.from_strings(["domain=a.test"]).decide_request("a.test", 443, "GET", path).allowed  # no path rule
    assert Policy.from_strings(["domain=a.test method=GET"]).decide_request("a.test", 443, "GET", path).allowed
