"""Allowlist grammar, host normalisation and matching. Pure: no I/O, no mitmproxy.

A rule is space-separated ``key=value`` pairs (coder/boundary-compatible):

=========  ==================================================================
key        value
=========  ==================================================================
domain     ``github.com`` exact; ``*.github.com`` one or more labels below,
           never the apex; ``.github.com`` the apex and everything below;
           a ``*`` label in the middle matches exactly one label; IP
           literals (``10.0.0.1``, ``::1``, ``[::1]``) and CIDRs
           (``10.0.0.0/8``). A bare token (no ``=``) is a domain.
port       comma list of ports or ranges (``443,8000-8100``); none = any
method     comma list, case-insensitive; ``*`` = any
path       comma list of ``/``-separated patterns; ``*`` is a whole segment:
           in the middle exactly one segment, at the end one or more;
           ``path=*`` is any path. ``?`` and ``#`` are refused: the query
           is never matched, so a query in a rule would silently widen it
=========  ==================================================================

Default deny; a deny rule that matches wins over any allow rule; every
decision carries the raw text of the rule that decided it. A rule that
matches every request is refused. A denial for the apex or a name below an
allowed name also offers the ``.name`` form in its hint.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import idna

__all__ = [
    "Action",
    "Decision",
    "HostPattern",
    "L4Verdict",
    "Policy",
    "Rule",
    "normalize_host",
    "normalize_path",
    "parse_rule",
]

_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_KEYS = ("domain", "port", "method", "path")
_OLD_METHOD_RE = re.compile(r"^(?:\*|[A-Z]+(?:,[A-Z]+)*)$")  # the METHOD of an old-style "METHOD domain" rule
_GRAMMAR = (
    "a rule is space-separated key=value pairs (domain=, port=, method=, path=) and a bare word is short for domain="
)
MAX_HOST_LEN = 253


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


class L4Verdict(enum.Enum):
    """What can be decided from host and port alone."""

    ALLOW = "allow"  # allowed whatever the method/path: relay without looking inside
    DENY = "deny"  # denied whatever the method/path
    INSPECT = "inspect"  # a method/path rule applies: the flow must be seen at L7


def normalize_host(host: str) -> str:
    """Lowercase, strip one trailing dot and brackets, IDNA-encode; raise ValueError.

    IP literals come back in their canonical text form (``::1``, ``10.0.0.1``).
    """
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h.endswith("."):
        h = h[:-1]
    if not h:
        raise ValueError("empty host name")
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if len(h) > MAX_HOST_LEN * 4:
        raise ValueError(f"host name too long: {h[:40]!r}...")
    if h.isascii():
        h = h.lower()
    else:
        try:
            h = idna.encode(h, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise ValueError(f"invalid international host name {h!r}: {e}") from e
    if len(h) > MAX_HOST_LEN:
        raise ValueError(f"host name longer than {MAX_HOST_LEN} characters")
    for label in h.split("."):
        if not _LABEL_RE.match(label):
            raise ValueError(f"invalid host name {h!r}: bad label {label!r}")
    return h


def _decode_segments(path: str) -> list[str]:
    """Split before decoding (``%2F`` stays inside its segment), then resolve dot segments."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    out: list[str] = []
    for raw in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        seg = unquote(raw, errors="strict") if "%" in raw else raw
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return out


_DOTS = (".", "..")
_HIDDEN = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_IIS_U = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)


def path_ambiguity(path: str) -> str | None:
    """Why a server could read ``path`` as another path than the one decided (None when it could not): a dot
    segment next to a slash or backslash hidden by percent-encoding ('..%2f', which is one segment here and a
    climb to a server that decodes first), a backslash (a separator to Windows servers), a dot segment with
    parameters ('..;', which Tomcat reads as '..'), a double-encoded dot or separator ('%252e'), a raw '#' (no
    request target holds one; servers differ on where the path ends)."""
    path = path.split("?", 1)[0]
    if "#" in path:
        return "a '#' in the request target"
    if _IIS_U.search(path):
        return "a %u escape (IIS decodes it)"
    for raw in path.split("/"):
        seg = unquote(raw, errors="replace") if "%" in raw else raw
        if seg in _DOTS:
            continue
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in seg):
            return f"the segment {raw[:60]!r} holds a control character (servers cut or drop it)"
        forms = (seg, unicodedata.normalize("NFKC", seg)) if not seg.isascii() else (seg,)
        for form in forms:  # (NFKC: a full-width dot or slash is one to a server that normalises)
            for part in re.split(r"[/\\]", form):
                bare = part.split(";", 1)[0]
                if bare in _DOTS or (bare and not bare.strip(" .")):  # '..;x', '...', '.. ' (Windows trims)
                    if part != seg or form != seg:
                        return f"the segment {raw[:60]!r} holds a dot segment in disguise"
                    return f"the segment {raw[:60]!r} is dots and spaces (Windows servers trim them)"
        if _HIDDEN.search(seg):
            return f"the segment {raw[:60]!r} is percent-encoded twice"
    return None


