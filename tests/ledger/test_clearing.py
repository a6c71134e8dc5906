"""Multilateral netting is minimal (vs brute force) and sums to zero; statements are signed."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yungu.adapters.ledger.signing import new_key, public_b64, sign, statement_body, verify
from yungu.domain.errors import InvalidInput
from yungu.engines.ledger.clearing import minimal_settlements, net_positions


def brute_min_transfers(values: list[int]) -> int:
    """n - (max number of disjoint zero-sum groups), by trying every ordering's zero prefixes."""
    nz = [v for v in values if v]
    best = 0
    for perm in itertools.permutations(nz):
        run, k = 0, 0
        for v in perm:
            run += v
            k += run == 0
        best = max(best, k)
    return len(nz) - best


obligations = st.lists(st.tuples(st.sampled_from("ABCDEF"), st.sampled_from("ABCDEF"), st.integers(1, 30)),
                       max_size=12)


@settings(max_examples=80, deadline=None)
@given(obligations)
def test_netting_settles_everything_with_the_fewest_transfers(obs: list[tuple[str, str, int]]) -> None:
    pos = net_positions(obs)
    out = minimal_settlements(pos)
    after = dict(pos)
    for s in out:
        assert s.amount > 0
        after[s.payer] += s.amount
        after[s.payee] -= s.amount
    assert all(v == 0 for v in after.values())
    assert sum(pos.values()) == 0
    assert len(out) == brute_min_transfers(list(pos.values()))


def test_positions_that_do_not_sum_to_zero_are_refused() -> None:
    with pytest.raises(InvalidInput):
        minimal_settlements({"A": 5, "B": -4})


def test_signed_statement_verifies_and_tampering_is_detected() -> None:
    keys = {p: new_key() for p in ("yungu-bj", "peer-gz", "peer-gy")}
    pubs = {p: public_b64(k) for p, k in keys.items()}
    body = statement_body("2026-03", "CNY", net_positions([("peer-gz", "yungu-bj", 120_00), ("yungu-bj", "peer-gy", 50_00)]))
    sigs = {p: sign(body, k) for p, k in keys.items()}
    verify(body, sigs, pubs)
    tampered = dict(body, positions={**body["positions"], "peer-gz": -119_99, "yungu-bj": 69_99})
    with pytest.raises(InvalidInput):
        verify(tampered, sigs, pubs)
    with pytest.raises(InvalidInput):
        verify(body, {p: s for p, s in sigs.items() if p != "peer-gy"}, pubs)
