"""Secrets the jail can use but never read. Pure: no I/O, no mitmproxy.

Each secret's real value stays in boundary; the jail gets a placeholder of the same length (so a swap never
changes a body's framing), random, recognisable (``boundary-secret-...``). On a request to a host the secret
is bound to, the proxy swaps the placeholder for the real value in header values (inside ``Basic``
credentials too), the URL and, when the secret opts in, the body. Anywhere else the placeholder is a leak;
the real value is a leak everywhere (the jail should never have it). Responses get the real value turned
back into the placeholder.

Bodies are rewritten as they stream (:class:`StreamRewriter`), holding back a fixed number of bytes (never
a large upload); only responses from the hosts a secret is bound to are rewritten (only there can a value be).
"""

from __future__ import annotations

import base64
import binascii
import json
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote_to_bytes

from .rules import HostPattern

PREFIX = "boundary-secret-"
SHORT_PREFIX = "bsecret-"
MIN_LEN = 16  # shorter values cannot have a same-length placeholder that is both recognisable and random enough
_ALPHABET = string.ascii_lowercase + string.digits


def make_placeholder(length: int, choice: Callable[[str], str] | None = None) -> str:
    """A random placeholder of exactly ``length`` characters (at least 8 of them random)."""
    if length < MIN_LEN:
        raise ValueError(f"a secret needs at least {MIN_LEN} characters (this one has {length})")
    if choice is None:
        import secrets  # (hmac, hashlib: only a run that binds secrets pays for them)

        choice = secrets.choice
    prefix = PREFIX if length >= len(PREFIX) + 16 else SHORT_PREFIX
    return prefix + "".join(choice(_ALPHABET) for _ in range(length - len(prefix)))


@dataclass(frozen=True, slots=True)
class Secret:
    name: str
    value: str
    placeholder: str
    hosts: tuple[HostPattern, ...]
    host_texts: tuple[str, ...]  # as given, for messages
    body: bool = False  # swap in request bodies too

    def __post_init__(self) -> None:
        if len(self.placeholder) != len(self.value):
            raise ValueError("a placeholder must have the length of its value")

    def __repr__(self) -> str:  # never the value, in any traceback or log
        return f"Secret({self.name!r}, hosts={self.host_texts!r})"

    def bound_to(self, host: str) -> bool:
        return any(p.matches(host) for p in self.hosts)


@dataclass(frozen=True, slots=True)
class Leak:
    """What a request carried that it must not: ``kind`` is "placeholder" (a secret's stand-in, to a host it is
    not bound to) or "value" (the real value, which the jail should never have)."""

    secret: Secret
    kind: str  # "placeholder" | "value" | "clear" (to a bound host, but without TLS)
    where: str  # "header 'x-api-key'", "the URL", "the body"

    def reason(self) -> str:
        s, where = self.secret, self.where
        if self.kind == "clear":
            return f"secret_leak: the placeholder of {s.name} in {where} over plain HTTP (swapped in over TLS only)"
        if self.kind == "value":
            return (
                f"secret_leak: the real value of {s.name} in {where} (the jail should never have it: "
                "hide the file or variable it came from)"
            )
        return f"secret_leak: the placeholder of {s.name} in {where}; it is bound to {', '.join(s.host_texts)}"


class StreamRewriter:
    """Replaces ``swap`` needles and stops at the first ``detect`` needle, chunk by chunk, the same as on the
    whole body. Called with each chunk and once with b"" at the end (mitmproxy's stream protocol). After a
    detection ``leak`` is set, ``on_leak`` has been called once and nothing more comes out.

    The last ``longest needle - 1`` bytes seen are always held back until more data (or the end) comes, whatever
    they are: holding back only what could begin a needle would tell the sender, by what comes back when, how
    much of a secret its bytes match (a prefix oracle)."""

    def __init__(
        self, swap: dict[bytes, bytes], detect: dict[bytes, Leak], on_leak: Callable[[Leak], None] | None = None
    ) -> None:
        self.swap = swap
        self.detect = detect
        self.needles = sorted({*swap, *detect}, key=len, reverse=True)
        self.hold = max((len(n) for n in self.needles), default=1) - 1
        self.on_leak = on_leak
        self.leak: Leak | None = None
        self._held = b""

    def __call__(self, chunk: bytes) -> bytes:
        if self.leak is not None:
            return b""
        if not self.needles:
            return chunk
        data = self._held + chunk if self._held else chunk
        end = not chunk
        out: list[bytes] = []
        pos = 0
        while True:
            at, needle = _first(data, self.needles, pos)
            if needle is None:
                break
            if needle in self.detect:
                self.leak = self.detect[needle]
                self._held = b""
                if self.on_leak is not None:
                    self.on_leak(self.leak)
                return b""
            out.append(data[pos:at])
            out.append(self.swap[needle])
            pos = at + len(needle)
        keep = 0 if end else min(self.hold, len(data) - pos)
        out.append(data[pos : len(data) - keep])
        self._held = data[len(data) - keep :] if keep else b""
        return b"".join(out)


def _first(data: bytes, needles: Sequence[bytes], start: int) -> tuple[int, bytes | None]:
    """The leftmost occurrence of any needle at or after ``start`` (the longest one at a tie)."""
    best, found = -1, None
    for n in needles:
        i = data.find(n, start)
        if i >= 0 and (best < 0 or i < best):
            best, found = i, n
    return best, found


