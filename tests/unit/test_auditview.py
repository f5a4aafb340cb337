"""`boundary audit`: grouping, hints, run selection, malformed lines, --json and --follow (a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jail.auditview import AuditViewError, as_json, parse_lines, report, select

ROOT = Path(__file__).resolve().parents[2]


def rec(run: str, decision: str, host: str, port: int = 443, **kw: object) -> dict[str, object]:
    reason = "no allow rule matches" if decision == "deny" else "allowed by rule"
    base = {"run_id": run, "decision": decision, "host": host, "port": port, "event": "connection", "mode": "nsjail"}
    return {**base, "reason": reason, **kw}


LOG = [
    rec("aaaa11", "deny", "old.test"),
    rec("bbbb22", "allow", "api.test"),
    rec("bbbb22", "deny", "chatgpt.com", hint="--allow domain=chatgpt.com"),
    rec("bbbb22", "deny", "chatgpt.com", hint="--allow domain=chatgpt.com"),
    rec(
        "bbbb22",
        "deny",
        "api.test",
        method="DELETE",
        path="/x",
        event="request",
        hint="--allow 'domain=api.test method=DELETE path=/x'",
    ),
    rec("bbbb22", "allow", "seen.test", 53, event="dns"),
    rec("bbbb22", "deny", "paste.test", reason="secret_leak: the placeholder of T in the body", secret="T"),
]


def test_the_last_run_denials_first_with_the_allow_that_would_permit_them() -> None:
    run, records = select(LOG, None)
    assert run == "bbbb22"
    text = report(run, records)
    assert text.splitlines()[0] == "run bbbb22 (nsjail): 1 allowed, 4 denied"
    assert text.index("chatgpt.com:443  x2") < text.index("api.test:443  x1  DELETE /x")  # most frequent first
    assert "to allow: --allow domain=chatgpt.com" in text
    assert "to allow: --allow 'domain=api.test method=DELETE path=/x'" in text
    assert "seen.test" not in text  # DNS answers are not decisions
    assert "old.test" not in text
    paste = text.split("paste.test", 1)[1].splitlines()
    assert len(paste) == 1 or not paste[1].strip().startswith("to allow")  # a leak is never allowed by a rule
    hosts = [g["host"] for g in as_json(run, records)["denied"]]
    assert hosts == ["chatgpt.com", "api.test", "paste.test"]


def test_run_selection_and_bad_lines() -> None:
    assert select(LOG, "aaa")[0] == "aaaa11"
    with pytest.raises(AuditViewError, match="no run"):
        select(LOG, "zz")
    with pytest.raises(AuditViewError, match="no runs"):
        select([], None)
    lines = ["not json", "[1]", json.dumps({"no": "run id"}), json.dumps(LOG[0])]
    assert list(parse_lines(lines)) == [LOG[0]]


def boundary(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "jail", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False, **kw)  # type: ignore[call-overload]  # fmt: skip


def test_cli(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    r = boundary("audit", "--audit-log", str(log), cwd=tmp_path)
    assert r.returncode == 2
    assert "no audit log" in r.stderr
    log.write_text("".join(json.dumps(x) + "\n" for x in LOG))
    r = boundary("audit", "--last", "--audit-log", str(log), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "chatgpt.com:443  x2" in r.stdout
    r = boundary("audit", "--run", "aaaa", "--json", "--audit-log", str(log), cwd=tmp_path)
    assert json.loads(r.stdout)["denied"][0]["host"] == "old.test"


def test_follow_prints_records_as_they_are_written(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(LOG[1]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "jail", "audit", "-f", "--audit-log", str(log)], cwd=tmp_path,
                         stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert p.stdout is not None
        lines: list[str] = []
        got_first = threading.Event()
        got_new = threading.Event()

        def reader() -> None:
            assert p.stdout is not None
            for text in p.stdout:
                lines.append(text)
                (got_new if "chatgpt" in text else got_first).set()

        threading.Thread(target=reader, daemon=True).start()
        assert got_first.wait(60), lines  # the record already there
        with log.open("a") as f:
            f.write(json.dumps(LOG[2]) + "\n")
            f.write(json.dumps(rec("other-run", "deny", "not-this-run.test")) + "\n")
        assert got_new.wait(60), lines
        assert "to allow: --allow domain=chatgpt.com" in lines[-1]
    finally:
        p.terminate()
        p.wait(30)
        if p.stdout is not None:
            p.stdout.close()
    assert not any("not-this-run" in x for x in lines)
