"""Where sandboxed test jobs may write: one host directory, bound read-write into every test
executor with the operator's ``binds`` setting (docs/security.md), so a test can prove what a
job did ("ran once", "started") from outside the sandbox.

The directory is traversable but not listable (0711), outside every data dir and run root;
each test gets its own subdirectory, writable by any tenant uid (0777). Created at import,
removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from pathlib import Path

SHARED = Path(tempfile.mkdtemp(prefix="yungu-sandbox-shared-"))
SHARED.chmod(0o711)
atexit.register(shutil.rmtree, SHARED, ignore_errors=True)

BINDS = [{"src": str(SHARED), "dst": str(SHARED), "mode": "rw"}]


def shared_dir(name: str = "") -> Path:
    """A fresh directory inside the bound one, writable by every tenant's jobs."""
    path = SHARED / f"{name or 't'}-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    path.chmod(0o777)
    return path


def binds_toml() -> str:
    """The same bind as a TOML array for ``[executor.local]`` (a config file's table)."""
    return f'binds = [{{ src = "{SHARED}", dst = "{SHARED}", mode = "rw" }}]\n'
