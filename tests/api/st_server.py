"""A real ``yungu`` API server (uvicorn, real sockets, the embedded default world) for the
schemathesis run, without the control loop: fuzzed job commands are stored, never executed.

    python -m tests.api.st_server DATA_DIR PORT

Writes ``DATA_DIR/admin.key`` and serves until killed. Failed-authentication limiting is off
(the ignored_auth check sends hundreds of requests without a key from one address); the
per-key limits keep their defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from yungu.api.app import create_app
from yungu.api.ratelimit import RateLimits
from yungu.app.container import build
from yungu.app.server import bootstrap_admin


def main() -> None:
    data, port = Path(sys.argv[1]), int(sys.argv[2])
    c = build(data, start_loop=False)
    bootstrap_admin(c)
    app = create_app(c, RateLimits(auth_fail_rate=0))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", loop="uvloop", http="httptools")
    finally:
        c.close()


if __name__ == "__main__":
    main()
