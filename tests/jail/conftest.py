"""Fixtures for real jails: loopback upstreams with a private CA. Jail tests must run as a non-root user."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import CA, Upstream, server_tls


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.jail)


def real_root() -> bool:
    """uid 0 of the initial user namespace; root inside a namespace made by `unshare -r` is an ordinary user."""
    if os.geteuid() != 0:
        return False
    with open("/proc/self/uid_map", encoding="ascii") as f:
        return any(line.split()[:3] == ["0", "0", "4294967295"] for line in f)


@pytest.fixture(autouse=True)
def _non_root() -> None:
    if real_root():
        pytest.fail("jail tests must run as an unprivileged user (scripts/test.sh does this as root)")


@pytest.fixture(scope="session")
def tls(ca: CA) -> Iterator[Upstream]:
    u = Upstream(tls=server_tls(ca)).start()
    yield u
    u.stop()


@pytest.fixture(scope="session")
def plain() -> Iterator[Upstream]:
    u = Upstream().start()
    yield u
    u.stop()
