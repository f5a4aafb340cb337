"""landjail's stand-in for read-only mounts: Landlock grants whole directories, so a protected path
inside a writable one (``.git/config`` in the workspace: git must still create ``.git/index.lock``
beside it) cannot be made read-only there. Instead its state is recorded before the command
starts and put back when the jail is gone: what the jail changed or created is moved aside
(renamed ``NAME.boundary-rejected-RUN``, where nothing runs or reads it) and the original is
restored. Nothing is lost, and nothing the jail planted is left where an unconfined program looks.
During the run the jail's version is in place (a known gap of landjail; nsjail binds these read-only).

Side effects: reads the guarded paths at start; renames and writes them at the end.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
MAX_BYTES = 8 << 20  # per guarded path: larger trees are not copied (the caller makes them plain holes)
MAX_ENTRIES = 4000


class TooBig(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # "file", "dir", "link"
    mode: int
    data: bytes = b""  # file content or link target


@dataclass
class Snapshot:
    path: str
    entries: dict[str, Entry] | None  # relative path -> entry; None: the path did not exist
    parent: Where | None = None  # its directory: the same one at the end

    @classmethod
    def take(cls, path: str) -> Snapshot:
        parent = _dir_id(os.path.dirname(path))
        if not os.path.lexists(path):
            return cls(path, None, parent)
        entries: dict[str, Entry] = {}
        budget = [MAX_BYTES, MAX_ENTRIES]

        def add(rel: str, full: str) -> None:
            budget[1] -= 1
            if budget[1] < 0:
                raise TooBig(path)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = Entry("link", 0, os.fsencode(os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = Entry("dir", stat.S_IMODE(st.st_mode))
                for name in sorted(os.listdir(full)):
                    add(os.path.join(rel, name), os.path.join(full, name))
            elif stat.S_ISREG(st.st_mode):
                budget[0] -= st.st_size
                if budget[0] < 0:
                    raise TooBig(path)
                with open(full, "rb") as f:
                    entries[rel] = Entry("file", stat.S_IMODE(st.st_mode), f.read())
            else:
                entries[rel] = Entry("other", stat.S_IMODE(st.st_mode))

        add("", path)
        return cls(path, entries, parent)

    def restore(self, aside: str) -> bool:
        """Put the recorded state back if it changed; move the changed one to ``aside``. True if restored.
        Raises OSError when the directory it lies in is not the one it was in (a symlink or another directory
        put in its place would lead boundary, which runs unconfined, to write where the jail could not)."""
        parent = os.path.dirname(self.path)
        if self.parent is None or not self.parent.same(parent):
            raise OSError(errno.EXDEV, f"{parent} is no longer the directory it was")
        try:
            now = Snapshot.take(self.path)
        except (TooBig, OSError):
            now = Snapshot(self.path, {"": Entry("changed", 0)})
        if now.entries == self.entries:
            return False
        if os.path.lexists(self.path):
            os.rename(self.path, aside)
        if self.entries is not None:
            for rel, e in self.entries.items():  # parents come before their entries
                full = os.path.join(self.path, rel) if rel else self.path
                if e.kind == "dir":
                    os.mkdir(full, e.mode)
                elif e.kind == "link":
                    os.symlink(os.fsdecode(e.data), full)
                elif e.kind == "file":
                    fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, e.mode)
                    with os.fdopen(fd, "wb") as f:
                        f.write(e.data)
                    os.chmod(full, e.mode)
        return True


@dataclass(frozen=True, slots=True)
class Where:
    """A directory as it was: the nearest existing one at or above it (its path and identity) and the real
    path it had or would have. Checked again before boundary, which runs unconfined, writes there."""

    anchor: str
    ident: tuple[int, int]
    real: str

    @classmethod
    def of(cls, path: str) -> Where:
        rest: list[str] = []
        anchor = path
        while not os.path.isdir(anchor) and os.path.dirname(anchor) != anchor:
            anchor, tail = os.path.split(anchor)
            rest.insert(0, tail)
        st = os.stat(anchor)
        return cls(anchor, (st.st_dev, st.st_ino), os.path.join(os.path.realpath(anchor), *rest))

    def same(self, path: str) -> bool:
        """``path`` is still this directory: its anchor unchanged, and reached through no symlink (the part
        that did not exist then included)."""
        try:
            st = os.stat(self.anchor)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident and os.path.realpath(path) == self.real


def _dir_id(path: str) -> Where:
    return Where.of(path)


def free_name(path: str) -> str:
    """``path``, or ``path.N`` for the first N that names nothing (nothing already there is ever replaced)."""
    n = 0
    candidate = path
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path}.{n}"
    return candidate


def warn_failed(g: Guard) -> None:
    for path, why in g.failed:
        log.warning("could not check or put back %s (%s): look at it before running anything there", path, why)


@dataclass
class Guard:
    run_id: str
    snapshots: list[Snapshot] = field(default_factory=list)
    too_big: list[str] = field(default_factory=list)
    pins: list[tuple[str, int, Where]] = field(default_factory=list)  # (path, O_PATH fd, its parent)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why) not restored

    @classmethod
    def take(cls, paths: Iterable[str], run_id: str, *, pinned: Iterable[str] = ()) -> Guard:
        """``pinned``: directories (a repository's .git) that must be the same directory at the end: one the
        jail renamed away is brought back, one it put in their place moved aside."""
        g = cls(run_id)
        for p in pinned:
            with contextlib.suppress(OSError):
                fd = os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                g.pins.append((p, fd, _dir_id(os.path.dirname(p))))
        for p in paths:
            try:
                g.snapshots.append(Snapshot.take(p))
            except TooBig:
                g.too_big.append(p)
            except OSError:
                continue  # unreadable: not ours to restore
        return g

    def restore(self) -> list[tuple[str, str]]:
        """(path, where the jail's version went) for each path put back."""
        out = []
        for path, fd, parent in self.pins:  # parents first
            try:
                st = os.fstat(fd)
                if not parent.same(os.path.dirname(path)):  # its own parent pin could not be put back
                    raise OSError(errno.EXDEV, "its directory is no longer the one it was")
                now = os.lstat(path) if os.path.lexists(path) else None
                if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    aside = free_name(f"{path}.boundary-rejected-{self.run_id}")
                    if now is not None:
                        os.rename(path, aside)
                    os.rename(os.readlink(f"/proc/self/fd/{fd}"), path)  # where the jail moved it
                    out.append((path, aside))
            except OSError as e:
                self.failed.append((path, e.strerror or str(e)))
            os.close(fd)
        self.pins = []
        for s in self.snapshots:
            aside = free_name(f"{s.path}.boundary-rejected-{self.run_id}")
            try:
                if s.restore(aside):
                    out.append((s.path, aside))
            except OSError as e:
                self.failed.append((s.path, e.strerror or str(e)))
        return out
