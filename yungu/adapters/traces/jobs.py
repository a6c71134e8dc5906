"""Job trace readers: Microsoft ITP 2021, Alibaba GPU 2023 (openb), and a canonical CSV.

Every reader returns :class:`~yungu.engines.sim.model.TraceJob` values sorted by submission
and the number of rows it skipped. A malformed row is an error naming the file and line,
unless ``skip_bad_rows`` is set, in which case it is counted and left out.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from yungu.domain.errors import InvalidInput
from yungu.engines.sim.model import TraceJob


@dataclass(frozen=True)
class TraceRead:
    jobs: tuple[TraceJob, ...]
    skipped: int
    source: str


class _BadRow(Exception):
    pass


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read trace {path}: {exc.strerror}") from exc
    with f:
        reader = csv.DictReader(f)
        for row in reader:
            yield reader.line_num, row


def _num(row: Mapping[str, str], col: str, *, positive: bool = False, integer: bool = False) -> float:
    raw = (row.get(col) or "").strip()
    if not raw:
        raise _BadRow(f"missing {col}")
    try:
        v = float(raw)
    except ValueError:
        raise _BadRow(f"{col} is not a number: {raw!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise _BadRow(f"{col} is not finite")
    if v < 0 or (positive and v == 0):
        raise _BadRow(f"{col} must be {'> 0' if positive else '>= 0'}, got {raw}")
    if integer and v != int(v):
        raise _BadRow(f"{col} must be a whole number, got {raw}")
    return v


def _read(path: Path, parse: object, skip_bad_rows: bool) -> tuple[list[TraceJob], int]:
    out: list[TraceJob] = []
    skipped = 0
    for line, row in _rows(path):
        try:
            job = parse(line, row)  # type: ignore[operator]
        except _BadRow as exc:
            if skip_bad_rows:
                skipped += 1
                continue
            raise InvalidInput(f"{path}:{line}: {exc}") from None
        if job is not None:
            out.append(job)
    return out, skipped


def read_itp(
    folder: Path,
    clusters: Mapping[str, str] | None = None,
    *,
    skip_bad_rows: bool = False,
    from_s: float = 0.0,
    to_s: float | None = None,
) -> TraceRead:
    """Microsoft ITP 2021: ``clusterNN.csv`` (job_id, submission_time, duration, num_gpu).

    ``clusters`` maps a file stem (``cluster01``) to the region it submits from; by default
    every file in the folder is read and its stem is the region.
    """
    if not folder.is_dir():
        raise InvalidInput(f"ITP trace folder {folder} does not exist")
    names = dict(clusters) if clusters else {p.stem: p.stem for p in sorted(folder.glob("cluster*.csv"))}
    jobs: list[TraceJob] = []
    skipped = 0
    for stem, region in names.items():
        path = folder / f"{stem}.csv"
        if not path.exists():
            raise InvalidInput(f"ITP trace file {path} does not exist (named in the scenario)")

        def parse(line: int, row: Mapping[str, str], stem: str = stem, region: str = region) -> TraceJob | None:
            jid = (row.get("job_id") or "").strip()
            if not jid:
                raise _BadRow("missing job_id")
            sub = _num(row, "submission_time")
            dur = _num(row, "duration", positive=True)
            g = int(_num(row, "num_gpu", positive=True, integer=True))
            if sub < from_s or (to_s is not None and sub >= to_s):
                return None
            return TraceJob(f"{stem}-{jid}", sub - from_s, dur, g, home=region, tenant=stem)

        got, sk = _read(path, parse, skip_bad_rows)
        jobs += got
        skipped += sk
    jobs.sort(key=lambda j: (j.submit_s, j.id))
    return TraceRead(tuple(jobs), skipped, str(folder))


def select(read: TraceRead, from_s: float = 0.0, to_s: float | None = None,
           clusters: Mapping[str, str] | None = None) -> TraceRead:
    """The jobs submitted in ``[from_s, to_s)``, with submission times counted from ``from_s``.

    ``clusters`` (cluster -> region): keep only jobs of the listed clusters and submit them
    from the mapped region (for a canonical trace the ``cluster`` column names the cluster).
    """
    out = []
    for j in read.jobs:
        if j.submit_s < from_s or (to_s is not None and j.submit_s >= to_s):
            continue
        home = j.home
        if clusters is not None:
            if home is None or home not in clusters:
                continue
            home = clusters[home]
        out.append(replace(j, submit_s=j.submit_s - from_s, home=home))
    return TraceRead(tuple(out), read.skipped, read.source)


def read_canonical(path: Path, *, skip_bad_rows: bool = False, epoch: datetime | None = None) -> TraceRead:
    """Canonical CSV: submit_time (s or ISO-8601), duration (s), num_gpus, optional gpu_type,
    cluster, deadline (s after submit), tenant, id.

    ISO times are made relative to ``epoch`` (default: the earliest ISO submit time).
    """
    raw: list[tuple[int, dict[str, str]]] = list(_rows(path))
    iso: list[datetime] = []
    for _, row in raw:
        v = (row.get("submit_time") or "").strip()
        if v and not _is_number(v):
            with contextlib.suppress(ValueError):
                iso.append(_parse_iso(v))
    base = epoch or (min(iso) if iso else None)
    jobs: list[TraceJob] = []
    skipped = 0
    for line, row in raw:
        try:
            v = (row.get("submit_time") or "").strip()
            if not v:
                raise _BadRow("missing submit_time")
            if _is_number(v):
                sub = _num(row, "submit_time")
            else:
                try:
                    t = _parse_iso(v)
                except ValueError:
                    raise _BadRow(f"submit_time is neither seconds nor ISO-8601: {v!r}") from None
                assert base is not None
                sub = (t - base).total_seconds()
                if sub < 0:
                    raise _BadRow("submit_time before the trace epoch")
            dur = _num(row, "duration", positive=True)
            g = int(_num(row, "num_gpus", integer=True))
            dl = None
            if (row.get("deadline") or "").strip():
                dl = _num(row, "deadline", positive=True)
                if dl < dur:
                    raise _BadRow(f"deadline {dl:g} s is shorter than the duration {dur:g} s")
            gt = tuple(x for x in (row.get("gpu_type") or "").replace("|", " ").split() if x)
            jid = (row.get("id") or "").strip() or f"row{line}"
            jobs.append(
                TraceJob(
                    jid, sub, dur, g, home=(row.get("cluster") or "").strip() or None, gpu_types=gt,
                    deadline_s=dl, tenant=(row.get("tenant") or "").strip() or "default",
                )
            )
        except _BadRow as exc:
            if skip_bad_rows:
                skipped += 1
                continue
            raise InvalidInput(f"{path}:{line}: {exc}") from None
    jobs.sort(key=lambda j: (j.submit_s, j.id))
    return TraceRead(tuple(jobs), skipped, str(path))


def read_alibaba(
    pods: Path, *, skip_bad_rows: bool = False, home: str | None = None, type_map: Mapping[str, str] | None = None
) -> TraceRead:
    """Alibaba GPU 2023 openb pod list: GPU pods with creation/scheduled/deletion times.

    Fractional-GPU pods count as one GPU; ``gpu_spec`` (``|``-separated) becomes the accepted
    accelerator types, renamed through ``type_map`` (e.g. ``V100M32 -> A100`` for a scenario
    whose catalogue lacks the Alibaba codes). Pods never scheduled are left out.
    """

    def parse(line: int, row: Mapping[str, str]) -> TraceJob | None:
        name = (row.get("name") or "").strip()
        if not name:
            raise _BadRow("missing name")
        g = _num(row, "num_gpu", integer=True)
        if g == 0:
            return None
        if not (row.get("scheduled_time") or "").strip():
            return None
        created = _num(row, "creation_time")
        sched = _num(row, "scheduled_time")
        deleted = _num(row, "deletion_time")
        if deleted <= sched:
            return None
        specs = tuple((type_map or {}).get(s, s) for s in (row.get("gpu_spec") or "").split("|") if s)
        return TraceJob(name, created, deleted - sched, int(g), home=home, gpu_types=specs, tenant=row.get("qos") or "default")

    got, skipped = _read(pods, parse, skip_bad_rows)
    got.sort(key=lambda j: (j.submit_s, j.id))
    return TraceRead(tuple(got), skipped, str(pods))


def read_alibaba_nodes(path: Path) -> dict[str, int]:
    """GPUs per model in the openb node list (``model`` -> total GPUs)."""
    out: dict[str, int] = {}
    for line, row in _rows(path):
        m = (row.get("model") or "").strip()
        try:
            g = int(row.get("gpu") or 0)
        except ValueError:
            raise InvalidInput(f"{path}:{line}: gpu is not an integer") from None
        if m and g:
            out[m] = out.get(m, 0) + g
    return out


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _parse_iso(v: str) -> datetime:
    from datetime import UTC

    t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
