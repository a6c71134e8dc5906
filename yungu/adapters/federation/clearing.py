"""Period-end clearing across platforms: co-signed bilaterals, a multilateral statement signed by
every party, settlement transfers booked on every platform.

Flow (any platform may coordinate; the demo's coordinator is Horinger):

1. ``prepare``: each platform agrees its bilateral position with each peer it has receipts
   with — it proposes the body computed from its own booked receipts; the peer recomputes
   from *its* receipts and co-signs only a byte-identical body;
2. the coordinator collects every platform's co-signed bilaterals, nets them
   (``engines.ledger.clearing``) into the statement (``adapters.ledger.signing.statement_body``);
3. ``sign``: each party checks the bilaterals it co-signed are the ones used and that the
   statement follows from them, and signs it;
4. ``final``: each party verifies every signature and books, in one linked entry: the
   period's bilateral balances out of its ``peer:<id>:clearing`` accounts into its netting
   account, and the settlement transfers it pays or receives (against ``sys:cny:external``).
   After that the netting account is zero again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from yungu.adapters.federation.client import PeerRefused, PeerUnreachable
from yungu.adapters.federation.identity import verify_body
from yungu.adapters.ledger import signing
from yungu.domain.errors import Conflict, InvalidInput
from yungu.engines.federation.messages import UsageReceipt
from yungu.engines.federation.positions import Bilateral, bilateral, multilateral
from yungu.engines.federation.receipts import clearing_account
from yungu.engines.ledger import Account, AccountKind, Transfer

if TYPE_CHECKING:
    from yungu.adapters.federation.service import Federation

log = logging.getLogger("yungu.federation.clearing")
V1 = "/federation/v1"
NETTING = "peer:federation:netting"


class Clearing:
    def __init__(self, fed: Federation) -> None:
        self.f = fed

    def _receipts(self, period: str) -> list[UsageReceipt]:
        import json

        return [UsageReceipt.from_dict(json.loads(r.body)) for r in self.f.fed.receipts(period=period, booked=True)]

    def position_with(self, period: str, other: str) -> Bilateral:
        return bilateral(period, self.f.me, other, self._receipts(period))

    # ---- bilateral ----------------------------------------------------------------------
    def co_sign(self, caller: str, body: Mapping[str, Any], signature: str) -> dict[str, str]:
        """A peer proposes our pair's position: sign it if our books say exactly the same."""
        peer = self.f._peers[caller]
        proposed = Bilateral.from_dict(body)
        if {proposed.a, proposed.b} != {caller, self.f.me}:
            raise InvalidInput("the position must be between the caller and us")
        if not verify_body(dict(body), signature, peer.public_keys()):
            raise InvalidInput("the proposer's signature does not match the position")
        mine = self.position_with(proposed.period, caller)
        if mine.to_dict() != dict(body):
            raise Conflict(f"our books differ: we have {mine.to_dict()}")
        sig = self.f.identity.sign_body(mine.to_dict())
        self.f.fed.put_position(mine.period, mine.a, mine.b, mine.to_dict(), {caller: signature, self.f.me: sig},
                                self.f.clock.now())
        return {"signature": sig}

    def prepare(self, period: str) -> list[dict[str, Any]]:
        """Agree our position with every peer (co-signed); return all our co-signed positions."""
        for pid, link in list(self.f._links.items()):
            pos = self.position_with(period, pid)
            if pos.receipts == 0:
                continue
            body = pos.to_dict()
            sig = self.f.identity.sign_body(body)
            doc = link.client.call("POST", V1 + "/clearing/positions", {"position": body, "signature": sig})
            theirs = str(doc.get("signature", ""))
            if not verify_body(body, theirs, self.f._peers[pid].public_keys()):
                raise Conflict(f"{pid} returned a signature that does not match the position")
            self.f.fed.put_position(period, pos.a, pos.b, body, {self.f.me: sig, pid: theirs}, self.f.clock.now())
        return [{"position": b, "signatures": s} for b, s in self.f.fed.positions(period)]

    # ---- multilateral -------------------------------------------------------------------
    def _keys(self, party: str) -> list[str]:
        if party == self.f.me:
            return [k["public_key"] for k in self.f.identity.public_keys()]
        peer = self.f._peers.get(party)
        if peer is None:
            raise InvalidInput(f"{party} is not a peer of {self.f.me}: cannot check its signature")
        return peer.public_keys()

    def _check_positions(self, items: Sequence[Mapping[str, Any]]) -> list[Bilateral]:
        seen: dict[tuple[str, str], Bilateral] = {}
        for it in items:
            body, sigs = it.get("position"), it.get("signatures") or {}
            if not isinstance(body, dict) or not isinstance(sigs, dict):
                raise InvalidInput("positions must carry a position and its signatures")
            b = Bilateral.from_dict(body)
            for party in (b.a, b.b):
                if not verify_body(body, str(sigs.get(party, "")), self._keys(party)):
                    raise InvalidInput(f"position {b.a}/{b.b} is not signed by {party}")
            seen[(b.a, b.b)] = b
        return list(seen.values())

    def build(self, period: str, items: Sequence[Mapping[str, Any]], parties: Sequence[str] = ()) -> dict[str, Any]:
        positions = multilateral(self._check_positions(items))
        for party in parties:
            positions.setdefault(party, 0)
        return signing.statement_body(period, "CNY", positions)

    def sign(self, statement: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> str:
        """Sign the statement if it follows from co-signed positions, ours among them as we signed them."""
        period = str(statement.get("period", ""))
        expected = self.build(period, items, list(statement.get("positions", {})))
        if expected != dict(statement):
            raise Conflict("the statement does not follow from the co-signed positions")
        ours = {(b["a"], b["b"]): b for b, _ in self.f.fed.positions(period)}
        for it in items:
            b = it["position"]
            if self.f.me in (b["a"], b["b"]) and ours.get((b["a"], b["b"])) != b:
                raise Conflict(f"position {b['a']}/{b['b']} is not the one we co-signed")
        self.f.fed.put_statement(period, dict(statement), {}, "proposed", self.f.clock.now())
        return self.f.identity.sign_body(dict(statement))

    def final(self, statement: Mapping[str, Any], signatures: Mapping[str, str],
              items: Sequence[Mapping[str, Any]]) -> int:
        period = str(statement["period"])
        expected = self.build(period, items, list(statement.get("positions", {})))
        if expected != dict(statement):
            raise Conflict("the statement does not follow from the co-signed positions")
        for party in statement["positions"]:
            if not verify_body(dict(statement), str(signatures.get(party, "")), self._keys(party)):
                raise InvalidInput(f"statement not signed by {party}")
        positions = [Bilateral.from_dict(it["position"]) for it in items]
        n = self.book(period, statement, positions)
        self.f.fed.put_statement(period, dict(statement), dict(signatures), "booked", self.f.clock.now())
        return n

    def book(self, period: str, statement: Mapping[str, Any], positions: Sequence[Bilateral]) -> int:
        me = self.f.me
        ledger = self.f.d.ledger
        ledger.open_accounts([Account(NETTING, AccountKind.PEER_CLEARING, "CNY", None, "federation",
                                      "multilateral netting")])
        entry: list[Transfer] = []
        for b in positions:
            if me not in (b.a, b.b):
                continue
            other = b.b if me == b.a else b.a
            owe = b.net_for(me)
            acct = clearing_account(other)
            if owe > 0:
                entry.append(Transfer(f"fedst:{period}:{other}:close", acct, NETTING, owe, "CNY", ref=f"clearing:{period}"))
            elif owe < 0:
                entry.append(Transfer(f"fedst:{period}:{other}:close", NETTING, acct, -owe, "CNY", ref=f"clearing:{period}"))
        for t in statement["transfers"]:
            if t["payer"] == me:
                entry.append(Transfer(f"fedst:{period}:pay:{t['payee']}", NETTING, "sys:cny:external", int(t["amount"]),
                                      "CNY", ref=f"clearing:{period}", memo=f"settlement to {t['payee']}"))
            elif t["payee"] == me:
                entry.append(Transfer(f"fedst:{period}:recv:{t['payer']}", "sys:cny:external", NETTING,
                                      int(t["amount"]), "CNY", ref=f"clearing:{period}",
                                      memo=f"settlement from {t['payer']}"))
        if not entry:
            return 0
        outs = ledger.submit(entry, linked=True)
        if not all(o.ok for o in outs):
            raise Conflict("settlement could not be booked: " + "; ".join(
                f"{o.result.value} {o.detail}" for o in outs if not o.ok)[:500])
        return len(entry)

    # ---- coordinator ----------------------------------------------------------------------
    def run(self, period: str) -> dict[str, Any]:
        items = self.prepare(period)
        parties = [self.f.me]
        for pid, link in list(self.f._links.items()):
            try:
                doc = link.client.call("POST", V1 + "/clearing/prepare", {"period": period})
            except (PeerUnreachable, PeerRefused) as exc:
                raise Conflict(f"clearing needs every peer: {pid}: {exc}") from None
            items.extend(doc.get("positions", []))
            parties.append(pid)
        by_pair: dict[tuple[str, str], Mapping[str, Any]] = {}
        for it in items:
            b = it["position"]
            by_pair[(b["a"], b["b"])] = it
        items = list(by_pair.values())
        statement = self.build(period, items, parties)  # every platform asked is a party, owed or not
        sigs = {self.f.me: self.sign(statement, items)}
        for party in statement["positions"]:
            if party == self.f.me:
                continue
            link = self.f._links.get(party)
            if link is None:
                raise Conflict(f"{party} is in the statement but not our peer")
            doc = link.client.call("POST", V1 + "/clearing/statements/sign",
                                   {"statement": statement, "positions": items})
            sigs[party] = str(doc.get("signature", ""))
        booked = {}
        for party in statement["positions"]:
            if party == self.f.me:
                booked[party] = self.final(statement, sigs, items)
                continue
            doc = self.f._links[party].client.call("POST", V1 + "/clearing/statements/final",
                                                   {"statement": statement, "signatures": sigs, "positions": items})
            booked[party] = int(doc.get("booked", 0))
        total = sum(statement["positions"].values())
        return {"period": period, "statement": statement, "signatures": sigs, "booked": booked,
                "parties": sorted(statement["positions"]), "net_sum_fen": total, "asked": parties}
