"""Denial messages and the connection pin, shared by the front server and the
mitmproxy addon. Pure; no mitmproxy import."""

from __future__ import annotations

from dataclasses import dataclass

from .rules import Decision


@dataclass(frozen=True, slots=True)
class Pin:
    """The name a client connection was decided for; every request on it must match."""

    host: str
    port: int


def denial_body(d: Decision, what: str) -> str:
    hint = d.suggestion()
    if d.upstream_failed:
        return f"boundary: {what} is allowed, but the upstream could not be reached: {d.reason}.\n"
    lines = [f"boundary: {what} was denied ({d.reason})."]
    if d.rule_text:
        lines.append(f"Deciding rule: {d.rule_text}")
    if hint:
        lines.append(f"To allow it: {hint}" if hint.startswith("--allow") else hint[0].upper() + hint[1:] + ".")
    return "\n".join(lines) + "\n"


def http_response(status: int, reason: str, body: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    data = body.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nX-Boundary-Decision: deny\r\nConnection: close\r\n\r\n"
    ).encode() + data
