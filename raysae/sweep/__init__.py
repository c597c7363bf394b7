"""Sweeps on Ray Tune: `python -m raysae.sweep CONFIG` (see `raysae.sweep.run`)."""
