"""The forecast error model draws one seeded generator per (site, signal, issue hour)."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

from yungu.engines.energy.signals import Forecast, ForecastErrorModel, Provenance, SignalSeries, SignalType

T0 = datetime(2023, 3, 1, tzinfo=UTC)


def test_errors_do_not_depend_on_the_horizon_or_on_which_hour_is_asked():
    truth = SignalSeries.uniform("s", SignalType.CARBON_INTENSITY, T0, [300.0] * 200, Provenance.MEASURED)
    em = ForecastErrorModel(seed=3)
    issued = T0 + timedelta(hours=30, minutes=5)
    short, long = Forecast.issue(truth, issued, 12, em), Forecast.issue(truth, issued, 48, em)
    assert long.values[:12] == short.values
    hour = T0 + timedelta(hours=30)
    for lead in (1, 7, 40):
        e = em.relative_error("s", SignalType.CARBON_INTENSITY, hour, hour + timedelta(hours=lead))
        assert long.at(hour + timedelta(hours=lead)) == 300.0 * (1 + e)
    assert em.relative_error("s", SignalType.CARBON_INTENSITY, hour, hour) == 0.0
    other = Forecast.issue(truth, issued + timedelta(hours=1), 48, em)  # another issue hour: other draws
    assert other.values[1:] != long.values[2:49]


def test_errors_have_the_stated_spread():
    em = ForecastErrorModel(seed=1, sigma_1h=0.05, sigma_per_hour=0.0, sigma_max=0.5)
    errs = [e for h in range(400) for e in em.relative_errors("s", SignalType.PRICE, T0 + timedelta(hours=h), 24)]
    assert abs(statistics.fmean(errs)) < 0.005
    assert 0.047 < statistics.pstdev(errs) < 0.053