def normalize_path(path: str) -> str:
    """The canonical form a path rule is matched against (decoded, dots resolved)."""
    return "/" + "/".join(_decode_segments(path))


@dataclass(frozen=True, slots=True)
class HostPattern:
    """One ``domain=`` value. ``kind`` is exact | below | apex_below | labels | ip | cidr."""

    kind: str
    labels: tuple[str, ...] = ()
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, value: str) -> HostPattern:
        v = value.strip()
        if v in ("", "*", "*.", ".", "**"):
            raise ValueError("a pattern that matches every host is not allowed; name a domain, e.g. '*.example.com'")
        if "/" in v:
            try:
                return cls("cidr", network=ipaddress.ip_network(v.strip("[]"), strict=False))
            except ValueError as e:
                raise ValueError(f"invalid CIDR {v!r}: {e}") from e
        bare = v[1:-1] if v.startswith("[") and v.endswith("]") else v
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            pass
        else:
            return cls("ip", network=ipaddress.ip_network(ip))
        if v.startswith("."):
            return cls("apex_below", cls._labels(v[1:], value))
        if v.startswith("*."):
            return cls("below", cls._labels(v[2:], value))
        labels = cls._labels(v, value, wildcards=True)
        return cls("labels" if "*" in labels else "exact", labels)

    @staticmethod
    def _labels(name: str, original: str, *, wildcards: bool = False) -> tuple[str, ...]:
        parts = name[:-1].split(".") if name.endswith(".") else name.split(".")
        if any("*" in p and p != "*" for p in parts):
            raise ValueError(f"{original!r}: '*' must be a whole label")
        if parts[-1] == "*":
            raise ValueError(f"{original!r} ends in '*': the top-level label must be literal")
        if "*" in parts and not wildcards:
            raise ValueError(f"{original!r}: '*' is allowed as a leading label or a whole middle label only")
        fixed = ".".join(p for p in parts if p != "*")
        try:
            norm = normalize_host(fixed) if fixed else ""
        except ValueError as e:
            raise ValueError(f"invalid domain {original!r}: {e}") from e
        it = iter(norm.split("."))
        return tuple("*" if p == "*" else next(it) for p in parts)

    def matches(self, host: str) -> bool:
        """``host`` must already be normalised (see :func:`normalize_host`)."""
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        parts = host.split(".")
        n = len(self.labels)
        if self.kind == "exact":
            return tuple(parts) == self.labels
        if self.kind == "apex_below":
            return len(parts) >= n and tuple(parts[-n:]) == self.labels
        if self.kind == "below":
            return len(parts) > n and tuple(parts[-n:]) == self.labels
        # "labels": a leading "*" is one or more labels, a middle "*" exactly one
        lead = self.labels[0] == "*"
        tail = self.labels[1:] if lead else self.labels
        if (lead and len(parts) <= len(tail)) or (not lead and len(parts) != len(tail)):
            return False
        return all(p == "*" or p == h for p, h in zip(tail, parts[-len(tail) :], strict=True))

    @property
    def is_literal_name(self) -> bool:
        return self.kind == "exact"

    def dot_form_for(self, host: str) -> str | None:
        """The name ``N`` when ``host`` is not matched but ``.N`` would match it and this pattern is
        ``N`` (host below it) or ``*.N`` (host is its apex); else None. ``host`` normalised."""
        if self.kind not in ("exact", "below") or self.matches(host):
            return None
        name = ".".join(self.labels)
        return name if host == name or host.endswith("." + name) else None


