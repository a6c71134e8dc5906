"""Live energy signals for the scheduler: truth series per site, forecasts issued hourly.

For each site the truth series comes from its ``energy_feed``: ``modelled:<province>`` (the
pvlib + wind model of ``feeds.modelled``, flagged modelled). The scheduler never sees the
truth: each hour a forecast is issued from it through the operator's error model
(``build_signals``), and that forecast object is reused for every round of the hour.
Sites without a usable feed are left out; the scheduler then uses the site's tariff and the
policy's default carbon intensity.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from yungu.adapters.feeds.modelled import modelled_site_feed
from yungu.domain.errors import InvalidInput
from yungu.domain.world import World
from yungu.engines.energy.signals import ForecastErrorModel, SiteSignal
from yungu.engines.scheduler.outlook import build_signals

log = logging.getLogger("yungu.signals")

WINDOW_BEFORE_H = 24
WINDOW_AFTER_H = 96


class LiveSignals:
    """``signals(now) -> {site_id: SiteForecast}`` for the control loop (thread-safe, cached)."""

    def __init__(self, world: World, error_model: ForecastErrorModel | None = None, horizon_hours: int = 48) -> None:
        self.world = world
        self.error_model = error_model or ForecastErrorModel(seed=0)
        self.horizon_hours = horizon_hours
        self._lock = threading.Lock()
        self._truth_day: datetime | None = None
        self._truth: dict[str, SiteSignal] = {}
        self._hour: datetime | None = None
        self._forecasts: Mapping[str, object] = {}
        self.problems: dict[str, str] = {}

    def _load_truth(self, day: datetime) -> None:
        start = day - timedelta(hours=WINDOW_BEFORE_H)
        truth: dict[str, SiteSignal] = {}
        for site in self.world.sites:
            feed = site.energy_feed or ""
            if not feed.startswith("modelled:"):
                continue
            try:
                truth[site.id], _contract = modelled_site_feed(site, start, WINDOW_BEFORE_H + WINDOW_AFTER_H)
            except InvalidInput as exc:  # e.g. a province without a modelled mix
                self.problems[site.id] = exc.message
                log.warning("no signals for site %s: %s", site.id, exc.message)
        self._truth, self._truth_day = truth, day

    def __call__(self, now: datetime) -> Mapping[str, object]:
        hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        with self._lock:
            if self._hour == hour:
                return self._forecasts
            day = hour.replace(hour=0)
            if self._truth_day != day:
                self._load_truth(day)
            self._forecasts = build_signals(self._truth, hour, self.error_model, self.horizon_hours)
            self._hour = hour
            return self._forecasts
