"""Shared fixtures: a throwaway PostgreSQL server, database URLs for both backends."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import PostgresMissing, pg_bin, postgres_server

# ../shared/data beside the checkout; YUNGU_SHARED_DATA points elsewhere (e.g. from a git worktree).
SHARED_DATA = Path(os.environ.get("YUNGU_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def shared_data(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path} (tests read real traces/feeds from ../shared/data)")
    return path



@pytest.fixture(scope="session", autouse=True)
def runs_root() -> Iterator[Path]:
    """Sandboxed local jobs' run directories for this session: outside every data dir, like
    /var/lib/yungu-runs in production (the local executor reads YUNGU_RUNS_ROOT; servers
    started by tests inherit it)."""
    root = Path(tempfile.mkdtemp(prefix="yungu-runs-"))
    root.chmod(0o711)
    before = os.environ.get("YUNGU_RUNS_ROOT")
    os.environ["YUNGU_RUNS_ROOT"] = str(root)
    yield root
    if before is None:
        os.environ.pop("YUNGU_RUNS_ROOT", None)
    else:
        os.environ["YUNGU_RUNS_ROOT"] = before
    _remove_session_cgroups(root)
    shutil.rmtree(root, ignore_errors=True)


def _remove_session_cgroups(root: Path) -> None:
    """Jobs that outlived their test's executor leave empty cgroups; remove this session's
    (one executor key per directory in the runs root; busy ones stay)."""
    from yungu.adapters.executors.sandbox_cgroups import Cgroups

    for key_dir in root.iterdir():
        if key_dir.is_dir() and not key_dir.name.startswith("."):
            cg = Cgroups(key_dir.name)
            for leaf in cg.leaves():
                cg.remove(leaf)
            cg.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback for the whole session; yields its base URL."""
    if os.environ.get("YUNGU_TEST_PG_URL"):
        yield os.environ["YUNGU_TEST_PG_URL"].rstrip("/")
        return
    try:
        pg_bin()
    except PostgresMissing as exc:
        pytest.fail(str(exc))
    with postgres_server() as url:
        yield url


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty database on the throwaway server."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_server}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Parametrises a test over both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'yungu.db'}"
    return str(request.getfixturevalue("pg_url"))
