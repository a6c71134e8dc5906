"""Money, ids, catalogue and config rules."""

from decimal import Decimal
from pathlib import Path

import pytest

from yungu.adapters.config import load_catalogue, load_config
from yungu.adapters.system import Ids
from yungu.domain.catalogue import Precision
from yungu.domain.errors import InvalidInput
from yungu.domain.ids import is_id
from yungu.domain.money import Money, parse_amount


def test_money_refuses_floats_and_excess_precision() -> None:
    with pytest.raises(InvalidInput, match="float"):
        parse_amount(0.1)
    with pytest.raises(InvalidInput, match="precision"):
        parse_amount("1.001", "CNY")
    assert parse_amount("12.30") == Decimal("12.30")
    with pytest.raises(InvalidInput, match="currency mismatch"):
        Money(Decimal(1), "CNY") + Money(Decimal(1), "USD")


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = Ids()
    got = [ids.new() for _ in range(20000)]  # > 4,096 per millisecond on a fast machine
    assert all(is_id(i) and i[14] == "7" for i in got)
    assert got == sorted(got) and len(set(got)) == len(got)


def test_catalogue_entries_all_cite_sources() -> None:
    cat = load_catalogue()
    for model in ("H100", "H800", "A800", "A100", "L40S", "Ascend-910B", "MLU370", "cpu-xeon-8480"):
        spec = cat.get(model)
        assert spec.sources and spec.tdp_w > 0 and spec.memory_gb > 0
    assert cat.get("H100").peak(Precision.FP16) > cat.get("A100").peak(Precision.FP16)


def test_default_world_matches_design() -> None:
    cfg = load_config()
    w = cfg.world
    assert [r.id for r in w.regions] == ["horinger", "beijing", "wuhu", "guizhou", "chongqing", "suzhou"]
    assert [r.id for r in w.regions if r.home] == ["horinger"]
    horinger = w.site("horinger-dc1")
    assert horinger.green_contract_share > 0.8 and horinger.electricity_price_cny_per_kwh == Decimal("0.32")
    h800 = w.pool("horinger-h800")
    pflops = h800.total_devices * load_catalogue().get("H800").peak(Precision.FP16) / 1000
    assert 9000 < pflops < 9200  # Hohhot's 2024 figure: 9,084 P intelligent


@pytest.mark.parametrize(("toml", "message"), [
    ("[[region]]\nid='a'\nname='A'\n[executor.local]\ntype='local'\n[[site]]\nid='s'\nregion='zz'\nname='S'\nlat=0\nlon=0", "unknown region"),
    ("[executor.x]\ntype='k8s'", "use local, slurm or ray"),
    ("this is = = not toml", "not valid TOML"),
    ("[[region]]\nid='a'\nname='A'\n[executor.local]\ntype='local'\n[[site]]\nid='s'\nregion='a'\nname='S'\nlat=0\nlon=0\n"
     "[[pool]]\nid='p'\nsite='s'\ncompute_class='intelligent'\nnodes=1\ncpus_per_node=4\nmemory_gb_per_node=8\naccelerator='TPUv9'", "not in the catalogue"),
])
def test_bad_config_names_the_problem(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(InvalidInput, match=message):
        load_config(f)