@dataclass(frozen=True, slots=True)
class PathPattern:
    raw: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, value: str) -> PathPattern:
        cut = min((i for i in (value.find("?"), value.find("#")) if i >= 0), default=-1)
        if cut >= 0 and value[cut] == "?":
            raise ValueError(
                f"path {value!r} has a query ({value[cut:]!r}): the query is never matched, "
                "so this rule would allow any query; remove it"
            )
        if cut >= 0:
            raise ValueError(
                f"path {value!r} has a fragment ({value[cut:]!r}): a fragment is never sent to a server; remove it"
            )
        if not value.startswith("/"):
            raise ValueError(f"path {value!r} must start with '/'")
        try:
            segs = tuple(_decode_segments(value))
        except UnicodeDecodeError as e:
            raise ValueError(f"path {value!r} has invalid percent-encoding") from e
        for s in segs:
            if "*" in s and s != "*":
                raise ValueError(f"path {value!r}: '*' must be a whole segment")
        return cls(value, segs)

    def matches(self, segments: Sequence[str]) -> bool:
        pat = self.segments
        if pat and pat[-1] == "*":
            head = pat[:-1]
            if len(segments) <= len(head):
                return False
        elif len(segments) != len(pat):
            return False
        else:
            head = pat
        return all(p == "*" or p == s for p, s in zip(head, segments, strict=False))


def _parse_ports(value: str) -> frozenset[int]:
    ports: set[int] = set()
    for item in value.split(","):
        item = item.strip()
        lo_s, sep, hi_s = item.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise ValueError(f"port {item!r} is not a number or a range like 8000-8100") from None
        if not (1 <= lo <= hi <= 65535):
            raise ValueError(f"port {item!r} is outside 1-65535")
        if hi - lo > 65535:
            raise ValueError(f"port range {item!r} is too large")
        ports.update(range(lo, hi + 1))
    return frozenset(ports)


def _parse_methods(value: str) -> frozenset[str] | None:
    methods = set()
    for m in value.split(","):
        m = m.strip()
        if m == "*":
            return None
        if not _TOKEN_RE.match(m):
            raise ValueError(f"method {m!r} is not an HTTP method token")
        methods.add(m.upper())
    return frozenset(methods)


@dataclass(frozen=True, slots=True)
class Rule:
    raw: str
    action: Action
    hosts: HostPattern | None = None  # None: any host (only with another key)
    ports: frozenset[int] | None = None
    methods: frozenset[str] | None = None
    paths: tuple[PathPattern, ...] | None = None

    @property
    def is_l7(self) -> bool:
        return self.methods is not None or self.paths is not None

    @property
    def flag(self) -> str:
        return f"--{self.action.value} {quote_rule(self.raw)}"

    def matches_l4(self, host: str, port: int) -> bool:
        return (self.hosts is None or self.hosts.matches(host)) and (self.ports is None or port in self.ports)

    def matches_l7(self, method: str, segments: Sequence[str]) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.paths is None or any(p.matches(segments) for p in self.paths)


def quote_rule(raw: str) -> str:
    return f"'{raw}'" if any(c in raw for c in " \t*?[]$&;|<>()\"'\\") else raw


def parse_rule(text: str, action: Action = Action.ALLOW) -> Rule:
    """Parse one rule; raise ValueError(``invalid rule '<text>': <why>``)."""
    raw = " ".join(text.split())
    try:
        return _parse_rule(raw, action)
    except ValueError as e:
        raise ValueError(f"invalid rule {text!r}: {e}") from None


def _parse_rule(raw: str, action: Action) -> Rule:
    if not raw:
        raise ValueError("empty rule; an empty rule would match everything")
    seen: dict[str, str] = {}
    bare = False  # the domain came from a bare word
    for tok in raw.split(" "):
        key, sep, value = tok.partition("=")
        if not sep:
            key, value = "domain", tok
        key = key.lower()
        if key not in _KEYS:
            raise ValueError(f"unknown key {key!r} (known: {', '.join(_KEYS)})")
        if key == "domain" and key in seen and (bare or not sep):
            raise ValueError(_two_domains(raw, seen["domain"], value))
        if key in seen:
            if key == "domain":
                raise ValueError("key 'domain' given twice; a rule names one domain, give one rule per domain")
            raise ValueError(f"key {key!r} given twice; use a comma list instead")
        if not value:
            raise ValueError(f"key {key!r} has an empty value")
        seen[key] = value
        bare = bare or (key == "domain" and not sep)
    if "domain" not in seen and action is Action.ALLOW:
        raise ValueError("an allow rule needs a domain (e.g. 'domain=example.com')")
    paths = None
    if "path" in seen:
        items = [p.strip() for p in seen["path"].split(",")]
        parsed = tuple(PathPattern.parse(p) for p in items if p != "*")
        paths = None if "*" in items else parsed  # '*' is any path: nothing to inspect
    rule = Rule(
        raw=raw,
        action=action,
        hosts=HostPattern.parse(seen["domain"]) if "domain" in seen else None,
        ports=_parse_ports(seen["port"]) if "port" in seen else None,
        methods=_parse_methods(seen["method"]) if "method" in seen else None,
        paths=paths,
    )
    if rule.hosts is None and rule.ports is None and not rule.is_l7:
        raise ValueError("this rule matches every request ('*' is any); name a domain, port, method or path")
    return rule


