"""Server-sent events in OpenAI's shape: ``data: <json>\\n\\n`` lines ending in ``data: [DONE]``."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class SSEParser:
    """Incremental parser: feed bytes, get complete ``data:`` payloads (bytes, without prefix)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            i = self._buf.find(b"\n\n")
            if i < 0:
                break
            block, self._buf = self._buf[:i], self._buf[i + 2:]
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    out.append(line[5:].strip())
        return out
