"""jail.kernel.netlink's packing and reply parsing, by table (the messages themselves are checked against what
the kernel lists in tests/jail/test_nftnl.py and every nsjail test)."""

from __future__ import annotations

import errno
import struct

import pytest

from jail.kernel import netlink


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        (3, b"bj0\0", b"\x08\x00\x03\x00bj0\0"),  # 4 + 4 bytes: no padding
        (1, b"veth", b"\x08\x00\x01\x00veth"),
        (3, b"ab\0", b"\x07\x00\x03\x00ab\0\0"),  # length says 7, padded to 8
        (28, struct.pack("=I", 5), b"\x08\x00\x1c\x00\x05\x00\x00\x00"),
        (2, b"", b"\x04\x00\x02\x00"),
    ],
)
def test_an_attribute_is_length_type_payload_padded_to_four(kind: int, payload: bytes, expected: bytes) -> None:
    assert netlink.attr(kind, payload) == expected


def test_nested_sets_the_nested_flag_and_holds_its_children() -> None:
    inner = netlink.attr(1, b"x\0")
    out = netlink.nested(18, inner, inner)
    length, kind = struct.unpack_from("=HH", out)
    assert kind == 18 | netlink.NLA_F_NESTED
    assert length == 4 + 2 * len(inner)
    assert out[4:] == inner + inner


@pytest.mark.parametrize(("value", "raw"), [(0, b"\0\0\0\0"), (1, b"\0\0\0\x01"), (-100, b"\xff\xff\xff\x9c")])
def test_nf_tables_integers_are_big_endian_and_a_negative_priority_wraps(value: int, raw: bytes) -> None:
    assert netlink.be32(value) == raw


def _msg(kind: int, seq: int, body: bytes) -> bytes:
    n = 16 + len(body)
    return struct.pack("=IHHII", n, kind, 0, seq, 0) + body + bytes(-n % 4)


def test_replies_are_split_at_their_aligned_lengths() -> None:
    data = _msg(16, 1, b"abc") + _msg(netlink.NLMSG_ERROR, 1, struct.pack("=i", 0) + bytes(16))
    assert list(netlink._messages(data)) == [
        (16, 1, b"abc"),
        (netlink.NLMSG_ERROR, 1, struct.pack("=i", 0) + bytes(16)),
    ]


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("=IHHII", 64, 16, 0, 1, 0),  # says 64 bytes, has 16
        struct.pack("=IHHII", 8, 16, 0, 1, 0),  # shorter than its own header
    ],
)
def test_a_truncated_reply_is_a_protocol_error_not_a_hang_or_a_misread(data: bytes) -> None:
    with pytest.raises(OSError) as e:
        list(netlink._messages(data))
    assert e.value.errno == errno.EPROTO
