"""Per-feature analysis of trained SAEs into the store.

The math (`encode`, `stats`, `logits`, `documents`) has no Ray imports;
`run` and `pipeline` put it on a Ray Data actor pool.
"""

from raysae.analysis.run import analyse, select_saes

__all__ = ["analyse", "select_saes"]
