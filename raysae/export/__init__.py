"""Exports of analyzed SAEs to other tools (`python -m raysae.export FORMAT ...`)."""
