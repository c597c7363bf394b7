"""Exports of analysed SAEs to other tools (`python -m raysae.export FORMAT ...`)."""
