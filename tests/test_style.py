"""Style is part of the test run (CI runs the README's test command): ruff's lint rules and
formatter over the tree, and pyright in basic mode over the package (pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def run(*command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(check):
    done = run(str(BIN / "ruff"), *check, ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_pyright():
    done = run(str(BIN / "pyright"), timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
