"""The feature browser over the analysis store (`python -m raysae.dashboard`)."""

from raysae.dashboard.app import create_app
from raysae.dashboard.server import Server

__all__ = ["Server", "create_app"]