def _two_domains(raw: str, first: str, second: str) -> str:
    """The error for a rule with two domains where one is a bare word, e.g. old-style ``GET *google.com``."""
    why = f"{first!r} and {second!r} are both read as a domain: {_GRAMMAR}"
    out: list[str] = []
    domains = 0
    for tok in raw.split(" "):
        if "=" in tok:
            out.append(tok)
        elif _OLD_METHOD_RE.match(tok):
            out.append(f"method={tok}")
        else:
            host, slash, path = tok.partition("/")
            if host.startswith("*") and not host.startswith("*."):
                host = "." + host[1:].lstrip(".")  # '*google.com' -> '.google.com': the name and below
            out.append(f"domain={host}" + (f" path=/{path}" if slash else ""))
            domains += 1
    if domains + sum(t.lower().startswith("domain=") for t in raw.split(" ")) == 1:
        return f"{why}; the old 'METHOD domain' form is not supported, write {' '.join(out)!r}"
    return f"{why}; a rule names one domain, give one rule per domain"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    host: str
    port: int
    rule: Rule | None
    reason: str
    method: str | None = None
    path: str | None = None
    l7_miss: bool = False  # an allow rule named this host/port, but not this method/path
    dot_form: str | None = None  # N when an allow rule names N or *.N and '.N' would cover this host
    upstream_failed: bool = False  # allowed by the rules, but the upstream could not be reached
    guarded: bool = False  # allowed by the rules, but the name resolves to a private address (--allow-private)
    secret: str | None = None  # denied because it carried this secret where it must not go (event secret_leak)
    learned: bool = False  # --learn: no allow rule matches, allowed anyway and recorded
    raw_path: str | None = None  # the path as the request spelled it, where that differs from ``path`` (decoded)

    def learn(self) -> Decision:
        """This denial, allowed as --learn does (a deny rule's denial, a leak or a guard stays as it is)."""
        if self.allowed or self.rule is not None or self.secret or self.guarded or self.upstream_failed:
            return self
        return dataclasses.replace(self, allowed=True, reason=f"learn mode: {self.reason}; allowed", learned=True)

    @property
    def rule_text(self) -> str | None:
        return self.rule.raw if self.rule else None

    def suggestion(self) -> str:
        """The flag that would let this through, or how to unblock it."""
        if (self.allowed and not self.learned) or self.upstream_failed or self.guarded or self.secret:
            return ""  # no rule would change it
        if self.rule is not None and self.rule.action is Action.DENY:
            return f"denied by {self.rule.flag}; deny rules win, remove it to allow"
        hint = f"--allow {quote_rule(self.suggested_rule())}"
        if self.dot_form is not None and not self.l7_miss:
            n = self.dot_form
            hint += f" (or --allow domain=.{n} for {n} and every name below it)"
        return hint

    def suggested_rule(self) -> str:
        """The allow rule that would let this through (the host; its method and path when an allow rule names
        the host but not them)."""
        parts = [f"domain=[{self.host}]" if ":" in self.host else f"domain={self.host}"]  # README's IPv6 form
        if self.l7_miss and self.method is not None:
            parts.append(f"method={self.method.upper()}")
            if self.path is not None:
                parts.append(f"path={self.path}")
        return " ".join(parts)


