"""Feed parsers on the real files in ../shared/data/energy (skipped when absent)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import shared_data
from yungu.adapters.feeds.modelled import modelled_site_feed
from yungu.adapters.feeds.parsers import (
    parse_cn_emission_factors,
    parse_eia930,
    parse_electricity_maps,
    parse_german_15min,
    parse_prices,
)
from yungu.domain.errors import InvalidInput
from yungu.domain.world import Site
from yungu.engines.energy.signals import Provenance, SignalType


def test_electricity_maps_full_year_and_estimated_hours_flagged() -> None:
    de = parse_electricity_maps(shared_data("energy", "DE-LU_2023_hourly.csv"), "de")
    ci = de.longest(SignalType.CARBON_INTENSITY)
    assert ci is not None and len(ci) == 8760 and not de.gaps
    assert ci.start == datetime(2023, 1, 1, tzinfo=UTC)
    assert sum(ci.values) / 8760 == pytest.approx(307.7, abs=0.5)
    jp = parse_electricity_maps(shared_data("energy", "JP-TK_2023_hourly.csv"), "jp")
    assert set(jp.longest(SignalType.RENEWABLE_SHARE).provenance) == {Provenance.MODELLED}  # type: ignore[union-attr]


def test_eia930_gaps_are_reported_not_filled() -> None:
    pjm = parse_eia930(shared_data("energy", "PJM_NG_&_avgCI.csv"), "pjm")
    assert sum(g.hours for g in pjm.gaps if g.signal is SignalType.CARBON_INTENSITY) == 23
    assert pjm.hours(SignalType.CARBON_INTENSITY) == 8760 - 23
    ercot = parse_eia930(shared_data("energy", "ERCO_NG_&_avgCI.csv"), "erco")
    assert not ercot.gaps and ercot.hours(SignalType.RENEWABLE_SHARE) == 8760


def test_german_quarter_hours_become_hourly_and_incomplete_hours_are_gaps() -> None:
    de = parse_german_15min(shared_data("energy", "carbon_intensity.csv"), "de20")
    assert de.gaps and all(g.reason for g in de.gaps)
    total = de.hours(SignalType.CARBON_INTENSITY)
    assert 9200 < total < 9300  # 37,147 quarter-hours ≈ 9,287 hours, minus the incomplete ones


def test_prices_convert_to_cny_per_kwh_and_dst_anomalies_are_reported() -> None:
    de = parse_prices(
        shared_data("energy", "DE-LU_electricity_prices_2023.csv"), "de", naive_tz="Europe/Berlin"
    )
    assert any(g.reason == "missing timestamps" for g in de.gaps)  # the autumn DST hour appears once
    assert de.notes  # the spring DST copy is a duplicate, skipped and noted
    ercot = parse_prices(shared_data("energy", "US-TEX-ERCO_electricity_prices_2023.csv"), "tx")
    p = ercot.longest(SignalType.PRICE)
    assert p is not None and len(p) == 8760 and p.values[0] == pytest.approx(10.42 * 7.05 / 1000)


def test_china_factors_and_the_modelled_site_feed() -> None:
    f = parse_cn_emission_factors(shared_data("energy", "cn_grid_emission_factors_2021_2023.csv"))
    assert f["CN-NM"].by_year == {2021: 0.7025, 2022: 0.6849, 2023: 0.6479}
    site = Site(
        "h",
        "r",
        "H",
        "和",
        "p",
        40.38,
        111.82,
        1.15,
        Decimal("0.32"),
        energy_feed="modelled:cn-nm",
        green_contract_share=0.82,
    )
    sig, green = modelled_site_feed(
        site,
        datetime(2023, 1, 1, tzinfo=UTC),
        24 * 14,
        factors_csv=shared_data("energy", "cn_grid_emission_factors_2021_2023.csv"),
    )
    ci = sig.get(SignalType.CARBON_INTENSITY)
    assert ci is not None and set(ci.provenance) == {Provenance.MODELLED}
    assert sum(ci.values) / len(ci) == pytest.approx(647.9, rel=1e-6)
    assert min(green.values) >= 0.0 and max(green.values) <= 1.0


def test_a_file_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput, match="lacks columns"):
        parse_electricity_maps(p, "x")
