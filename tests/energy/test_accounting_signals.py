"""Carbon accounting (location vs market, gaps), forecasts without future leaks, China model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.accounting import account, hourly_match
from yungu.engines.energy.china_model import ProvinceMix, SiteParams, model_site
from yungu.engines.energy.signals import Forecast, ForecastErrorModel, Provenance, SignalSeries, SignalType

T0 = datetime(2023, 6, 1, tzinfo=UTC)
H = 3600


def series(kind: SignalType, vals: list[float], prov: Provenance = Provenance.MEASURED) -> SignalSeries:
    return SignalSeries.uniform("s", kind, T0, vals, prov)


def test_location_and_market_side_by_side_and_gaps_listed() -> None:
    e = T0.timestamp()
    hourly = {
        int(e): 3.6e6,
        int(e + H): 7.2e6,
        int(e + 5 * H): 3.6e6,
    }  # 1, 2 kWh, then 1 kWh outside the signals
    rep = account(
        hourly,
        pue=1.5,
        carbon_intensity=series(SignalType.CARBON_INTENSITY, [500.0, 100.0]),
        renewable_share=series(SignalType.RENEWABLE_SHARE, [0.2, 0.6]),
        contracted_green=series(SignalType.RENEWABLE_SHARE, [0.5, 1.0], Provenance.MODELLED),
    )
    assert rep.it_kwh == pytest.approx(4.0) and rep.facility_kwh == pytest.approx(6.0)
    assert rep.location.carbon_g == pytest.approx(1.5 * 500 + 3.0 * 100)
    assert rep.location.green_kwh == pytest.approx(1.5 * 0.2 + 3.0 * 0.6)
    assert rep.market.green_kwh == pytest.approx(1.5 * 0.5 + 3.0)
    assert rep.market.carbon_g == pytest.approx(0.75 * 500)
    assert rep.location.provenance is Provenance.MEASURED and rep.market.provenance is Provenance.MODELLED
    assert rep.gaps == (T0 + timedelta(hours=5),) and rep.location.covered_kwh == pytest.approx(4.5)


def test_hourly_matching_never_nets_across_hours() -> None:
    lines = hourly_match({T0: 10.0, T0 + timedelta(hours=1): 10.0}, {T0: 30.0})
    assert [m.matched_kwh for m in lines] == [10.0, 0.0]


def test_forecast_uses_only_truth_of_the_target_hour_and_is_reproducible() -> None:
    truth = series(SignalType.CARBON_INTENSITY, [100.0 + i for i in range(72)])
    em = ForecastErrorModel(seed=7)
    t = T0 + timedelta(hours=10, minutes=20)
    f1 = Forecast.issue(truth, t, 24, em, history_hours=3)
    f2 = Forecast.issue(truth, t, 24, em, history_hours=3)
    assert f1 == f2
    assert f1.start == T0 + timedelta(hours=7) and len(f1.values) == 27
    assert f1.at(T0 + timedelta(hours=9)) == 109.0  # observed hour: no error
    assert f1.provenance[-1] is Provenance.MODELLED
    # changing the truth of other hours does not move the forecast of hour h
    other = SignalSeries.uniform(
        "s",
        SignalType.CARBON_INTENSITY,
        T0,
        [100.0 + i if i != 20 else 999.0 for i in range(72)],
        Provenance.MEASURED,
    )
    g = Forecast.issue(other, t, 24, em, history_hours=3)
    assert g.at(T0 + timedelta(hours=21)) == f1.at(T0 + timedelta(hours=21))
    assert not hasattr(f1, "truth")


def test_forecast_error_grows_with_lead_time() -> None:
    truth = series(SignalType.CARBON_INTENSITY, [100.0] * 24 * 40)
    em = ForecastErrorModel(seed=1, sigma_1h=0.02, sigma_per_hour=0.01)
    near, far = [], []
    for d in range(30):
        f = Forecast.issue(truth, T0 + timedelta(days=d), 24, em)
        near.append(abs(f.values[1] - 100))
        far.append(abs(f.values[23] - 100))
    assert sum(far) > 3 * sum(near)


def test_perfect_error_model_reproduces_truth() -> None:
    truth = series(SignalType.RENEWABLE_SHARE, [0.1, 0.9, 0.5])
    f = Forecast.issue(truth, T0, 3, ForecastErrorModel(sigma_1h=0, sigma_per_hour=0))
    assert f.values == truth.values


def test_series_refuse_bad_values() -> None:
    with pytest.raises(InvalidInput):
        series(SignalType.RENEWABLE_SHARE, [1.2])
    with pytest.raises(InvalidInput):
        series(SignalType.CARBON_INTENSITY, [float("nan")])
    with pytest.raises(InvalidInput):
        SignalSeries.uniform("s", SignalType.PRICE, T0 + timedelta(minutes=5), [1.0], Provenance.MEASURED)


def test_china_model_keeps_the_official_annual_factor_and_flags_modelled() -> None:
    ghi = [
        max(0.0, 800 * __import__("math").sin(__import__("math").pi * ((h + 8) % 24 - 6) / 12))
        for h in range(24 * 30)
    ]
    mix = ProvinceMix("CN-NM", 0.6479, 0.01, 0.06, 0.20)
    sig = model_site(SiteParams("h", 0.32, 0.82), mix, T0, ghi, seed=3)
    ci = sig.get(SignalType.CARBON_INTENSITY)
    assert ci is not None and ci.any_modelled
    assert sum(ci.values) / len(ci.values) == pytest.approx(647.9, rel=1e-6)
    price = sig.get(SignalType.PRICE)
    assert (
        price is not None
        and min(price.values) == pytest.approx(0.16)
        and max(price.values) == pytest.approx(0.48)
    )