class Policy:
    """An ordered set of allow and deny rules, parsed once."""

    def __init__(self, rules: Iterable[Rule], inspect: Iterable[HostPattern] = (), *, learn: bool = False) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._deny = tuple(r for r in self.rules if r.action is Action.DENY)
        self._allow = tuple(r for r in self.rules if r.action is Action.ALLOW)
        self.inspect = tuple(inspect)  # hosts seen at L7 whatever the rules say (a secret is bound to them)
        self.learn = learn  # what no allow rule matches is allowed, and its decision says so (--learn)

    @classmethod
    def from_strings(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> Policy:
        return cls([*(parse_rule(a, Action.ALLOW) for a in allow), *(parse_rule(d, Action.DENY) for d in deny)])

    def l4(self, host: str, port: int) -> tuple[L4Verdict, Rule | None]:
        """Decide from host and port alone. ``host`` must be normalised."""
        verdict, rule = self._l4(host, port)
        if self.learn and verdict is L4Verdict.DENY and rule is None:
            return L4Verdict.ALLOW, None
        return verdict, rule

    def _l4(self, host: str, port: int) -> tuple[L4Verdict, Rule | None]:
        for r in self._deny:
            if r.matches_l4(host, port) and not r.is_l7:
                return L4Verdict.DENY, r
        deny_l7 = any(r.is_l7 and r.matches_l4(host, port) for r in self._deny)
        allows = [r for r in self._allow if r.matches_l4(host, port)]
        if not allows:
            return L4Verdict.DENY, None
        if deny_l7:
            return L4Verdict.INSPECT, None
        for r in allows:
            if not r.is_l7:
                if any(p.matches(host) for p in self.inspect):
                    return L4Verdict.INSPECT, r
                return L4Verdict.ALLOW, r
        return L4Verdict.INSPECT, None

    def _path_decides(self, host: str, port: int) -> bool:
        """Some rule for this host and port names paths: how a server reads the path matters."""
        return any(r.paths is not None and r.matches_l4(host, port) for r in self.rules)

    def _dot_form(self, host: str) -> str | None:
        """The closest allowed name whose ``.name`` form would cover ``host`` (see HostPattern.dot_form_for)."""
        names = [n for r in self._allow if r.hosts is not None and (n := r.hosts.dot_form_for(host))]
        return max(names, key=len, default=None)

    def needs_inspection(self, host: str, port: int) -> bool:
        return self.l4(host, port)[0] is L4Verdict.INSPECT

    def decide_connection(self, host: str, port: int) -> Decision:
        """A decision for an opaque connection (no L7 view): INSPECT counts as denied."""
        d = self._decide_connection(host, port)
        return d.learn() if self.learn else d

    def _decide_connection(self, host: str, port: int) -> Decision:
        verdict, rule = self._l4(host, port)
        if verdict is L4Verdict.ALLOW:
            return Decision(True, host, port, rule, "allowed by rule")
        if verdict is L4Verdict.INSPECT:
            why = "a secret is bound to this host" if rule is not None else "a method/path rule applies"
            return Decision(False, host, port, None, f"{why} but the connection cannot be inspected")
        if rule is not None:
            return Decision(False, host, port, rule, "matched a deny rule")
        return Decision(False, host, port, None, "no allow rule matches", dot_form=self._dot_form(host))

    def decide_request(self, host: str, port: int, method: str, path: str) -> Decision:
        """A decision for one HTTP request. ``host`` normalised; ``path`` raw (may hold a query)."""
        d = self._decide_request(host, port, method, path)
        return d.learn() if self.learn else d

    def _decide_request(self, host: str, port: int, method: str, path: str) -> Decision:
        method = method.upper()
        raw = path.split("?", 1)[0].split("#", 1)[0]  # (never the query: it may hold a token)
        try:
            segments = _decode_segments(path)
        except UnicodeDecodeError:
            return Decision(False, host, port, None, "undecodable percent-encoding in path", method, raw)
        shown = "/" + "/".join(segments)
        if segments and raw.endswith("/"):
            shown += "/"  # as asked: /simple/ is not /simple to the server (matching ignores it)
        # the decided form hides what was sent (a segment '..%2fx' shows as '../x'): the request's own with it
        as_sent = raw if raw != shown else None
        if (why := path_ambiguity(path)) and self._path_decides(host, port):
            return Decision(False, host, port, None, f"ambiguous path: {why}; a server could read it as another "
                            "path than the one the rules decided on", method, shown, raw_path=as_sent)  # fmt: skip
        for r in self._deny:
            if r.matches_l4(host, port) and r.matches_l7(method, segments):
                return Decision(False, host, port, r, "matched a deny rule", method, shown, raw_path=as_sent)
        for r in self._allow:
            if r.matches_l4(host, port) and r.matches_l7(method, segments):
                return Decision(True, host, port, r, "allowed by rule", method, shown, raw_path=as_sent)
        l7_miss = any(r.matches_l4(host, port) for r in self._allow)
        dot = None if l7_miss else self._dot_form(host)
        return Decision(False, host, port, None, "no allow rule matches", method, shown, l7_miss, dot,
                        raw_path=as_sent)  # fmt: skip
