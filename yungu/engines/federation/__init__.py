"""Federation engines (pure): protocol messages, leases, peer health, offers, receipts, clearing.

Nothing here reads a clock, a socket or a database: every function takes ``now`` and values,
so the rules that keep "at most one running copy" and "every receipt booked once" are tested
with literals and replayed exactly. The adapters in ``yungu.adapters.federation`` sign, send,
store and schedule; see ``docs/federation.md`` for the protocol.
"""
