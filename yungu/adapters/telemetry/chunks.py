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
