"""Group commit for job submissions.

Many concurrent ``POST /jobs`` requests become one database transaction: requests put their
job on a queue and await a future; one writer thread takes whatever has queued up (up to
``max_batch``), inserts it in one transaction, and completes every request's future. A
request is answered only after its job is durably committed, exactly as without batching;
under load the fsync/commit cost is shared instead of paid per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from datetime import datetime
from typing import Any

from yungu.adapters.store.job_store import SqlStore
from yungu.domain.job import Job, JobSpec

log = logging.getLogger("yungu.store")


class SubmitBatcher:
    def __init__(self, store: SqlStore, max_batch: int = 512) -> None:
        self.store = store
        self.max_batch = max_batch
        self._q: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="yungu-submit", daemon=True)
        self._thread.start()
        self.batches = 0
        self.jobs = 0

    async def submit(self, tenant_id: str, spec: JobSpec, job_id: str, body_hash: str | None, now: datetime) -> Job:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Job] = loop.create_future()
        self._q.put((tenant_id, spec, job_id, body_hash, now, loop, fut))
        return await fut

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._q.put(None)
                    break
                batch.append(item)
            now = max(b[4] for b in batch)
            try:
                jobs = self.store.submit_many([(b[0], b[1], b[2], b[3]) for b in batch], now)
                self.batches += 1
                self.jobs += len(jobs)
                for b, job in zip(batch, jobs, strict=True):
                    b[5].call_soon_threadsafe(_resolve, b[6], job, None)
            except Exception as exc:  # the whole transaction failed: every request learns it
                log.exception("batched submit failed")
                for b in batch:
                    b[5].call_soon_threadsafe(_resolve, b[6], None, exc)


def _resolve(fut: asyncio.Future[Job], job: Job | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert job is not None
        fut.set_result(job)
