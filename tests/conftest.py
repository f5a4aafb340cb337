"""Session-wide test setup."""

from __future__ import annotations

import pytest

from tests import support
from tests.support import CA, make_ca


@pytest.fixture(scope="session", autouse=True)
def _visible_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    support.VISIBLE_ROOT = tmp_path_factory.getbasetemp()


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    """The test upstreams' private CA (certificates for the *.test names)."""
    return make_ca(tmp_path_factory.mktemp("ca"))
