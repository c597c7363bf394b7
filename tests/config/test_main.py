import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "raysae.config", *args], capture_output=True, text=True)


def test_prints_resolved_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: demo\nsae:\n  k: 8\n")
    out = run(str(path), "--set", "train.lr=0.002")
    assert out.returncode == 0, out.stderr
    assert "name: demo" in out.stdout and "k: 8" in out.stdout and "lr: 0.002" in out.stdout


def test_bad_config_is_one_paragraph_and_nonzero(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sae:\n  k: fifty\n")
    out = run(str(path))
    assert out.returncode == 2
    assert "sae.k: expected int, got 'fifty'" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_config_command_imports_no_store_ray_or_mlflow():
    """Printing a config loads the schema, not the services (raysae.errors holds every error type)."""
    code = (
        "import sys, raysae.config.__main__; "
        "print(sorted(m for m in ('pymongo', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
