"""Columnar encoding of a batch of node samples (one ``telemetry_chunks`` row).

A chunk is a numpy structured array, little-endian, fixed layout: decoding is
``np.frombuffer`` (no parsing), so a day of a site (~170,000 samples) is read and bucketed in
milliseconds. Missing counters are NaN. ``modelled`` is 1 when any power in the sample came
from the power model.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_DTYPE = np.dtype(
    [
        ("seq", "<i8"),
        ("ts_ms", "<i8"),
        ("cpu_util", "<f4"),
        ("mem_util", "<f4"),
        ("cpu_power_w", "<f4"),
        ("gpu_power_w", "<f4"),
        ("cpu_energy_j", "<f8"),
        ("gpu_energy_j", "<f8"),
        ("modelled", "u1"),
    ]
)

Chunk = npt.NDArray[np.void]


def encode(arr: Chunk) -> bytes:
    return np.ascontiguousarray(arr, dtype=SAMPLE_DTYPE).tobytes()


def decode(blob: bytes) -> Chunk:
    return np.frombuffer(blob, dtype=SAMPLE_DTYPE)


def empty(n: int) -> Chunk:
    return np.zeros(n, dtype=SAMPLE_DTYPE)


# ---- 1-minute rollups: one blob per node-hour --------------------------------------------
#
# A ``telemetry_rollup_1m`` row holds the 60 minutes of one node's hour as a fixed 60-slot
# array (empty minutes have n = 0). A one-day site query then reads nodes x 24 small blobs
# (decoded together with one ``np.frombuffer``) instead of nodes x 1440 SQL rows, each of
# which SQLAlchemy would turn into a Python object.

HOUR_MS = 3_600_000
MINUTE_MS = 60_000

ROLLUP_DTYPE = np.dtype(
    [
        ("n", "<i4"),
        ("cpu_util_sum", "<f8"),
        ("power_sum_w", "<f8"),
        ("power_max_w", "<f8"),
        ("modelled", "u1"),
    ]
)


def rollup_empty() -> Chunk:
    return np.zeros(60, dtype=ROLLUP_DTYPE)


def rollup_add(slots: Chunk, a: Chunk) -> None:
    """Fold samples ``a`` (all within the hour of ``slots``) into the 60 minute slots, in place."""
    m = (a["ts_ms"] // MINUTE_MS) % 60
    p = a["cpu_power_w"].astype(np.float64) + a["gpu_power_w"]
    slots["n"] += np.bincount(m, minlength=60).astype(np.int32)
    slots["cpu_util_sum"] += np.bincount(m, weights=a["cpu_util"].astype(np.float64), minlength=60)
    slots["power_sum_w"] += np.bincount(m, weights=p, minlength=60)
    pmax = slots["power_max_w"].copy()
    np.maximum.at(pmax, m, p)
    slots["power_max_w"] = pmax
    slots["modelled"] |= np.bincount(m, weights=a["modelled"], minlength=60) > 0


def rollup_merge(old: Chunk, new: Chunk) -> Chunk:
    out = old.copy()
    out["n"] += new["n"]
    out["cpu_util_sum"] += new["cpu_util_sum"]
    out["power_sum_w"] += new["power_sum_w"]
    out["power_max_w"] = np.maximum(old["power_max_w"], new["power_max_w"])
    out["modelled"] |= new["modelled"]
    return out


def rollup_decode_many(blobs: list[bytes]) -> Chunk:
    """Several node-hour blobs as one (rows, 60) array."""
    return np.frombuffer(b"".join(blobs), dtype=ROLLUP_DTYPE).reshape(len(blobs), 60)
