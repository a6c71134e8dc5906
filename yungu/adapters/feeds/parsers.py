"""Parsers for the published grid-signal files (see ``../shared/data/energy/SOURCES.md``).

Each parser returns a :class:`FeedResult`: contiguous hourly :class:`SignalSeries`
segments per signal type plus every gap found. A gap (a missing timestamp, a blank or
non-numeric cell) splits the series and is reported; it is never interpolated.

Formats:

* Electricity Maps hourly CSV: ``Datetime (UTC)``, CI direct/LCA gCO2eq/kWh,
  ``Renewable Percentage``; ``Data Estimated=true`` hours are flagged ``modelled``.
* EIA-930 ``*_NG_&_avgCI.csv`` (dc-rl): generation by fuel in MWh per hour and ``avg_CI``;
  renewable share = (WND + SUN + WAT) / total generation.
* Let's Wait Awhile German 2020 ``carbon_intensity.csv``: 15-minute ``time,DE``; aggregated
  to hourly means, an hour missing any quarter is a gap. Time zone is not stated upstream;
  read as UTC (documented assumption).
* Day-ahead prices: ``Datetime``, ``Price (EUR/MWh)`` or ``Price (USD/MWh)``; converted to
  CNY/kWh at a stated exchange rate. Naive timestamps are read in the zone given (DE-LU is
  local wall clock, CAISO is UTC); offsets are honoured when present.
* China provincial grid emission factors (compiled MEE/NBS table), kgCO2/kWh by year.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.signals import HOUR, Provenance, SignalSeries, SignalType, SiteSignal

# 2023 annual average reference rates (PBOC central parity, rounded); override per call.
FX_TO_CNY = {"USD": 7.05, "EUR": 7.66, "CNY": 1.0}


@dataclass(frozen=True)
class Gap:
    signal: SignalType
    start: datetime  # first missing hour
    hours: int
    reason: str


@dataclass
class FeedResult:
    site_id: str
    source: str
    series: dict[SignalType, list[SignalSeries]] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def longest(self, kind: SignalType) -> SignalSeries | None:
        segs = self.series.get(kind, [])
        return max(segs, key=len) if segs else None

    def site_signal(self) -> SiteSignal:
        """The longest contiguous segment of each signal, as a :class:`SiteSignal`."""
        out = {k: s for k in self.series if (s := self.longest(k)) is not None}
        return SiteSignal(self.site_id, out)

    def hours(self, kind: SignalType) -> int:
        return sum(len(s) for s in self.series.get(kind, []))


Row = tuple[datetime, float | None, Provenance]


def _segments(
    result: FeedResult,
    kind: SignalType,
    rows: Iterable[Row],
    *,
    clamp: Callable[[float], float] | None = None,
) -> None:
    """Split time-ordered hourly rows into contiguous series; record every gap."""
    segs: list[SignalSeries] = []
    cur_start: datetime | None = None
    vals: list[float] = []
    prov: list[Provenance] = []
    prev: datetime | None = None

    def flush() -> None:
        nonlocal cur_start, vals, prov
        if cur_start is not None and vals:
            segs.append(
                SignalSeries(result.site_id, kind, cur_start, tuple(vals), tuple(prov), result.source)
            )
        cur_start, vals, prov = None, [], []

    for t, v, p in rows:
        if prev is not None:
            step = t - prev
            if step <= timedelta(0):
                result.notes.append(f"{kind}: duplicate or out-of-order timestamp {t.isoformat()} skipped")
                continue
            if step > HOUR:
                missing = int(step / HOUR) - 1
                result.gaps.append(Gap(kind, prev + HOUR, missing, "missing timestamps"))
                flush()
        prev = t
        if v is None or not math.isfinite(v):
            last = result.gaps[-1] if result.gaps else None
            reason = "blank or non-numeric value"
            if last and last.signal is kind and last.reason == reason and last.start + HOUR * last.hours == t:
                result.gaps[-1] = Gap(kind, last.start, last.hours + 1, reason)
            else:
                result.gaps.append(Gap(kind, t, 1, reason))
            flush()
            continue
        if clamp is not None:
            v = clamp(v)
        if cur_start is None:
            cur_start = t
        vals.append(v)
        prov.append(p)
    flush()
    result.series[kind] = segs


def _num(cell: str | None) -> float | None:
    if cell is None or cell.strip() == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _utc(text: str, tz: ZoneInfo | None = None) -> datetime:
    t = datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz or UTC)
    return t.astimezone(UTC)


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"cannot read feed file {path}: {exc}") from exc


def _require(rows: list[dict[str, str]], path: Path, *cols: str) -> None:
    if not rows:
        raise InvalidInput(f"feed file {path.name} has no rows")
    missing = [c for c in cols if c not in rows[0]]
    if missing:
        raise InvalidInput(f"feed file {path.name} lacks columns {missing}; has {list(rows[0])}")


def _share(v: float) -> float:
    return min(1.0, max(0.0, v))


def parse_electricity_maps(path: Path, site_id: str, *, lifecycle: bool = False) -> FeedResult:
    """Electricity Maps hourly CSV: carbon intensity (direct by default) and renewable share."""
    rows = _read(path)
    ci_col = "Carbon Intensity gCO₂eq/kWh (LCA)" if lifecycle else "Carbon Intensity gCO₂eq/kWh (direct)"
    _require(rows, path, "Datetime (UTC)", ci_col, "Renewable Percentage")
    zone = rows[0].get("Zone Id", "")
    res = FeedResult(site_id, f"Electricity Maps {zone} ({path.name}), ODbL")
    parsed = []
    for r in rows:
        p = (
            Provenance.MODELLED
            if r.get("Data Estimated", "").strip().lower() == "true"
            else Provenance.MEASURED
        )
        parsed.append((_utc(r["Datetime (UTC)"]), r, p))
    _segments(res, SignalType.CARBON_INTENSITY, ((t, _num(r[ci_col]), p) for t, r, p in parsed))
    re_rows = (
        (t, None if (x := _num(r["Renewable Percentage"])) is None else x / 100.0, p) for t, r, p in parsed
    )
    _segments(res, SignalType.RENEWABLE_SHARE, re_rows, clamp=_share)
    return res


EIA_FUELS = ("WND", "SUN", "WAT", "OIL", "NG", "COL", "NUC", "OTH")


def parse_eia930(path: Path, site_id: str) -> FeedResult:
    """EIA-930 generation by fuel + ``avg_CI`` (dc-rl file)."""
    rows = _read(path)
    _require(rows, path, "timestamp", "avg_CI", *EIA_FUELS)
    res = FeedResult(site_id, f"US EIA-930 via dc-rl ({path.name}), public domain")
    ci: list[Row] = []
    re: list[Row] = []
    for r in rows:
        t = _utc(r["timestamp"])
        fuel = [_num(r[c]) for c in EIA_FUELS]
        ci.append((t, _num(r["avg_CI"]), Provenance.MEASURED))
        if any(v is None for v in fuel):
            re.append((t, None, Provenance.MEASURED))
            continue
        gen = [max(0.0, v) for v in fuel if v is not None]
        total = sum(gen)
        re.append((t, (gen[0] + gen[1] + gen[2]) / total if total > 0 else None, Provenance.MEASURED))
    _segments(res, SignalType.CARBON_INTENSITY, ci)
    _segments(res, SignalType.RENEWABLE_SHARE, re, clamp=_share)
    return res


def parse_german_15min(path: Path, site_id: str) -> FeedResult:
    """The 15-minute German series, averaged to hours (incomplete hours are gaps)."""
    rows = _read(path)
    _require(rows, path, "time", "DE")
    res = FeedResult(site_id, f"Let's Wait Awhile DE 2020 ({path.name}), MIT; time zone assumed UTC")
    buckets: dict[datetime, list[float]] = {}
    bad: set[datetime] = set()
    for r in rows:
        t = _utc(r["time"])
        h = t.replace(minute=0, second=0, microsecond=0)
        v = _num(r["DE"])
        if v is None or not math.isfinite(v):
            bad.add(h)
            continue
        buckets.setdefault(h, []).append(v)
    hourly: list[Row] = []
    for h in sorted(set(buckets) | bad):
        vals = buckets.get(h, [])
        ok = len(vals) == 4 and h not in bad
        hourly.append((h, sum(vals) / 4 if ok else None, Provenance.MEASURED))
        if not ok and vals:
            res.notes.append(f"{h.isoformat()}: {len(vals)} of 4 quarter-hours present")
    _segments(res, SignalType.CARBON_INTENSITY, hourly)
    return res


def parse_prices(
    path: Path, site_id: str, *, naive_tz: str = "UTC", fx_to_cny: float | None = None
) -> FeedResult:
    """Day-ahead price CSV -> CNY/kWh. ``naive_tz`` is the zone of offset-less timestamps."""
    rows = _read(path)
    if not rows:
        raise InvalidInput(f"feed file {path.name} has no rows")
    col = next((c for c in rows[0] if c.startswith("Price (")), None)
    if col is None or "Datetime" not in rows[0]:
        raise InvalidInput(f"feed file {path.name} is not a day-ahead price file (Datetime, Price (CUR/MWh))")
    cur = col[len("Price (") :].split("/")[0]
    rate = fx_to_cny if fx_to_cny is not None else FX_TO_CNY.get(cur)
    if rate is None:
        raise InvalidInput(f"no exchange rate for {cur}; pass fx_to_cny")
    tz = ZoneInfo(naive_tz)
    res = FeedResult(site_id, f"day-ahead prices ({path.name}), {cur}/MWh x {rate} CNY/{cur}")
    parsed: list[Row] = []
    for r in rows:
        v = _num(r[col])
        parsed.append(
            (_utc(r["Datetime"], tz), None if v is None else v * rate / 1000.0, Provenance.MEASURED)
        )
    parsed.sort(key=lambda x: x[0])
    _segments(res, SignalType.PRICE, parsed)
    return res


@dataclass(frozen=True)
class ProvinceFactor:
    level: str
    name_cn: str
    name_en: str
    iso: str
    by_year: dict[int, float]  # kgCO2/kWh

    def latest(self) -> tuple[int, float]:
        y = max(self.by_year)
        return y, self.by_year[y]


def parse_cn_emission_factors(path: Path) -> dict[str, ProvinceFactor]:
    """Provincial/regional/national annual factors keyed by ISO code (or English name)."""
    rows = _read(path)
    _require(rows, path, "level", "name_cn", "name_en", "iso_code")
    out: dict[str, ProvinceFactor] = {}
    for r in rows:
        years = {}
        for col, cell in r.items():
            if col and col.startswith("ef_") and (v := _num(cell)) is not None:
                if not 0.0 < v < 2.0:
                    raise InvalidInput(f"{path.name}: implausible factor {v} kg/kWh for {r['name_en']}")
                years[int(col.split("_")[1])] = v
        key = r["iso_code"].strip() or r["name_en"].strip()
        out[key] = ProvinceFactor(r["level"], r["name_cn"], r["name_en"], key, years)
    return out
