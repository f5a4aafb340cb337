"""Fixtures for real jails: loopback upstreams with a private CA. Jail tests must run as a non-root user."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import CA, Upstream, server_tls


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.jail)


@pytest.fixture(autouse=True)
def _non_root() -> None:
    if os.geteuid() == 0:
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
