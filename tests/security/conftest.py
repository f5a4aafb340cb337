"""Escape attempts run real jails: same rules as tests/jail (non-root, loopback only)."""

from tests.jail.conftest import _non_root, plain, pytest_collection_modifyitems, tls

__all__ = ["_non_root", "plain", "pytest_collection_modifyitems", "tls"]
