"""The fake DNS responder's parser and table: tables of queries, and fuzzing with hostile datagrams."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.dns import FAKE_NET, FakeTable, FormatError, answer, parse_query


def query(name: str, qtype: int = 1, *, ident: int = 0x1234, flags: int = 0x0100, qclass: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return struct.pack("!6H", ident, flags, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!2H", qtype, qclass)


def rcode(reply: bytes) -> int:
    return reply[3] & 0xF


def answers(reply: bytes) -> int:
    return int(struct.unpack_from("!H", reply, 6)[0])


@pytest.mark.parametrize(
    ("name", "qtype", "want_rcode", "want_answers"),
    [
        ("example.com", 1, 0, 1),
        ("EXAMPLE.com", 1, 0, 1),
        ("a-b_c.example", 1, 0, 1),
        ("example.com", 28, 0, 0),  # AAAA: NODATA, so clients use the fake IPv4 address
        ("example.com", 16, 0, 0),  # TXT: nothing to tunnel through
        ("example.com", 255, 0, 0),
        ("", 1, 0, 0),  # the root
    ],
)
def test_answers(name: str, qtype: int, want_rcode: int, want_answers: int) -> None:
    table = FakeTable()
    a = answer(query(name, qtype), table)
    assert a.reply is not None
    assert a.reply[:2] == b"\x12\x34"
    assert a.reply[2] & 0x80  # QR
    assert a.reply[2] & 0x01  # RD copied
    assert rcode(a.reply) == want_rcode
    assert answers(a.reply) == want_answers
    if want_answers:
        assert a.address is not None
        assert ipaddress.IPv4Address(a.address) in FAKE_NET
        assert a.reply.endswith(ipaddress.IPv4Address(a.address).packed)
        assert table.name(a.address) == name.lower()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "short header"),
        (b"\x00" * 11, "short header"),
        (struct.pack("!6H", 1, 0x8000, 1, 0, 0, 0), "not a query"),
        (struct.pack("!6H", 1, 0x2800, 1, 0, 0, 0), "opcode"),
        (struct.pack("!6H", 1, 0, 2, 0, 0, 0) + b"\0\0\1\0\1" * 2, "exactly one question"),
        (struct.pack("!6H", 1, 0, 0, 0, 0, 0), "exactly one question"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1", "compressed"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x05ab", "truncated label"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x03a.b\0\0\1\0\1", "characters"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x03a\x00b\0\0\1\0\1", "characters"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x01a\0\0", "truncated question"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x3fabc", "truncated label"),
        (struct.pack("!6H", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\1\0\1", "too long"),
    ],
)
def test_malformed_queries(data: bytes, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        parse_query(data)
    a = answer(data, FakeTable())
    assert a.question is None
    if a.reply is not None:  # FORMERR with the query's id, never an answer
        assert rcode(a.reply) == 1
        assert answers(a.reply) == 0


def test_responses_never_answer_responses() -> None:
    """A reply fed back in (a reflection loop) gets nothing at all."""
    reply = answer(query("loop.example"), FakeTable()).reply
    assert reply is not None
    assert answer(reply, FakeTable()).reply is None


def test_table_is_one_to_one_stable_and_bounded() -> None:
    table = FakeTable(limit=3)
    addrs = [table.address(f"n{i}.example") for i in range(3)]
    assert len(set(addrs)) == 3
    assert table.address("n1.example") == addrs[1]
    assert table.address("full.example") is None  # full: fail closed
    reply = answer(query("full.example"), table).reply
    assert reply is not None
    assert rcode(reply) == 2  # SERVFAIL
    assert answers(answer(query("n2.example"), table).reply or b"") == 1  # known names still resolve
    assert table.name("198.18.0.1") == "n0.example"
    assert table.name("8.8.8.8") is None


def test_class_other_than_in_is_refused() -> None:
    a = answer(query("example.com", qclass=3), FakeTable())
    assert a.reply is not None
    assert rcode(a.reply) == 4


@given(st.binary(max_size=600))
def test_any_datagram_is_answered_safely(data: bytes) -> None:
    a = answer(data, FakeTable())
    if a.reply is not None:
        assert len(a.reply) <= len(data) + 16
        assert a.reply[:2] == data[:2]


@given(st.lists(st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True), min_size=1, max_size=5), st.binary())
def test_mutated_queries_never_crash(labels: list[str], noise: bytes) -> None:
    q = query(".".join(labels))
    for i in range(0, len(q), 3):
        mutated = q[:i] + noise[:4] + q[i + 4 :]
        a = answer(mutated, FakeTable())
        if a.address is not None:
            assert ipaddress.IPv4Address(a.address) in FAKE_NET
