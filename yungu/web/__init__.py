"""The web console (``/``) and the big screen (``/screen``): static pages served by the platform.

The pages are plain HTML, CSS and ES modules written for this project (no build step, no
third-party code, nothing fetched from outside the platform); they read only documented
``/api/v1`` endpoints. This package imports no adapters or control code (import contract).
"""

from yungu.web.routes import mount, router

__all__ = ["mount", "router"]
