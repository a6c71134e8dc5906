"""Test doubles shipped with Yungu, as Trio ships ``MockClock`` and httpx ``MockTransport``.

- :class:`MockClock`: both readings of the ``Clock`` port on one virtual timeline; jumps when
  told, runs at a ``rate``, or (``autojump``) jumps to every ``sleep``'s deadline at once;
- :class:`FakeCluster` / :class:`FakeExecutor`: an engine that keeps the executor contract,
  scripted on the clock (no processes) or running real ``sh`` commands, with faults on demand;
- :mod:`yungu.testing.world`: small worlds, jobs and snapshots for scheduler and loop tests.

Production code never imports this package (an import-linter contract says so).
"""

from yungu.testing.clock import MockClock
from yungu.testing.executor import FakeCluster, FakeExecutor, Script

__all__ = ["FakeCluster", "FakeExecutor", "MockClock", "Script"]
