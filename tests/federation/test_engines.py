"""The federation engines as tables: leases and epochs, health, policy, offers, receipts, positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yungu.domain.errors import InvalidInput
from yungu.domain.job import Job, JobSpec, JobState
from yungu.domain.world import ComputeClass, Pool, Region, Site
from yungu.engines.federation import health as H
from yungu.engines.federation import lease as L
from yungu.engines.federation.messages import DelegatedSpec, Delegation, PoolOffer, UsageReceipt
from yungu.engines.federation.offers import extend_world, pool_state, split_remote, to_remote_pool
from yungu.engines.federation.policy import Direction, PeeringPolicy
from yungu.engines.federation.positions import bilateral, multilateral
from yungu.engines.federation.receipts import DelegationRecord, origin_entry, peer_entry, validate
from yungu.engines.ledger.book import Book
from yungu.engines.ledger.clearing import minimal_settlements
from yungu.engines.ledger.model import Account, AccountKind
from yungu.engines.scheduler.plugins import PoolView, RemotePlacement

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
TERMS = L.LeaseTerms(ttl_s=30, renew_every_s=5, max_skew_s=5, stop_budget_s=7, replace_margin_s=1)


def s(x: float) -> timedelta:
    return timedelta(seconds=x)


# ------------------------------------------------------------------ leases

@pytest.mark.parametrize(("now", "expires", "epoch", "highest", "renewal", "want"), [
    (T0, T0 + s(30), 0, None, False, L.LeaseCheck.OK),
    (T0, T0 + s(36), 0, None, False, L.LeaseCheck.TOO_LONG),  # beyond ttl + skew
    (T0, T0 + s(11), 0, None, False, L.LeaseCheck.TOO_SHORT),  # stop time (expiry - 12 s) already passed
    (T0, T0 + s(11), 0, None, True, L.LeaseCheck.EXPIRED),
    (T0, T0 + s(30), 1, 2, False, L.LeaseCheck.FENCED),  # a later attempt was seen
    (T0, T0 + s(30), 2, 2, True, L.LeaseCheck.OK),
    (T0, T0 + s(30), 3, 2, False, L.LeaseCheck.OK),  # a higher epoch fences the older ones
])
def test_a_peer_accepts_a_grant_only_inside_the_rules(now, expires, epoch, highest, renewal, want) -> None:
    assert L.check_grant(now, expires, epoch, highest, TERMS, renewal=renewal) is want


def test_leases_never_shrink_and_the_origin_waits_for_expiry_plus_margin() -> None:
    e1, e0 = T0 + s(30), T0 + s(20)
    assert L.extend(None, e1) == e1
    assert L.extend(e1, e0) == e1  # a late renewal cannot shorten what was recorded
    assert not L.may_replace(e1, e1, TERMS)
    assert not L.may_replace(e1 + s(0.9), e1, TERMS)
    assert L.may_replace(e1 + s(1), e1, TERMS)
    assert L.may_replace(T0, None, TERMS)  # nothing was ever sent


@given(skew=st.floats(-5, 5), renew_at=st.floats(0, 1000))
def test_at_most_one_running_copy_for_any_skew_within_the_bound(skew: float, renew_at: float) -> None:
    """The peer (clock = origin + skew) has stopped the job before the origin may re-place it."""
    granted = L.grant(T0 + s(renew_at), TERMS)  # the last grant the origin recorded and sent
    dead_by_peer_clock = L.peer_dead_by(granted, TERMS)
    dead_by_origin_clock = dead_by_peer_clock - s(skew)
    earliest_replace = L.replace_at(granted, TERMS)
    assert dead_by_origin_clock <= earliest_replace
    assert L.peer_stop_at(granted, TERMS) < dead_by_peer_clock


@pytest.mark.parametrize(("terms", "ok"), [
    (L.LeaseTerms(), True),
    (L.LeaseTerms(ttl_s=8, renew_every_s=1, max_skew_s=2, stop_budget_s=2.5), True),
    (L.LeaseTerms(ttl_s=10, renew_every_s=4, max_skew_s=2, stop_budget_s=2), False),  # renews too rarely
    (L.LeaseTerms(ttl_s=5, renew_every_s=1, max_skew_s=3, stop_budget_s=3), False),  # stopped at once
    (L.LeaseTerms(ttl_s=0), False),
])
def test_lease_terms_are_checked(terms: L.LeaseTerms, ok: bool) -> None:
    assert (terms.validate() == []) is ok


# ------------------------------------------------------------------ health

def test_health_is_a_state_machine_healthy_suspect_lost_and_back_through_reconciliation() -> None:
    terms = H.HealthTerms(suspect_after_s=3, lost_after_s=10)
    h = H.PeerHealth(since=T0)
    h, ch = H.on_success(h, T0)
    assert ch is None and h.state is H.PeerState.HEALTHY
    assert not H.usable_for_new_work(h)  # a fresh link reconciles first
    h = H.reconciled(h)
    assert H.usable_for_new_work(h)
    h, ch = H.on_failure(h, T0 + s(1), "timeout", terms)
    assert ch is None and h.state is H.PeerState.HEALTHY
    h, ch = H.tick(h, T0 + s(4), terms)
    assert ch is not None and (ch.before, ch.after) == (H.PeerState.HEALTHY, H.PeerState.SUSPECT)
    assert not H.usable_for_new_work(h)
    h, ch = H.tick(h, T0 + s(11.5), terms)
    assert ch is not None and ch.after is H.PeerState.LOST
    h, ch = H.on_success(h, T0 + s(20))
    assert ch is not None and ch.after is H.PeerState.HEALTHY and h.needs_reconcile
    assert not H.usable_for_new_work(h)
    assert H.usable_for_new_work(H.reconciled(h))


# ------------------------------------------------------------------ policy, offers, scheduler view

def offer(**kw: object) -> PoolOffer:
    base = dict(offer_id="yungu-horinger:h-gpu:1", platform_id="yungu-horinger", pool_id="h-gpu", site_id="h-dc",
                region_id="horinger", region_name="Horinger", compute_class="intelligent", accelerator="H800",
                nodes=4, cpus_per_node=32, memory_gb_per_node=256, accelerators_per_node=8,
                free=((2, 32, 256, 8), (1, 8, 64, 2)), price_cny_per_device_hour=Decimal("9.50"),
                price_cny_per_cpu_hour=Decimal("0.06"), pue=1.15, green_contract_share=0.82, forecast=None,
                issued_at=T0, expires_at=T0 + s(15))
    base.update(kw)
    return PoolOffer(**base)  # type: ignore[arg-type]


def test_an_offer_round_trips_and_bad_offers_are_refused() -> None:
    o = offer()
    assert PoolOffer.from_dict(o.to_dict()) == o
    assert o.devices_free == 18
    for bad in ({"price_cny_per_device_hour": 9.5}, {"free": [[9, 1, 1, 1]]}, {"expires_at": "2026-12-01T07:00:00Z"},
                {"compute_class": "quantum"}, {"pue": 7}):
        with pytest.raises(InvalidInput):
            PoolOffer.from_dict({**o.to_dict(), **bad})


def test_an_offer_becomes_a_pool_at_our_resale_price_with_its_free_nodes_first() -> None:
    policy = PeeringPolicy(resale_markup=Decimal("0.10"))
    rp = to_remote_pool(offer(), "Horinger", policy, 12.0, T0 + s(2))
    assert not isinstance(rp, str)
    assert rp.pool.id == "yungu-horinger/h-gpu" and rp.site.executor == "peer:yungu-horinger"
    assert rp.pool.price_cny_per_device_hour == Decimal("10.4500")
    assert [len(n.devices) for n in rp.state.nodes] == [8, 8, 2, 0]
    assert dict(rp.pool.labels)["federation.latency_ms"] == "12.0"
    assert split_remote(rp.pool.id) == ("yungu-horinger", "h-gpu") and split_remote("local-pool") is None
    assert isinstance(to_remote_pool(offer(), "H", policy, 0, T0 + s(16)), str)  # expired
    capped = PeeringPolicy(delegate=Direction(max_price_cny_per_device_hour=Decimal("5")))
    assert "above the peering cap" in str(to_remote_pool(offer(), "H", capped, 0, T0))
    classes = PeeringPolicy(delegate=Direction(compute_classes=("general",)))
    assert "compute class" in str(to_remote_pool(offer(), "H", classes, 0, T0))


def test_pin_and_forbid_by_platform_region_local_or_remote() -> None:
    rp = to_remote_pool(offer(), "Horinger", PeeringPolicy(), 12.0, T0)
    assert not isinstance(rp, str)
    local_site = Site("b-dc", "beijing", "b", "b", "p", 0, 0, 1.3, Decimal("0.6"))
    local = Pool("b-gpu", "b-dc", "b", ComputeClass.INTELLIGENT, 1, 8, 64, "A800", 8)
    f = RemotePlacement()

    def ok(labels: dict[str, str], pool: Pool, site: Site) -> bool:
        job = Job("j", "p", "t", JobSpec("n", "true", labels=labels), JobState.QUEUED, T0, T0)
        return f.filter(job, PoolView(pool, site, True, Decimal(1))).ok

    for labels, remote_ok, local_ok in [({}, True, True), ({"federation.forbid": "remote"}, False, True),
                                        ({"federation.pin": "platform:yungu-horinger"}, True, False),
                                        ({"federation.pin": "region:beijing"}, False, True),
                                        ({"federation.forbid": "region:horinger"}, False, True),
                                        ({"federation.pin": "local"}, False, True)]:
        assert ok(labels, rp.pool, rp.site) is remote_ok, labels
        assert ok(labels, local, local_site) is local_ok, labels


def test_the_world_grows_by_remote_regions_sites_and_pools_and_local_ids_win() -> None:
    from yungu.domain.world import World

    rp = to_remote_pool(offer(), "Horinger", PeeringPolicy(), 0, T0)
    assert not isinstance(rp, str)
    w = World("yungu-beijing", "B", (Region("beijing", "B", "B"),), (), ())
    w2 = extend_world(w, [rp])
    assert {r.id for r in w2.regions} == {"beijing", "horinger"} and w2.pool(rp.pool.id).site_id == rp.site.id
    assert pool_state(offer(free=()), "x").nodes[0].devices == ()


def test_policy_parsing_refuses_floats_and_unknown_keys() -> None:
    p = PeeringPolicy.from_dict({"delegate": {"max_price_cny_per_device_hour": "12.5", "tenants": ["t1"]},
                                 "accept": {"quota_devices": 64}, "max_peers_per_job": 1})
    assert PeeringPolicy.from_dict(p.to_dict()) == p
    for bad in ({"delegate": {"max_price_cny_per_device_hour": 12.5}}, {"nope": 1}, {"accept": {"x": 1}},
                {"max_peers_per_job": 0}):
        with pytest.raises(InvalidInput):
            PeeringPolicy.from_dict(bad)


def test_a_delegation_round_trips_and_names_its_request() -> None:
    d = Delegation("yungu-beijing", "job-1", 2, "h-gpu", "t1", DelegatedSpec("n", "echo", 1, 1, 1, 4), T0 + s(30),
                   "o1", Decimal("9.50"), Decimal("0.06"))
    assert Delegation.from_dict(d.to_dict()) == d and d.request_id == "job-1.2"
    with pytest.raises(InvalidInput):
        Delegation.from_dict({**d.to_dict(), "origin": "Not A Platform!"})


# ------------------------------------------------------------------ receipts

def receipt(**kw: object) -> UsageReceipt:
    base = dict(receipt_id="rc:yungu-horinger:job-1.0", kind="compute", issuer="yungu-horinger",
                origin="yungu-beijing", request_id="job-1.0", outcome="succeeded", started_at=T0 + s(1),
                finished_at=T0 + s(3601), devices=4, device_seconds=14400, kwh=Decimal("2.99"),
                kwh_method="modelled", carbon_g=Decimal("1000"), carbon_method="m", green_share=0.8,
                price_cny_per_unit_hour=Decimal("9.50"), amount_fen=3800, period="2026-12")
    base.update(kw)
    return UsageReceipt(**base)  # type: ignore[arg-type]


REC = DelegationRecord("job-1.0", "yungu-horinger", 4, Decimal("9.50"), T0)


@pytest.mark.parametrize(("r", "rec", "problem"), [
    (receipt(), REC, ""),
    (receipt(), None, "never delegated"),
    (receipt(issuer="yungu-guizhou"), REC, "delegated to yungu-horinger"),
    (receipt(origin="yungu-wuhu"), REC, "addressed to yungu-wuhu"),
    (receipt(amount_fen=3801), REC, "above 3800 fen"),
    (receipt(price_cny_per_unit_hour=Decimal("10")), REC, "above the offered"),
    (receipt(device_seconds=14400 * 2), REC, "exceed 4 devices"),
    (receipt(started_at=T0 - s(60)), REC, "before the job was delegated"),
    (receipt(finished_at=T0 + s(99999)), REC, "in the future"),
])
def test_a_peer_cannot_bill_for_what_it_was_not_delegated_nor_above_the_offered_price(r, rec, problem) -> None:
    why = validate(r, rec, me="yungu-beijing", now=T0 + s(4000), max_skew_s=5)
    assert (not why) if not problem else any(problem in w for w in why), why


def book(*ids: str) -> Book:
    b = Book()
    for i in ids:  # unlimited accounts: the test is about which legs move, not about limits
        b.open(Account(i, AccountKind.PEER_CLEARING if i.startswith("peer:") else AccountKind.TENANT_ARREARS, "CNY",
                       None))
    return b


def test_both_sides_book_a_receipt_once_and_their_clearing_accounts_mirror_each_other() -> None:
    r = receipt()
    origin = book("tenant:t:wallet", "sys:cny:escrow", "sys:cny:vat", "sys:cny:revenue", "peer:yungu-horinger:clearing")
    entry = origin_entry(r, usage_id="usage:job-1.0", job_id="job-1", gross=4180, reserved=None,
                         charge_from="tenant:t:wallet", escrow="sys:cny:escrow", vat_account="sys:cny:vat",
                         revenue="sys:cny:revenue")
    assert all(o.ok for o in origin.apply_linked(entry, T0))
    assert all(o.result.value == "exists" for o in origin.apply_linked(entry, T0))  # a repeat books nothing
    peer = book("tenant:b:arrears", "peer:yungu-beijing:clearing")
    assert all(o.ok for o in peer.apply_linked(peer_entry(r, receivable_from="tenant:b:arrears"), T0))
    owed_at_origin = origin.balances["peer:yungu-horinger:clearing"].posted
    owed_at_peer = peer.balances["peer:yungu-beijing:clearing"].posted
    assert owed_at_origin == 3800 and owed_at_origin + owed_at_peer == 0
    assert sum(b.posted for b in origin.balances.values()) == 0
    assert origin.balances["sys:cny:vat"].posted == 237  # 6 % of the tenant's 41.80 CNY, tax inclusive


def test_an_absorbed_attempt_charges_no_tenant() -> None:
    entry = origin_entry(receipt(outcome="lease_expired"), usage_id="u", job_id="j", gross=4180, reserved=None,
                         charge_from="w", escrow="e", vat_account="v", revenue="r")
    assert [(t.debit_account, t.credit_account, t.amount) for t in entry] == [
        ("r", "peer:yungu-horinger:clearing", 3800)]


# ------------------------------------------------------------------ clearing positions

def test_bilateral_positions_are_the_same_bytes_on_both_sides_and_net_to_zero() -> None:
    rs = [receipt(receipt_id="a", amount_fen=500), receipt(receipt_id="b", amount_fen=700),
          receipt(receipt_id="c", issuer="yungu-beijing", origin="yungu-horinger", amount_fen=200),
          receipt(receipt_id="d", period="2026-11", amount_fen=9999)]
    ab = bilateral("2026-12", "yungu-beijing", "yungu-horinger", rs)
    ba = bilateral("2026-12", "yungu-horinger", "yungu-beijing", list(reversed(rs)))
    assert ab == ba and ab.a_owes_b == 1200 and ab.b_owes_a == 200 and ab.receipts == 3
    gz = bilateral("2026-12", "yungu-beijing", "yungu-guizhou",
                   [receipt(receipt_id="e", issuer="yungu-guizhou", amount_fen=300)])
    hg = bilateral("2026-12", "yungu-guizhou", "yungu-horinger",
                   [receipt(receipt_id="f", issuer="yungu-horinger", origin="yungu-guizhou", amount_fen=300)])
    pos = multilateral([ab, gz, hg])
    assert sum(pos.values()) == 0 and pos == {"yungu-beijing": -1300, "yungu-horinger": 1300, "yungu-guizhou": 0}
    assert len(minimal_settlements(pos)) == 1  # Guizhou's receivable and payable cancel out
    with pytest.raises(InvalidInput):
        multilateral([ab, ab])
