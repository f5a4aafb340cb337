"""--learn in the pure policy: what no allow rule matches is allowed and marked; deny rules still deny."""

from __future__ import annotations

import pytest

from jail.auditview import yaml_allowlist
from proxy.rules import Action, L4Verdict, Policy, parse_rule

RULES = [parse_rule("api.test"), parse_rule("domain=docs.test method=GET"), parse_rule("bad.test", Action.DENY)]
STRICT, LEARN = Policy(RULES), Policy(RULES, learn=True)


@pytest.mark.parametrize(
    ("host", "method", "strict", "learned", "rule"),
    [
        ("api.test", "GET", True, False, None),
        ("new.test", "GET", False, True, "domain=new.test"),
        ("docs.test", "POST", False, True, "domain=docs.test method=POST path=/x"),
        ("bad.test", "GET", False, False, None),  # a deny rule still wins
    ],
)
def test_learn(host: str, method: str, strict: bool, learned: bool, rule: str | None) -> None:
    assert STRICT.decide_request(host, 443, method, "/x").allowed is strict
    d = LEARN.decide_request(host, 443, method, "/x")
    assert d.allowed is (strict or learned)
    assert d.learned is learned
    if rule is not None:
        assert d.suggested_rule() == rule
        assert d.reason.startswith("learn mode:")


def test_learn_at_l4() -> None:
    assert LEARN.l4("new.test", 443)[0] is L4Verdict.ALLOW
    assert LEARN.l4("bad.test", 443)[0] is L4Verdict.DENY
    assert LEARN.decide_connection("new.test", 22).learned


def test_the_suggested_config_is_yaml() -> None:
    import yaml

    text = yaml_allowlist("r1", ["api.test", "domain=docs.test method=POST path=/x", "api.test"])
    assert yaml.safe_load(text) == {"allowlist": ["api.test", "domain=docs.test method=POST path=/x"]}
