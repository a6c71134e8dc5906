"""The token gateway's pure parts: prices and rating, budgets, rate limits, the circuit
breaker, replica choice, replica scaling and token receipts. No I/O, no clock reads: every
function that needs the time takes ``now`` (seconds on a monotonic scale, or a datetime)."""
