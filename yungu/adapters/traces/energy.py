"""Small readers for the energy series the simulator maps onto sites.

Formats (see ../shared/data/energy/SOURCES.md):

- ``electricitymaps``: hourly CSV, ``Datetime (UTC)``, ``Carbon Intensity gCO₂eq/kWh (direct)``
  (or ``(LCA)``), ``Renewable Percentage``.
- ``eia930``: ``timestamp`` (UTC), generation by fuel (``WND``, ``SUN``, ``WAT``, ... MWh),
  ``avg_CI`` (gCO2/kWh); renewable share = (wind + solar + hydro) / total.
- ``price``: ``Datetime`` + ``Price (EUR/MWh)`` or ``Price (USD/MWh)``; naive times are read in
  the given time zone (DE-LU is local CET/CEST, CAISO is UTC), offsets are honoured.
- ``lwa``: the Let's Wait Awhile German 2020 series, ``time``, ``DE`` at 15 min -> hourly means.

A missing hour is filled from its neighbour and flagged ``modelled``; the number filled is
returned so a report can say so.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.signals import Provenance, SignalSeries, SignalType, floor_hour

HOUR = timedelta(hours=1)


def _open(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise InvalidInput(f"cannot read energy series {path}: {exc.strerror}") from exc


def _time(v: str, tz: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{where}: not a timestamp: {v!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(tz))
    return t.astimezone(UTC)


def _series(site: str, kind: SignalType, points: Mapping[datetime, list[float]], source: str) -> tuple[SignalSeries, int]:
    if not points:
        raise InvalidInput(f"{source}: no usable rows")
    hours = sorted(points)
    start, end = hours[0], hours[-1]
    vals: list[float] = []
    prov: list[Provenance] = []
    filled = 0
    h = start
    last = sum(points[start]) / len(points[start])
    while h <= end:
        got = points.get(h)
        if got:
            last = sum(got) / len(got)
            vals.append(last)
            prov.append(Provenance.MEASURED)
        else:
            vals.append(last)
            prov.append(Provenance.MODELLED)
            filled += 1
        h += HOUR
    return SignalSeries(site, kind, start, tuple(vals), tuple(prov), source), filled


def _f(row: Mapping[str, str], col: str, where: str) -> float | None:
    raw = (row.get(col) or "").strip()
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise InvalidInput(f"{where}: {col} is not a number: {raw!r}") from None
    return v if math.isfinite(v) else None


def read_electricitymaps(path: Path, site: str, *, lca: bool = False) -> dict[SignalType, SignalSeries]:
    rows = _open(path)
    ci_col = "Carbon Intensity gCO₂eq/kWh (LCA)" if lca else "Carbon Intensity gCO₂eq/kWh (direct)"
    if rows and ci_col not in rows[0]:
        raise InvalidInput(f"{path}: no column {ci_col!r} (is this an Electricity Maps hourly CSV?)")
    ci: dict[datetime, list[float]] = {}
    re: dict[datetime, list[float]] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        t = floor_hour(_time(row.get("Datetime (UTC)", ""), "UTC", where))
        c = _f(row, ci_col, where)
        r = _f(row, "Renewable Percentage", where)
        if c is not None and c >= 0:
            ci.setdefault(t, []).append(c)
        if r is not None:
            re.setdefault(t, []).append(min(1.0, max(0.0, r / 100)))
    out = {SignalType.CARBON_INTENSITY: _series(site, SignalType.CARBON_INTENSITY, ci, str(path))[0]}
    if re:
        out[SignalType.RENEWABLE_SHARE] = _series(site, SignalType.RENEWABLE_SHARE, re, str(path))[0]
    return out


def read_eia930(path: Path, site: str) -> dict[SignalType, SignalSeries]:
    rows = _open(path)
    ci: dict[datetime, list[float]] = {}
    re: dict[datetime, list[float]] = {}
    fuels = ("WND", "SUN", "WAT", "OIL", "NG", "COL", "NUC", "OTH")
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        t = floor_hour(_time(row.get("timestamp", ""), "UTC", where))
        c = _f(row, "avg_CI", where)
        if c is not None and c >= 0:
            ci.setdefault(t, []).append(c)
        gen = {k: _f(row, k, where) for k in fuels}
        if all(v is not None for v in gen.values()):
            tot = sum(max(0.0, v or 0.0) for v in gen.values())
            if tot > 0:
                green = sum(max(0.0, gen[k] or 0.0) for k in ("WND", "SUN", "WAT"))
                re.setdefault(t, []).append(green / tot)
    return {
        SignalType.CARBON_INTENSITY: _series(site, SignalType.CARBON_INTENSITY, ci, str(path))[0],
        SignalType.RENEWABLE_SHARE: _series(site, SignalType.RENEWABLE_SHARE, re, str(path))[0],
    }


def read_price(
    path: Path, site: str, *, tz: str = "UTC", fx_cny: Mapping[str, float], adder_cny_per_kwh: float = 0.0
) -> SignalSeries:
    """Day-ahead prices (currency/MWh) -> CNY/kWh: ``price / 1000 x fx + adder``."""
    rows = _open(path)
    if not rows:
        raise InvalidInput(f"{path}: empty price file")
    col = next((c for c in rows[0] if c.startswith("Price (")), None)
    if col is None:
        raise InvalidInput(f"{path}: no 'Price (CUR/MWh)' column")
    cur = col[len("Price (") :].split("/")[0]
    if cur not in fx_cny:
        raise InvalidInput(f"{path}: no exchange rate for {cur} (add it to [fx] in the scenario)")
    rate = fx_cny[cur]
    pts: dict[datetime, list[float]] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        try:
            t = floor_hour(_time(row.get("Datetime", ""), tz, where))
        except Exception as exc:  # nonexistent local times around DST
            raise InvalidInput(f"{where}: {exc}") from None
        v = _f(row, col, where)
        if v is not None:
            pts.setdefault(t, []).append(v / 1000 * rate + adder_cny_per_kwh)
    return _series(site, SignalType.PRICE, pts, str(path))[0]


def read_lwa(path: Path, site: str = "DE", column: str = "DE") -> SignalSeries:
    """Let's Wait Awhile German 2020 carbon intensity (15-min, time zone unstated: read as UTC)."""
    rows = _open(path)
    pts: dict[datetime, list[float]] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        t = floor_hour(_time(row.get("time", ""), "UTC", where))
        v = _f(row, column, where)
        if v is not None and v >= 0:
            pts.setdefault(t, []).append(v)
    return _series(site, SignalType.CARBON_INTENSITY, pts, str(path))[0]


def constant(site: str, kind: SignalType, start: datetime, hours: int, value: float) -> SignalSeries:
    """A flat series (e.g. a fixed tariff where no market price file exists), flagged modelled."""
    return SignalSeries.uniform(site, kind, floor_hour(start), [value] * hours, Provenance.MODELLED, "constant")
