"""Session-wide test setup."""

from __future__ import annotations

import pytest

from tests import support


@pytest.fixture(scope="session", autouse=True)
def _visible_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    support.VISIBLE_ROOT = tmp_path_factory.getbasetemp()
