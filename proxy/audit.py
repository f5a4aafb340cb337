"""Audit sink: one JSON line per decision, written by a background thread so the
proxy never blocks on the disk; denials echoed once to stderr; an exit summary.

A full disk, a closed pipe or a full queue degrades to stderr with one warning,
never to an allow: the decision is made before it is recorded.
Side effects: appends to the audit file, writes to stderr.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from .rules import Decision

FIELDS = (
    "ts", "event", "decision", "host", "port", "scheme", "method", "path", "rule", "reason",
    "bytes_up", "bytes_down", "duration_ms", "mode", "run_id",
)  # fmt: skip
QUEUE_MAX = 10000
HOLD_MAX = 50  # denial lines kept for the end of a run while the command owns the terminal
DNS_SEEN_MAX = 65536
_STOP = object()


def printable(text: str) -> str:
    """``text`` with control characters (and backslashes) escaped, for one line on a terminal."""
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode() for c in text)


class AuditSink:
    def __init__(
        self,
        path: Path | None,
        *,
        run_id: str,
        mode: str,
        stderr: IO[str] | None = None,
        quiet: bool = False,
        hold: bool = False,
    ) -> None:
        self.path = path
        # the command owns the terminal (a full-screen program): denial lines wait for the end of the run
        self.hold = hold
        self._held: list[str] = []
        self._held_over = 0
        self.run_id = run_id
        self.mode = mode
        self.quiet = quiet
        self._stderr = stderr or sys.stderr
        self._lock = threading.Lock()
        self._shown: set[tuple[str, int, str]] = set()
        self._dns_seen: set[tuple[str, int]] = set()
        self.allowed = 0
        self.denied = 0
        self.denied_hosts: collections.Counter[str] = collections.Counter()
        self.learned: dict[str, None] = {}  # --learn: the allow rules a strict run would have needed, in order
        self._degraded = False
        self._file: IO[str] | None = None
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # never through a symlink someone put where the log goes (it would append records to its target)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as e:
                self._degraded = True  # records go to stderr, as README promises; never to an allow
                self._write_err(f"boundary: warning: cannot open audit log {path}: {e.strerror}; audit records "
                                "go to stderr")  # fmt: skip
                fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            self._file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
            self._thread = threading.Thread(target=self._writer, name="boundary-audit", daemon=True)
            self._thread.start()

    # -- recording ---------------------------------------------------------
    def decision(
        self,
        d: Decision,
        *,
        event: str,
        scheme: str,
        bytes_up: int = 0,
        bytes_down: int = 0,
        duration_ms: float = 0.0,
        reason: str | None = None,
        announce: bool = True,
    ) -> None:
        """Record a decision (call once per decision, at its end for allowed flows)."""
        rec: dict[str, Any] = {
            "ts": time.time(),
            "event": event,
            "decision": "allow" if d.allowed else "deny",
            "host": d.host,
            "port": d.port,
            "scheme": scheme,
            "method": d.method,
            "path": d.path,
            "rule": d.rule_text,
            "reason": reason or d.reason,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "duration_ms": round(duration_ms, 3),
            "mode": self.mode,
            "run_id": self.run_id,
        }
        if d.raw_path is not None:  # as sent, beside the decided form (both without the query)
            rec["raw_path"] = d.raw_path
        if d.secret is not None:  # the name only, never a value
            rec["secret"] = d.secret
        if (not d.allowed or d.learned) and (hint := d.suggestion()):
            rec["hint"] = hint  # what would allow it (boundary audit shows it)
        if d.learned:
            rec["learn"] = True
            with self._lock:
                self.learned.setdefault(d.suggested_rule(), None)
        with self._lock:
            if d.allowed:
                self.allowed += 1
            else:
                self.denied += 1
                self.denied_hosts[d.host] += 1
        if not d.allowed and announce:
            self._announce(d, rec["reason"], scheme)
        self.record(rec)

    def dns(self, name: str, qtype: int, address: str | None) -> None:
        """A query the jail's DNS responder answered itself (never forwarded); first one per (name, type)."""
        with self._lock:
            if (name, qtype) in self._dns_seen or len(self._dns_seen) >= DNS_SEEN_MAX:
                return
            self._dns_seen.add((name, qtype))
        if address:
            reason = f"answered locally with fake address {address}; no upstream query"
        else:
            reason = f"empty answer for query type {qtype}; no upstream query"
        rec: dict[str, Any] = dict.fromkeys(FIELDS)
        rec.update(ts=time.time(), event="dns", decision="allow", host=name, port=53, scheme="dns", reason=reason)
        rec.update(bytes_up=0, bytes_down=0, duration_ms=0.0, mode=self.mode, run_id=self.run_id)
        self.record(rec)

    def socket_refused(self, what: str, why: str) -> None:
        """A socket call the jail's socket supervisor refused (an outside unix socket, a TCP connect that
        bypassed the proxy): audited as event ``socket``, announced once per ``what``."""
        # names the jail chose: no terminal control sequences on the user's stderr
        line = f"boundary: denied {what} ({why})"  # escaped once, by _say
        what, why = printable(what), printable(why)
        rec: dict[str, Any] = dict.fromkeys(FIELDS)
        rec.update(ts=time.time(), event="socket", decision="deny", host=what, port=0, scheme="unix", reason=why)
        rec.update(bytes_up=0, bytes_down=0, duration_ms=0.0, mode=self.mode, run_id=self.run_id)
        with self._lock:
            self.denied += 1
            self.denied_hosts[what] += 1
            fresh = (what, 0, "") not in self._shown and not self.quiet
            self._shown.add((what, 0, ""))
        if fresh:
            self._say(line)
        self.record(rec)

    def record(self, rec: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            self._degrade("audit queue full", rec)

    def _announce(self, d: Decision, reason: str, scheme: str) -> None:
        """One line on stderr, with what the jail chose (a decoded path, a name) escaped: no control sequences
        reach the user's terminal."""
        key = (d.host, d.port, d.method or "")
        with self._lock:
            if key in self._shown or self.quiet:
                return
            self._shown.add(key)
        if d.method:
            what = f"{d.method} {scheme}://{d.host}:{d.port}{d.path or ''}"
        else:
            what = f"{scheme.upper() if scheme == 'connect' else scheme} {d.host}:{d.port}"
        if d.upstream_failed:
            self._say(f"boundary: {what} is allowed, but the upstream failed: {reason}")
            return
        hint = d.suggestion()
        self._say(f"boundary: denied {what} ({reason}){'; to allow: ' + hint if hint else ''}")

    def _say(self, line: str) -> None:
        """A denial line: now, or (``hold``) kept for the end of the run, at most HOLD_MAX of them."""
        line = printable(line)
        if not self.hold:
            self._write_err(line)
            return
        with self._lock:
            if len(self._held) < HOLD_MAX:
                self._held.append(line)
            else:
                self._held_over += 1

    def held(self) -> list[str]:
        """The denial lines kept while the command had the terminal (and how many more there were)."""
        with self._lock:
            lines, over = self._held, self._held_over
            self._held, self._held_over = [], 0
        return lines + ([f"boundary: ... and {over} more (see the audit log)"] if over else [])

    # -- writer thread -----------------------------------------------------
    def _writer(self) -> None:
        assert self._file is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            line = json.dumps(item, separators=(",", ":"))
            if self._degraded:
                self._write_err(f"boundary audit: {line}")
                continue
            try:
                self._file.write(line + "\n")
                if self._queue.empty():
                    self._file.flush()
            except (OSError, ValueError) as e:
                self._degrade(f"cannot write audit log {self.path}: {e}", item)

    def _degrade(self, why: str, rec: object) -> None:
        with self._lock:
            first = not self._degraded
            self._degraded = True
        if first:
            self._write_err(f"boundary: warning: {why}; audit records go to stderr from now on")
        self._write_err(f"boundary audit: {json.dumps(rec, separators=(',', ':'))}")

    def _write_err(self, line: str) -> None:
        try:
            self._stderr.write(line + "\n")
            self._stderr.flush()
        except (OSError, ValueError):
            pass

    # -- end ---------------------------------------------------------------
    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:
                self._write_err(f"boundary: warning: closing audit log {self.path}: {e}")
            self._file = None

    def summary(self) -> str | None:
        """One line when anything was denied, else None."""
        if not self.denied:
            return None
        top = ", ".join(f"{h} ({n})" for h, n in self.denied_hosts.most_common(3))
        where = f"; audit log: {self.path}" if self.path else ""
        return f"boundary: {self.allowed} allowed, {self.denied} denied; top denied: {top}{where}"
