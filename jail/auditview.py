"""``boundary audit``: the audit log for people (denials first, grouped by host, each with the ``--allow`` that
would permit it) and for machines (``--json``). Pure but for :func:`read` and :func:`follow`.

A run is the records sharing a ``run_id``; the default is the last run in the log. Lines that are not JSON
objects (a log cut short by a full disk) are skipped.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.audit import printable

Record = dict[str, Any]
FOLLOW_POLL = 0.2  # seconds between looks at a log that has not grown


class AuditViewError(ValueError):
    pass


def read(path: Path) -> list[Record]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise AuditViewError(
            f"no audit log at {path} yet (boundary run writes it; --audit-log PATH names another)"
        ) from None
    except OSError as e:
        raise AuditViewError(f"failed to read the audit log {path}: {e.strerror}") from None
    return list(parse_lines(text.splitlines()))


def parse_lines(lines: Iterable[str]) -> Iterator[Record]:
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("run_id"), str):
            yield rec


def select(records: list[Record], run: str | None) -> tuple[str, list[Record]]:
    """The records of ``run`` (a run id or a unique prefix of one), or of the last run when None."""
    ids = list(dict.fromkeys(r["run_id"] for r in records))
    if not ids:
        raise AuditViewError("the audit log has no runs yet")
    if run is None:
        chosen = ids[-1]
    else:
        found = [i for i in ids if i.startswith(run)]
        if len(found) != 1:
            what = "no run" if not found else f"{len(found)} runs"
            raise AuditViewError(f"{what} in the audit log match {run!r} (known: {', '.join(ids[-5:])})")
        chosen = found[0]
    return chosen, [r for r in records if r["run_id"] == chosen]


@dataclass
class HostGroup:
    host: str
    port: int | None
    count: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    hints: list[str] = field(default_factory=list)
    what: list[str] = field(default_factory=list)  # a few of the requests (method + path) or events


def _key(r: Record) -> tuple[str, int | None]:
    port = r.get("port")
    return str(r.get("host")), port if isinstance(port, int) and port else None


def group(records: Iterable[Record], decision: str) -> list[HostGroup]:
    """Records with ``decision`` (allow, deny, or learned: allowed only by --learn), by host and port, the most
    frequent first. DNS answers (every name the jail looked up) are left out: they are not decisions to change."""
    groups: dict[tuple[str, int | None], HostGroup] = {}
    for r in records:
        kind = "learned" if r.get("learn") else r.get("decision")
        if kind != decision or r.get("event") == "dns":
            continue
        k = _key(r)
        g = groups.setdefault(k, HostGroup(*k))
        g.count += 1
        g.reasons[str(r.get("reason") or "")] += 1
        hint = r.get("hint")
        if isinstance(hint, str) and hint and hint not in g.hints:
            g.hints.append(hint)
        what = f"{r['method']} {r.get('path') or ''}".strip() if r.get("method") else str(r.get("event"))
        if what not in g.what and len(g.what) < 3:
            g.what.append(what)
    return sorted(groups.values(), key=lambda g: (-g.count, g.host))


def hint_for(g: HostGroup) -> str:
    if g.hints:
        return g.hints[0]
    if any(reason.startswith("secret_leak") for reason in g.reasons):
        return ""  # never allowed by a rule
    return f"--allow domain={g.host}" if g.host and " " not in g.host and "/" not in g.host else ""


def report(run_id: str, records: list[Record]) -> str:
    mode = next((str(r.get("mode")) for r in records if r.get("mode")), "?")
    denied, allowed, learned = group(records, "deny"), group(records, "allow"), group(records, "learned")
    lines = [f"run {run_id} ({mode}): {sum(g.count for g in allowed)} allowed, {sum(g.count for g in denied)} denied"]
    if learned:
        lines[0] += f", {sum(g.count for g in learned)} allowed only by --learn"
    for title, groups in (("denied:", denied), ("would be denied without --learn:", learned)):
        if groups:
            lines.append(title)
        for g in groups:
            where = f"{g.host}:{g.port}" if g.port else g.host
            reason = g.reasons.most_common(1)[0][0]
            lines.append(f"  {where}  x{g.count}  {', '.join(g.what)}  ({reason})")
            if hint := hint_for(g):
                lines.append(f"      to allow: {hint}")
    if allowed:
        lines.append("allowed:")
        lines += [f"  {g.host}:{g.port}  x{g.count}" if g.port else f"  {g.host}  x{g.count}" for g in allowed]
    return "\n".join(printable(line) for line in lines)


def as_json(run_id: str, records: list[Record]) -> dict[str, Any]:
    def one(g: HostGroup) -> dict[str, Any]:
        return {"host": g.host, "port": g.port, "count": g.count, "reasons": dict(g.reasons), "hint": hint_for(g),
                "examples": g.what}  # fmt: skip

    return {
        "run_id": run_id,
        "mode": next((r.get("mode") for r in records if r.get("mode")), None),
        "denied": [one(g) for g in group(records, "deny")],
        "allowed": [one(g) for g in group(records, "allow")],
        "learned": [one(g) for g in group(records, "learned")],
    }


def yaml_allowlist(run_id: str, rules: Iterable[str]) -> str:
    """A config file holding ``rules`` as its allowlist (--learn's result)."""
    body = "".join(f"  - {json.dumps(r)}\n" for r in dict.fromkeys(rules))
    return (
        f"# written by boundary run --learn (run {run_id}): the allowlist a strict run would need; review it\n"
        f"allowlist:\n{body}"
    )


def line(r: Record) -> str:
    """One record as a line, for --follow."""
    what = f"{r.get('method')} {r.get('host')}:{r.get('port')}{r.get('path') or ''}" if r.get("method") else (
        f"{r.get('event')} {r.get('host')}:{r.get('port')}"
    )  # fmt: skip
    text = f"{r.get('decision')} {what} ({r.get('reason')})"
    if r.get("decision") == "deny" and r.get("hint"):
        text += f"; to allow: {r['hint']}"
    return printable(text)


def follow(path: Path, run: str | None, emit: Callable[[str], None], stop: threading.Event) -> None:
    """Print the chosen run's records as they are written (the run that is last now, or the next one to start
    when the log is empty), until ``stop`` is set."""
    pos = 0
    chosen = run
    if chosen is None:
        try:
            chosen = select(read(path), None)[0]
        except AuditViewError:  # no log or no run yet: the first run that writes one
            chosen = None
    buf = ""
    while not stop.is_set():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                if os.fstat(f.fileno()).st_size < pos:  # rotated or truncated: from the start
                    pos = 0
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = ""
        buf += chunk
        *complete, buf = buf.split("\n")
        for rec in parse_lines(complete):
            if chosen is None:
                chosen = rec["run_id"]
            if rec["run_id"].startswith(chosen) and rec.get("event") != "dns":
                emit(line(rec))
        if not chunk:
            stop.wait(FOLLOW_POLL)
