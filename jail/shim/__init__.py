"""The LD_PRELOAD connect shim (``shim.c``), compiled when the package is built or installed
(setup.py), so no compiler is needed at run time.

Side effects: none.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shim_path() -> Path | None:
    """The compiled shim, or None when this install has none (the jail still fails closed)."""
    base = resources.files(__name__)
    for entry in base.iterdir():
        if entry.name.startswith("boundary_shim") and entry.name.endswith(".so"):
            return Path(str(entry))
    return None
