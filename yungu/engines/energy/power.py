"""The documented power model used wherever no sensor exists.

``P(u) = idle + u * (TDP - idle)`` with ``u`` the device's (or the CPU node's) utilisation
in 0..1 and ``idle``/``TDP`` taken from the catalogue entry. Linear in utilisation is what
Kepler's and Cloud Carbon Footprint's fallback models use; it is crude (real CPUs are
concave, GPUs depend on the kernel mix) but explicit, so every number it produces is
flagged ``modelled``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from yungu.domain.catalogue import AcceleratorSpec
from yungu.domain.errors import InvalidInput


@dataclass(frozen=True)
class PowerModel:
    idle_w: float
    tdp_w: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.idle_w <= self.tdp_w and math.isfinite(self.tdp_w)):
            raise InvalidInput(f"power model needs 0 <= idle ({self.idle_w}) <= TDP ({self.tdp_w})")

    @classmethod
    def from_spec(cls, spec: AcceleratorSpec, *, fraction: float = 1.0) -> PowerModel:
        """The model of a catalogue entry, or of a ``fraction`` of it (e.g. the cores a VM has)."""
        if not 0.0 < fraction <= 1.0:
            raise InvalidInput(f"power model fraction must be in (0, 1], got {fraction}")
        return cls(spec.idle_w * fraction, spec.tdp_w * fraction)

    def power(self, utilisation: float) -> float:
        """Watts at ``utilisation`` (clamped to 0..1; NaN counts as idle)."""
        u = 0.0 if math.isnan(utilisation) else min(1.0, max(0.0, utilisation))
        return self.idle_w + u * (self.tdp_w - self.idle_w)

    @property
    def dynamic_range_w(self) -> float:
        return self.tdp_w - self.idle_w
