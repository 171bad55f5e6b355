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

LOCK_NAME = ".lock"


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
