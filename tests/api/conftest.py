"""A real platform (container + control loop + local executor) behind the real FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from yungu.api.app import create_app
from yungu.app.container import Container, build
from yungu.domain.tenancy import Role


class Platform:
    def __init__(self, c: Container, http: TestClient) -> None:
        self.c, self.http = c, http
        _, self.admin_key = c.store.create_key(c.ids.new(), Role.ADMIN, None, "admin", c.clock.now())

    def tenant(self, name: str) -> tuple[str, dict[str, str]]:
        t = self.c.store.create_tenant(self.c.ids.new(), name, self.c.clock.now())
        _, secret = self.c.store.create_key(self.c.ids.new(), Role.TENANT, t.id, name, self.c.clock.now())
        return t.id, {"Authorization": f"Bearer {secret}"}

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def wait(self, job_id: str, headers: dict[str, str], states: set[str], timeout: float = 20) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            job = self.http.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
            if job["state"] in states or time.monotonic() > deadline:
                return job
            time.sleep(0.05)


@pytest.fixture
def platform(tmp_path: Path, db_url: str) -> Iterator[Platform]:
    c = build(tmp_path / "data", db_url=db_url)
    with TestClient(create_app(c)) as http:
        yield Platform(c, http)
    c.close()


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[Platform]:
    c = build(tmp_path / "data")
    with TestClient(create_app(c)) as http:
        yield Platform(c, http)
    c.close()
