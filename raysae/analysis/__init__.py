"""Per-feature analysis of trained SAEs into the store.

The math (`encode`, `stats`, `logits`, `documents`) has no Ray imports;
`sources` and `actors` put it on a Ray Data actor pool, and `analyze` drives it.
"""

from raysae.analysis.analyze import analyze

__all__ = ["analyze"]
