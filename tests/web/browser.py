"""Debian's Chromium driven by Playwright (no browser download): launch flags, request log."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).with_name("artifacts")


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@dataclass
class Watch:
    """Every request a page made and every console error it printed."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        # Name the failing request beside the console's anonymous "Failed to load resource".
        page.on("response", lambda r: self.errors.append(f"http {r.status}: {r.request.method} {r.url}")
                if r.status >= 400 else None)

    def outside(self) -> list[str]:
        """Requests to anything but the loopback address (blob: and data: URLs stay in the page)."""
        out = []
        for u in self.requests:
            parts = urlsplit(u)
            if parts.scheme in ("blob", "data", "about"):
                continue
            if parts.hostname not in ("127.0.0.1",):
                out.append(u)
        return out


@contextmanager
def browser() -> Iterator[Any]:
    """A persistent-context-free Chromium with an empty profile in a temp dir."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium not installed: `apt-get install chromium` (Makefile system-deps)")
    profile = tempfile.mkdtemp(prefix="yungu-web-profile-")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=path, args=FLAGS, headless=True,
                                                    viewport={"width": 1440, "height": 900})
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    p = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(p), full_page=False)
    return p
