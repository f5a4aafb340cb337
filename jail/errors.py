"""The exception tree, in one place.

BoundaryError: boundary itself failed (exit 125); its message reads
``failed to <step>: <strerror> (hint: <what to do>)``.
ConfigError (jail.config): bad input, a subclass of ValueError.
"""

from __future__ import annotations

import errno


class BoundaryError(Exception):
    def __init__(self, step: str, detail: str, *, hint: str = "") -> None:
        self.step = step
        self.detail = detail
        self.hint = hint
        super().__init__(f"failed to {step}: {detail}" + (f" (hint: {hint})" if hint else ""))


def describe(e: OSError) -> str:
    """``/path: Operation not permitted (EPERM)``: the file (when there is one), the strerror and the errno's
    name, for "failed to <step>: ..."."""
    name = errno.errorcode.get(e.errno or 0, "")
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}" + (f" ({name})" if name else "")
