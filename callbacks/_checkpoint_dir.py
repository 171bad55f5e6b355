"""A checkpoint directory as one run's property: who wrote which step, and one writer at a time.

Every checkpoint's metadata names the run that wrote it (``History.run_id``). A run may
replace or delete only its own checkpoints, and only those of its own timeline (steps up to
the one it started from, or written by this fit); another run's checkpoints, and a run's
newer checkpoints left behind when it resumed from an older one (``ckpt_path="best"`` or a
path), are never touched. Scores for ``save_top_k`` and ``best_model_path`` come from each
checkpoint's metadata, so they survive a moved or copied directory.

While a fit runs, its ``ModelCheckpoint`` holds an exclusive lock on ``<dirpath>/.lock``
(``fcntl.flock``; released by the operating system if the process dies; the file is removed
when the fit ends), so two trainers cannot write the same directory at once.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass

import orbax.checkpoint as ocp

from jno_flax._checkpoint_format import READ_ERRORS, read_metadata

LOCK_NAME = ".lock"


@dataclass(frozen=True)
class Entry:
    """One complete checkpoint of a directory, as its metadata describes it.

    Attributes:
        step: the step it holds.
        path: its directory.
        run_id: the run that wrote it (``None``: unreadable metadata or an older version).
        monitor: the name its score ranks by (``None`` without a monitor).
        score: the monitored value when it was written.
        readable: False when its metadata could not be read (a damaged checkpoint).
    """

    step: int
    path: str
    run_id: str | None
    monitor: str | None
    score: float | None
    readable: bool


def list_entries(dirpath: str, prefix: str | None) -> list[Entry]:
    """Complete checkpoints in ``dirpath`` (step directories named ``[<prefix>_]<step>``),
    oldest first, read from the directory (no orbax manager: its creation is a collective of
    every process)."""
    if not dirpath or not os.path.isdir(dirpath):
        return []
    out = []
    for m in ocp.step.standard_name_format(step_prefix=prefix).find_all(dirpath):
        path = os.path.join(dirpath, str(m.path.name))
        try:
            meta = read_metadata(path)
        except READ_ERRORS:
            out.append(Entry(m.step, path, None, None, None, False))
            continue
        score = meta.get("score")
        out.append(Entry(m.step, path, meta.get("run_id"), meta.get("monitor"),
                         None if score is None else float(score), True))
    return sorted(out, key=lambda e: e.step)


def foreign(entries: list[Entry], run_id: str | None, start: int,
            replaceable: set[str]) -> list[Entry]:
    """The checkpoints a run must not touch: written by another run, or newer than the step
    ``start`` it (re)started from (another timeline of the same run), except the damaged
    ones in ``replaceable`` (skipped when it resumed ``"last"``)."""
    return [e for e in entries if e.path not in replaceable
            and (e.run_id != run_id or e.step > start)]


class DirectoryLock:
    """An exclusive, non-blocking lock on ``<dirpath>/.lock`` held during a fit."""

    def __init__(self):
        self._fd: int | None = None
        self.path: str | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, dirpath: str) -> None:
        """Take the lock, or raise ``RuntimeError`` naming the holder. The lock file is
        removed on release; a file removed by its holder between our ``open`` and ``flock``
        is opened again (the usual inode check)."""
        if self._fd is not None:
            return
        path = os.path.join(dirpath, LOCK_NAME)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RuntimeError(f"ModelCheckpoint `dirpath` {dirpath!r} is in use by "
                                   f"another trainer ({holder}); two runs cannot write one "
                                   "checkpoint directory at once. Give each run its own "
                                   "`dirpath`.") from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd, self.path = fd, path

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except OSError:  # the directory was removed or replaced meanwhile
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
