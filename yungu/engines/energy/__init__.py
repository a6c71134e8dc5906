"""Energy math: power models, energy integration, per-job attribution, carbon and green
accounting, certificates' hourly matching, grid signals and forecasts. Pure: no I/O, no
clock reads."""
