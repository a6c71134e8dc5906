"""The gateway's pure parts, as tables and properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yungu.domain.errors import InvalidInput
from yungu.engines.gateway.autoscale import Observed, ScalePolicy, desired
from yungu.engines.gateway.breaker import Breaker, BreakerPolicy, BreakerState
from yungu.engines.gateway.budget import Budget, Period, period_key
from yungu.engines.gateway.keys import KeyPolicy
from yungu.engines.gateway.limits import Bucket, retry_after_s
from yungu.engines.gateway.pricing import (
    Price,
    cny_text,
    parse_price,
    prompt_token_bound,
    units_to_fen_rounded,
)
from yungu.engines.gateway.receipts import book_batch, make_receipt
from yungu.engines.gateway.routing import Load, Preferences, Replica, Sort, choose

P = Price(Decimal("2"), Decimal("8"))


@pytest.mark.parametrize("bad", [0.5, "abc", "-1", "1.00001", "1e400", "NaN", "2000000"])
def test_prices_are_refused_when_not_exact_decimals(bad: object) -> None:
    with pytest.raises(InvalidInput):
        parse_price(bad)


def test_rating_is_exact_in_units_of_1e_10_cny() -> None:
    p = Price(parse_price("0.0001"), parse_price("12.3456"))
    assert p.cost(1, 0) == 1 and p.cost(0, 1) == 123456
    assert cny_text(p.cost(1_000_000, 1_000_000)) == "12.3457"
    assert units_to_fen_rounded(5 * 10**7) == 0 and units_to_fen_rounded(15 * 10**7) == 2  # half-even
    assert prompt_token_bound(10, 2) == 10 + 16 + 16


def test_budget_reserves_the_maximum_and_settles_the_actual() -> None:
    b = Budget(limit=100, period="2026-03")
    assert b.reserve("a", 60).ok and not b.reserve("b", 50).ok  # 60 + 50 > 100
    assert b.reserve("a", 60).ok and b.reserved == 60  # a retry reserves nothing more
    assert b.settle("a", 20) == 0 and (b.spent, b.reserved) == (20, 0)
    assert b.settle("a", 20) == 0 and b.spent == 20  # settled once
    assert b.reserve("b", 80).ok and not b.reserve("c", 1).ok
    b.release("b")
    assert b.reserve("c", 80).ok


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 100), st.booleans()), max_size=60),
       st.integers(0, 500))
def test_budget_never_overspends_whatever_the_interleaving(calls: list[tuple[int, int, bool]], limit: int) -> None:
    b = Budget(limit=limit, period="p")
    open_ = []
    for i, (actual, maximum, settle_first) in enumerate(calls):
        rid = f"r{i}"
        if b.reserve(rid, maximum).ok:
            open_.append((rid, min(actual, maximum)))
        if settle_first and open_:
            rid0, a0 = open_.pop(0)
            b.settle(rid0, a0)
        assert b.spent + b.reserved <= limit
    for rid, a in open_:
        b.settle(rid, a)
    assert b.spent <= limit and b.reserved == 0


def test_breaker_opens_after_x_failures_in_n_not_on_the_first_and_closes_by_itself() -> None:
    br = Breaker(BreakerPolicy(failures=3, window=5, cooldown_s=10))
    for ok in (False, True, False, True):
        br.record(ok, 0)
    assert br.state is BreakerState.CLOSED and br.allows(0)
    br.record(False, 1)  # the third failure among the last five
    assert br.state is BreakerState.OPEN and not br.allows(5)
    assert br.allows(11) and not br.allows(11)  # one probe at a time
    br.record(False, 11)
    assert br.state is BreakerState.OPEN and not br.allows(15)
    assert br.allows(22)
    br.record(True, 22)
    assert br.state is BreakerState.CLOSED and br.allows(22)
    old = Breaker(BreakerPolicy(failures=2, window=3))
    for ok in (False, True, True, True, False):  # failures far apart fall out of the window
        old.record(ok, 0)
    assert old.state is BreakerState.CLOSED


def test_buckets_say_how_long_to_wait() -> None:
    rpm = Bucket(60, 0.0, 0.0)
    assert all(rpm.admit(0.0, 1) == 0 for _ in range(60))
    assert rpm.admit(0.0, 1) == pytest.approx(1.0)
    assert rpm.admit(1.0, 1) == 0
    tpm = Bucket(100, 0.0, 0.0)
    assert tpm.under(0) == 0
    tpm.add(0, 250)
    assert tpm.under(0) == pytest.approx(150 * 60 / 100, abs=0.01)
    assert retry_after_s(0.2) == 1 and retry_after_s(19.5) == 20


def rep(rid: str, region: str = "horinger", price: Price = P, provider: str = "p", platform: str = "",
        green: float = 0.5) -> Replica:
    return Replica(rid, "m", f"http://127.0.0.1:1/{rid}", region, price, provider, platform, green_share=green)


DEAR = Price(Decimal("4"), Decimal("16"))
CASES = [
    # (name, replicas, prefs, allowed regions, breakers open, loads, expected order)
    ("cheapest first by default", [rep("a", price=DEAR), rep("b")], Preferences(), (), (), {}, ["b", "a"]),
    ("load counts", [rep("a"), rep("b")], Preferences(), (), (), {"a": Load(9)}, ["b", "a"]),
    ("residency excludes", [rep("a"), rep("b", "beijing")], Preferences(), ("beijing",), (), {}, ["b"]),
    ("request region", [rep("a"), rep("b", "beijing")], Preferences(regions=("horinger",)), (), (), {}, ["a"]),
    ("max price", [rep("a", price=DEAR), rep("b")], Preferences(max_price=P), (), (), {}, ["b"]),
    ("open breaker", [rep("a"), rep("b", price=DEAR)], Preferences(), (), ("a",), {}, ["b"]),
    ("order first", [rep("a"), rep("b", price=DEAR)], Preferences(order=("b",)), (), (), {}, ["b", "a"]),
    ("order by provider", [rep("a", provider="x"), rep("b", provider="y", price=DEAR)],
     Preferences(order=("y",)), (), (), {}, ["b", "a"]),
    ("no fallbacks", [rep("a"), rep("b", price=DEAR)], Preferences(allow_fallbacks=False), (), (), {}, ["a"]),
    ("order without fallbacks", [rep("a"), rep("b", price=DEAR), rep("c")],
     Preferences(order=("b",), allow_fallbacks=False), (), (), {}, ["b"]),
    ("sort latency", [rep("a"), rep("b")], Preferences(sort=Sort.LATENCY), (), (),
     {"a": Load(0, 50.0), "b": Load(0, 5.0)}, ["b", "a"]),
    ("sort throughput", [rep("a"), rep("b")], Preferences(sort=Sort.THROUGHPUT), (), (),
     {"a": Load(0, 0, 10.0), "b": Load(0, 0, 90.0)}, ["b", "a"]),
    ("greener wins a tie", [rep("a", green=0.1), rep("b", green=0.9)], Preferences(), (), (), {}, ["b", "a"]),
]


@pytest.mark.parametrize("name,reps,prefs,allowed,open_,loads,want", CASES, ids=[c[0] for c in CASES])
def test_routing_table(name: str, reps: list[Replica], prefs: Preferences, allowed: tuple[str, ...],
                       open_: tuple[str, ...], loads: dict[str, Load], want: list[str]) -> None:
    route = choose(reps, "m", prefs, allowed_regions=allowed, loads=loads,
                   breakers={r: BreakerState.OPEN for r in open_})
    assert [r.id for r in route.candidates] == want
    left = {r.id for r in reps} - set(want)
    assert set(route.excluded) == left  # every replica left out says why


def test_route_reserves_at_the_dearest_candidate() -> None:
    route = choose([rep("a"), rep("b", price=Price(Decimal("1"), Decimal("20")))], "m", Preferences())
    assert route.reserve_price == Price(Decimal("2"), Decimal("20"))


@pytest.mark.parametrize("raw", [[], {"order": "a"}, {"sort": "fast"}, {"max_price": 3}, {"region": 7},
                                 {"allow_fallbacks": "yes"}, {"ignore": ["x"]}])
def test_bad_preferences_are_refused(raw: object) -> None:
    with pytest.raises(InvalidInput):
        Preferences.parse(raw)


@pytest.mark.parametrize("seen,now,want", [
    (Observed(1, 0, 0, None), 0, 1),  # the minimum holds
    (Observed(1, 9, 0, None), 0, 3),  # 9 in flight / 4 per replica
    (Observed(1, 2, 5000, None), 0, 2),  # slow: one more
    (Observed(3, 40, 0, None), 0, 3),  # the maximum holds
    (Observed(3, 0, 0, 0.0), 60, 3),  # quiet, but not for long enough
    (Observed(3, 0, 0, 0.0), 200, 2),  # quiet long enough: one fewer at a time
])
def test_scaling_table(seen: Observed, now: float, want: int) -> None:
    assert desired(ScalePolicy(1, 3, 4.0, 2000.0, 120.0), seen, now) == want


def test_key_policy_refusals() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert KeyPolicy("k", "t").refusal("m", now)[:2] == (429, "insufficient_quota")  # type: ignore[index]
    assert KeyPolicy("k", "t", budget_units=1, models=("x",)).refusal("m", now)[1] == "model_not_allowed"  # type: ignore[index]
    assert KeyPolicy("k", "t", budget_units=1, expires_at=now).refusal("m", now)[1] == "key_expired"  # type: ignore[index]
    assert KeyPolicy("k", "t", budget_units=1).refusal("m", now) is None
    assert period_key(Period.MONTH, datetime(2026, 2, 28, 16, 30, tzinfo=UTC)) == "2026-03"  # CST
    assert period_key(Period.DAY, datetime(2026, 2, 28, 15, 59, tzinfo=UTC)) == "2026-02-28"


def receipt(i: int, tokens: int, client: str = "A", server: str = "B") -> object:
    return make_receipt(request_id=f"req{i}", server=server, client=client, model="m", tokens_in=tokens,
                        tokens_out=tokens, counted=False, price=Price(Decimal("0.0003"), Decimal("0.0007")),
                        served_at="2026-03-01T00:00:00+00:00", period="2026-03")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3_000_000), min_size=1, max_size=40), st.data())
def test_receipt_batches_book_the_same_total_however_split(tokens: list[int], data: st.DataObject) -> None:
    rs = [receipt(i, t) for i, t in enumerate(tokens)]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(rs) - 1)), max_size=5)))
    total, before, start = 0, 0, 0
    for end in [*cuts, len(rs)]:
        if end <= start:
            continue
        b = book_batch("client", "A", rs[start:end], before, f"b{end}")  # type: ignore[arg-type]
        total, before, start = total + b.fen, b.cum_units_after, end
    assert total == units_to_fen_rounded(sum(r.cost_units for r in rs))  # type: ignore[attr-defined]


def test_receipts_are_validated() -> None:
    r = receipt(1, 10)
    body = r.body()  # type: ignore[attr-defined]
    from yungu.engines.gateway.receipts import TokenReceipt

    assert TokenReceipt.from_body(body) == r
    for change in ({"cost_units": 1}, {"client": "B"}, {"id": "rcpt:B:other"}, {"format": "v0"},
                   {"tokens_in": -1}, {"extra": 1}):
        with pytest.raises(InvalidInput):
            TokenReceipt.from_body({**body, **change})
