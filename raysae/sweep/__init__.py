"""Sweeps on Ray Tune (`python -m raysae.sweep CONFIG`): the trials (`trials`), the Tune run
that trains them (`tuner`), and the Pareto plot (`pareto_plot`)."""
