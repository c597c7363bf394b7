"""The SAE and batch shape flags the training benchmarks share (d_in 512, 8x, k 32, batch 4096)."""

from __future__ import annotations

import argparse


def shape_parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    return p
