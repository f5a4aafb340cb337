"""``boundary explain``: the decision for a URL or HOST:PORT, and the deciding rule. Pure."""

from __future__ import annotations

from urllib.parse import urlsplit

from proxy.rules import L4Verdict, Policy, normalize_host
from proxy.sniff import split_authority

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def explain_target(policy: Policy, target: str, method: str | None) -> tuple[bool, str]:
    """(allowed, text); raise ValueError on a malformed target."""
    if "://" in target:
        parts = urlsplit(target)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {target!r} (http, https, ws, wss)")
        if not parts.hostname:
            raise ValueError(f"URL {target!r} has no host")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as e:
            raise ValueError(f"URL {target!r}: {e}") from None
        host = normalize_host(parts.hostname)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        d = policy.decide_request(host, port, method or "GET", path)
        what = f"{d.method} {scheme}://{host}:{port}{d.path}"
    else:
        host_s, port = split_authority(target, None)
        host = normalize_host(host_s)
        verdict, _ = policy.l4(host, port)
        if method is None and verdict is L4Verdict.INSPECT:
            d = policy.decide_connection(host, port)
            lines = [
                f"inspect {host}:{port}",
                "reason  a method/path rule applies; the decision depends on each request (give a URL and --method)",
            ]
            return False, "\n".join(lines)
        d = policy.decide_request(host, port, method, "/") if method else policy.decide_connection(host, port)
        what = f"{method.upper()} {host}:{port}" if method else f"connection {host}:{port}"
    lines = [f"{'allow' if d.allowed else 'deny'}   {what}", f"rule    {d.rule_text or '(none: default deny)'}"]
    lines.append(f"reason  {d.reason}")
    if not d.allowed:
        lines.append(f"hint    {d.suggestion()}")
    return d.allowed, "\n".join(lines)
