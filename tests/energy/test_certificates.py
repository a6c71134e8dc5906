"""Certificates: sign, verify, and any tampering makes verification fail."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest

from yungu.adapters.certs import CertSigner, to_html, verify
from yungu.engines.energy.accounting import account
from yungu.engines.energy.certificate import Consumption, certificate_body
from yungu.engines.energy.signals import Provenance, SignalSeries, SignalType

T0 = datetime(2023, 6, 1, tzinfo=UTC)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[CertSigner, dict]:  # type: ignore[type-arg]
    s = lambda k, v: SignalSeries.uniform("site", k, T0, v, Provenance.MODELLED)  # noqa: E731
    rep = account({int(T0.timestamp()): 3.6e6, int(T0.timestamp()) + 3600: 7.2e6}, pue=1.2,
                  carbon_intensity=s(SignalType.CARBON_INTENSITY, [600.0, 400.0]),
                  renewable_share=s(SignalType.RENEWABLE_SHARE, [0.2, 0.4]),
                  contracted_green=s(SignalType.RENEWABLE_SHARE, [0.9, 0.3]))  # fmt: skip
    body = certificate_body(cert_id="c1", kind="job", subject="job-1", tenant_id="t1", platform_id="p", issued_at=T0,
                            items=[Consumption("job-1", "site", rep, "modelled", ("modelled feed",))])  # fmt: skip
    signer = CertSigner.load_or_create(tmp_path)
    return signer, signer.sign(body)


def test_signed_certificate_verifies_and_reports_hourly_matching(cert: tuple[CertSigner, dict]) -> None:  # type: ignore[type-arg]
    signer, c = cert
    assert verify(c, signer.public_key_b64) == (True, "valid / 验证通过")
    b = c["body"]
    assert b["totals"]["matched_green_kwh"] == f"{1.2 * 0.9 + 2.4 * 0.3:.6f}"
    assert b["flags"] == {"energy": "modelled", "signals": "modelled"}
    assert "绿电溯源证书" in to_html(c)


@pytest.mark.parametrize(
    "path",
    [
        ("body", "totals", "facility_kwh"),
        ("body", "hours", 0, "matched_kwh"),
        ("body", "tenant_id"),
        ("body", "flags", "energy"),
    ],
)
def test_tampering_with_any_field_fails(cert: tuple[CertSigner, dict], path: tuple) -> None:  # type: ignore[type-arg]
    signer, c = cert
    bad = copy.deepcopy(c)
    node = bad
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = "measured" if path[-1] == "energy" else (str(node[path[-1]]) + "1")
    ok, reason = verify(bad, signer.public_key_b64)
    assert not ok and "tampered" in reason


def test_a_certificate_from_another_key_is_not_the_platforms(
    cert: tuple[CertSigner, dict], tmp_path: Path
) -> None:  # type: ignore[type-arg]
    _, c = cert
    other = CertSigner.load_or_create(tmp_path / "other")
    assert verify(c, other.public_key_b64)[0] is False
    assert CertSigner.load_or_create(tmp_path).key_id == cert[0].key_id  # the key persists
