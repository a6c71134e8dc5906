"""The token gateway's adapters: upstream clients, the model server an inference job runs,
a fast loopback upstream for benchmarks, the token store, and the service that ties
routing, budgets, metering and the ledger together."""
