"""Ledger, billing and market persistence (issue 5)."""
