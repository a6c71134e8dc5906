"""Scored options and rankings: how a round compares the places a job could go.

A :class:`Scored` is an option with its total score and weighted terms; a :class:`Ranking` is
the start-now options on a set of pools, best first, built from one batch scoring (one numpy
expression per score term) and materialised lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

from yungu.domain.job import Job
from yungu.engines.scheduler.plugins import Option, OptionArrays, Reference, Registry

LOG_BUCKET = math.log(1.5)


def bucket(ref_s: float) -> int:
    """Run-length bucket (log scale, ratio 1.5) of the start-now rankings."""
    return round(math.log(max(ref_s, 60.0)) / LOG_BUCKET)


def bucket_run_s(b: int) -> float:
    """The representative reference run length of a bucket."""
    return math.exp(b * LOG_BUCKET)


class _Terms(Mapping[str, float]):
    """The weighted terms of one option of a batch ranking, read from the ranking's columns
    (built on demand: most ranked options are never explained)."""

    __slots__ = ("_cols", "_i", "_names")

    def __init__(self, names: tuple[str, ...], cols: tuple[list[float], ...], i: int) -> None:
        self._names, self._cols, self._i = names, cols, i

    def __getitem__(self, key: str) -> float:
        try:
            return self._cols[self._names.index(key)][self._i]
        except ValueError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Scored(NamedTuple):
    """An option with its total score and weighted terms (a tuple: rankings build thousands)."""

    option: Option
    score: float
    terms: Mapping[str, float]


class Ranking(Sequence[Scored]):
    """Start-now options on a set of pools, best first (score, then pool id).

    Built from one batch scoring and materialised lazily: a round ranks ~100 pools dozens of
    times but looks at only a few entries of most rankings (the pools with room, the best few
    to wait for), so a :class:`Scored` is made when an entry is first read. ``order`` holds
    the pool indices (positions in ``World.pools``) in rank order; a :meth:`subset` shares
    the scores and keeps the order. ``ref`` is the normaliser the scores were computed with.
    """

    __slots__ = ("_cols", "_made", "_names", "_opts", "_tops", "_tot", "order", "ref")

    def __init__(
        self,
        opts: list[Option],
        order: list[int],
        tot: list[float],
        names: tuple[str, ...],
        cols: tuple[list[float], ...],
        ref: Reference,
    ) -> None:
        self._opts, self.order, self._tot, self._names, self._cols, self.ref = opts, order, tot, names, cols, ref
        self._made: list[Scored | None] = [None] * len(order)
        self._tops: dict[int, list[Scored]] = {}

    def __len__(self) -> int:
        return len(self.order)

    @overload
    def __getitem__(self, i: int) -> Scored: ...

    @overload
    def __getitem__(self, i: slice) -> list[Scored]: ...

    def __getitem__(self, i: int | slice) -> Scored | list[Scored]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self.order)))]
        got = self._made[i]
        if got is None:
            j = self.order[i]
            got = self._made[i] = Scored(self._opts[j], self._tot[j], _Terms(self._names, self._cols, j))
        return got

    def top(self, k: int) -> list[Scored]:
        """The best ``k`` entries (a list kept with the ranking: callers must not change it)."""
        got = self._tops.get(k)
        if got is None:
            got = self._tops[k] = self[:k]
        return got

    def subset(self, keep: Callable[[int], bool]) -> Ranking:
        """The entries whose pool index passes ``keep``, in the same order."""
        return Ranking(self._opts, [j for j in self.order if keep(j)], self._tot, self._names, self._cols, self.ref)


def reference(opts: Sequence[Option]) -> Reference:
    """The normalisers of a set of options: the largest value of each metric among them."""
    return Reference(
        max((o.cost_cny for o in opts), default=0.0),
        max((o.carbon_g for o in opts), default=0.0),
        max((o.latency_ms for o in opts), default=0.0),
        max((o.wait_s + o.run_s for o in opts), default=0.0),
    )


def option_arrays(opts: Sequence[Option]) -> OptionArrays:
    return OptionArrays(
        np.array([o.cost_cny for o in opts]),
        np.array([o.carbon_g for o in opts]),
        np.array([o.green_share for o in opts]),
        np.array([o.latency_ms for o in opts]),
        np.array([o.run_s for o in opts]),
    )


def score_option(registry: Registry, job: Job, opt: Option, ref: Reference, w: Mapping[str, float]) -> Scored:
    """One option scored by every registered score plugin the weights name."""
    terms = {}
    total = 0.0
    for name, plugin in registry.scores().items():
        wt = w.get(name, 0.0)
        if wt:
            t = plugin.score(job, opt, ref) * wt
            terms[name] = t
            total += t
    return Scored(opt, total, terms)


def rank_options(
    registry: Registry,
    job: Job,
    opts: list[Option],
    ref: Reference,
    arrays: OptionArrays,
    w: Mapping[str, float],
    id_rank: NDArray[np.int64],
) -> Ranking:
    """All start-now options scored and sorted (score, then pool id), one array op per term.

    ``id_rank``: each pool's position in pool-id order (the tie-break).
    """
    total: NDArray[np.float64] = np.zeros(len(opts))
    terms: dict[str, NDArray[np.float64]] = {}
    for name, plugin in registry.scores().items():
        wt = w.get(name, 0.0)
        if not wt:
            continue
        batch = getattr(plugin, "score_batch", None)
        if batch is not None:
            vals = np.asarray(batch(arrays, ref), dtype=np.float64)
        else:
            vals = np.array([plugin.score(job, o, ref) for o in opts], dtype=np.float64)
        t = vals * wt
        terms[name] = t
        total = total + t
    order = np.lexsort((id_rank, total)).tolist()
    names = tuple(terms)
    return Ranking(opts, order, total.tolist(), names, tuple(terms[n].tolist() for n in names), ref)
