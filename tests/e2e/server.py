"""Run the real ``yungu server`` as an OS process for end-to-end, CLI and crash tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.net import free_port


def default_world_with(path: Path, executor_lines: str) -> Path:
    """The embedded default world with extra lines in its ``[executor.local]`` table (e.g.
    an operator's ``binds``), written to ``path``."""
    from importlib import resources

    text = resources.files("yungu.data").joinpath("default_world.toml").read_text(encoding="utf-8")
    head = "[executor.local]\n"
    assert text.count(head) == 1, "the default world has one [executor.local] table"
    path.write_text(text.replace(head, head + executor_lines))
    return path


def yungu_exe() -> str:
    return shutil.which("yungu") or str(Path(sys.executable).parent / "yungu")


class ServerProcess:
    def __init__(self, data_dir: Path, port: int | None = None, db_url: str | None = None,
                 extra: list[str] | None = None, new_session: bool = False) -> None:
        self.data_dir, self.port, self.db_url = data_dir, port or free_port(), db_url
        self.extra = extra or []
        self.new_session = new_session  # its own session (and scheduler autogroup), as a service has
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        args = [yungu_exe(), "server", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra]
        env = dict(os.environ)
        if self.db_url:
            env["YUNGU_DB_URL"] = self.db_url
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=self.new_session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log.name}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout}s; see {log.name}")

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_cli(server: ServerProcess, *args: str, key: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``yungu`` command against ``server`` (admin key unless one is given)."""
    env = {**os.environ, "YUNGU_URL": server.url, "YUNGU_API_KEY": key or server.admin_key, "COLUMNS": "200"}
    r = subprocess.run([yungu_exe(), *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r
