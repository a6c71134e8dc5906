"""Private files in the data dir: directories 0700, files 0600, created that way (no window in
which another local user could open them), and tightened if an older install left them open."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing; make ``path`` itself 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a new file readable by the owner only; refuses to overwrite (``O_EXCL``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def private_sqlite(db: Path) -> None:
    """Make the SQLite database (and its -wal/-shm, which SQLite creates with the database's
    mode) 0600, creating an empty database file that way before SQLite opens it."""
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.with_name(db.name + "-journal")):
        if p.exists() and p.stat().st_mode & 0o777 != FILE_MODE:
            os.chmod(p, FILE_MODE)
