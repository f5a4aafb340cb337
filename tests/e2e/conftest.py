"""Real tools against the real npm registry, whose URL comes from `npm config get registry` at run time."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlsplit

import pytest

from tests.jail.conftest import _non_root, tls

__all__ = ["_non_root", "registry_host", "tls"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def registry_host() -> str:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed (scripts/test.sh as root installs Debian's nodejs and npm)")
    url = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True, check=True, timeout=60)
    host = urlsplit(url.stdout.strip()).hostname
    assert host, f"npm config get registry gave {url.stdout!r}"
    return host