class SecretSet:
    """The run's secrets, as the proxy uses them."""

    def __init__(self, secrets: Sequence[Secret] = ()) -> None:
        self.secrets = tuple(secrets)
        # what hides the values, by which secrets are bound (not by host: a wildcard binds any number of names)
        self._hidden: dict[tuple[str, ...], dict[bytes, bytes]] = {}

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def bound(self, host: str) -> list[Secret]:
        return [s for s in self.secrets if s.bound_to(host)]

    # -- requests ------------------------------------------------------------
    def scan_text(self, host: str, text: str, where: str, *, swap: bool, tls: bool = True) -> tuple[str, Leak | None]:
        """``text`` with bound placeholders swapped in (when ``swap``), or the first leak it shows: checked as it
        is, percent-decoded, and inside ``Basic`` credentials. Without ``tls`` no value goes out (it would cross
        the network in clear): a bound placeholder is a leak too."""
        forms = _forms(text)
        for s in self.secrets:
            for form in forms:
                if s.value in form:
                    return text, Leak(s, "value", where)
                if s.placeholder in form and not (tls and s.bound_to(host)):
                    return text, Leak(s, "clear" if s.bound_to(host) else "placeholder", where)
        if not swap:
            return text, None
        for s in self.bound(host):
            text = text.replace(s.placeholder, s.value)
            if text[:6].lower() == "basic " and s.placeholder in (decoded := _basic(text) or ""):
                text = text[:6] + base64.b64encode(decoded.replace(s.placeholder, s.value).encode("latin-1")).decode()
        return text, None

    def request_headers(
        self, host: str, headers: Sequence[tuple[str, str]], *, tls: bool = True
    ) -> tuple[list[tuple[str, str]], Leak | None]:
        out = []
        for k, v in headers:
            _, leak = self.scan_text(host, k, f"a header name ({k[:40]!r})", swap=False, tls=tls)
            if leak is None:
                v, leak = self.scan_text(host, v, f"header {k.lower()!r}", swap=True, tls=tls)
            if leak is not None:
                return [], leak
            out.append((k, v))
        return out, None

    def request_body(self, host: str, on_leak: Callable[[Leak], None], *, tls: bool = True) -> StreamRewriter:
        swap: dict[bytes, bytes] = {}
        detect: dict[bytes, Leak] = {}
        for s in self.secrets:
            detect[s.value.encode("latin-1")] = Leak(s, "value", "the body")
            if not s.bound_to(host):
                detect[s.placeholder.encode()] = Leak(s, "placeholder", "the body")
            elif not tls:
                detect[s.placeholder.encode()] = Leak(s, "clear", "the body")
            elif s.body:
                swap[s.placeholder.encode()] = s.value.encode("latin-1")
        return StreamRewriter(swap, detect, on_leak)

    # -- responses -----------------------------------------------------------
    def _hiding(self, host: str) -> dict[bytes, bytes]:
        """The values of the secrets bound to ``host`` (only they are ever sent there), as they are and in the
        encodings an echo commonly uses, to what the placeholder looks like there (same length: framing holds)."""
        bound = self.bound(host)
        key = tuple(s.name for s in bound)
        out = self._hidden.get(key)
        if out is None:
            out = {}
            for s in bound:
                value, placeholder = s.value.encode("latin-1"), s.placeholder.encode()
                for form, stand_in in zip(_encoded_forms(value), _encoded_forms(placeholder), strict=True):
                    out.setdefault(form, stand_in if len(stand_in) == len(form) else _filler(placeholder, len(form)))
            self._hidden[key] = out
        return out

    def response_text(self, host: str, text: str) -> str:
        for value, placeholder in self._hiding(host).items():
            text = text.replace(value.decode("latin-1"), placeholder.decode())
        return text

    def response_body(self, host: str) -> StreamRewriter:
        return StreamRewriter(self._hiding(host), {})


def _filler(placeholder: bytes, n: int) -> bytes:
    return (placeholder * (n // len(placeholder) + 1))[:n]


def _encoded_forms(value: bytes) -> list[bytes]:
    """``value`` as it is, percent-encoded (both ways, and every byte), JSON-escaped (also Go's way: <, > and & as
    \\u00XX, and every character), hex, and base64 (standard and URL-safe) at each alignment: the forms an echoing
    server commonly sends back."""
    text = value.decode("latin-1")
    forms = [value, quote(text, safe="").encode(), quote_plus(text, safe="").encode(), quote(text).encode()]
    escaped = json.dumps(text)[1:-1]
    go = escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    forms += [escaped.encode(), go.encode(), escaped.replace("/", "\\/").encode(), go.replace("/", "\\/").encode()]
    hexed = value.hex()
    forms += [hexed.encode(), hexed.upper().encode()]  # hex, and every byte percent- or \\u-escaped
    forms += ["".join(f"%{b:02X}" for b in value).encode(), "".join(f"%{b:02x}" for b in value).encode()]
    forms += ["".join(f"\\u{b:04x}" for b in value).encode()]
    for k, skip in ((0, 0), (1, 2), (2, 3)):
        n = k + len(value)
        end = 4 * (n // 3) + (n % 3)  # a trailing 1 (2) byte(s) give 1 (2) whole characters
        std = base64.b64encode(b"\0" * k + value)[skip:end]
        forms += [std, std.replace(b"+", b"-").replace(b"/", b"_")]
    return forms


def _basic(text: str) -> str | None:
    try:
        return base64.b64decode(text[6:].strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None


def _forms(text: str) -> list[str]:
    forms = [text]
    if "%" in text:
        forms.append(unquote_to_bytes(text).decode("latin-1"))
    if text[:6].lower() == "basic " and (decoded := _basic(text)) is not None:
        forms.append(decoded)
    return forms
