"""Pure decision engines: scheduler, market, ledger rules, energy math. No I/O, no clock reads."""
