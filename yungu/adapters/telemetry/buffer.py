"""The agent's on-disk buffer: samples wait here until the platform acknowledges them.

A SQLite file (stdlib ``sqlite3``, WAL, ``synchronous=FULL``): a sample is committed to the
buffer before any send is attempted, and deleted only after the platform has answered the
batch that carried it, so a crash or an outage of either side loses nothing. Resending a
batch whose answer was lost is harmless: the platform drops (node, seq) it already holds.

Sequence numbers are reserved in blocks and the reservation is committed before use, so a
restarted agent never reuses a number (it may skip some, which the platform tolerates).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

SEQ_BLOCK = 1000


class SampleBuffer:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS samples (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._lock = threading.Lock()
        row = self._db.execute("SELECT value FROM state WHERE name = 'seq_reserved'").fetchone()
        self._next = int(row[0]) if row else 0
        self._reserved = self._next

    def next_seq(self) -> int:
        with self._lock:
            if self._next >= self._reserved:
                self._reserved = self._next + SEQ_BLOCK
                self._db.execute(
                    "INSERT INTO state (name, value) VALUES ('seq_reserved', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (self._reserved,),
                )
            seq = self._next
            self._next += 1
            return seq

    def put(self, sample: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO samples (seq, payload) VALUES (?, ?)", (sample["seq"], json.dumps(sample))
            )

    def oldest(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT payload FROM samples ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def ack(self, seqs: list[int]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM samples WHERE seq = ?", [(s,) for s in seqs])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def close(self) -> None:
        self._db.close()
