"""Refuse clearly, up front (issue 17, cases 9, 10, 12, 13): bad input that is the same for every
trial is found in the driver, once, before Ray Train or Tune starts: one `error:` line naming the
config path, file or shard, exit 2, no traceback, nothing written, within a few seconds.

Each case runs the real command's `main` through `cli.run_main` in-process (a subprocess would
spend ~20 s starting Ray); the time to detect each refusal is printed (`-s`) for
docs/benchmarks.md.
"""

import shutil
import time
from pathlib import Path

import pytest

from raysae.activations.cache import cache_dir, read_manifest
from raysae.cli import failure_reason, run_main
from raysae.generate import main as generate_main
from raysae.run_dir import write_config
from raysae.sweep.__main__ import main as sweep_main
from raysae.train import main as train_main

SECOND = "sweep.search_space={sae.k: {grid: [4, 8]}}"


def refuse(main, cfg, tmp_path, capsys, *sets: str) -> tuple[str, float]:
    """(the one stderr line, seconds to refuse) of `main` on `cfg` and `--set` overrides `sets`
    (credentials go there: config.yaml holds them redacted), which must exit 2 having written
    nothing: no run folder, no MLflow file, no new cache folder."""
    config_file = write_config(cfg, tmp_path / "config")
    caches = Path(cfg.activations.cache_dir)
    before = sorted(caches.iterdir()) if caches.exists() else []
    output = Path(cfg.output_dir)
    had_mlflow = (output / "mlflow.db").exists()
    capsys.readouterr()
    started = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        run_main(main, [str(config_file), *(a for s in sets for a in ("--set", s))])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (output / cfg.name).exists()
    assert (output / "mlflow.db").exists() == had_mlflow
    assert (sorted(caches.iterdir()) if caches.exists() else []) == before
    print(f"\nrefused in {seconds:.2f} s: {lines[0]}")
    return lines[0], seconds


def test_a_damaged_cache_under_a_sweep_is_refused_before_any_trial(train_config, tmp_path, capsys):
    shared = train_config("cache")
    cfg = train_config("damaged", SECOND, f"activations.cache_dir={tmp_path / 'cache'}")
    directory = Path(cache_dir(cfg, cfg.model.hook_point, "tokens"))
    shutil.copytree(cache_dir(shared, shared.model.hook_point, "tokens"), directory)  # same key, own copy
    shard = directory / read_manifest(directory)["shards"][2]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    line, seconds = refuse(sweep_main, cfg, tmp_path, capsys)
    assert f"cache shard {shard}: checksum mismatch" in line
    assert "delete that folder and rerun `python -m raysae.generate CONFIG`" in line
    assert seconds < 10
    # generate calls it damaged too, never complete, and says how to repair it
    line, _ = refuse(generate_main, cfg, tmp_path, capsys)
    assert f"cache shard {shard}: checksum mismatch" in line and "rebuild" in line


def test_a_grid_point_wider_than_the_sae_is_refused_before_tune(train_config, tmp_path, capsys):
    cfg = train_config("toowide", "sweep.search_space={sae.k: {grid: [4, 1000]}}")
    line, seconds = refuse(sweep_main, cfg, tmp_path, capsys)
    assert line.startswith("error: sae.k: ") and "1000" in line and "SAE 1 of the sweep" in line
    assert seconds < 10


@pytest.mark.parametrize("main", [train_main, sweep_main], ids=["train", "sweep"])
def test_a_missing_model_folder_is_refused(train_config, tmp_path, capsys, main):
    cfg = train_config("nomodel", SECOND, "model.name=/nonexistent/model")
    line, seconds = refuse(main, cfg, tmp_path, capsys)
    assert line == "error: model.name: /nonexistent/model: no such local folder"
    assert seconds < 10


def test_a_relative_model_path_from_another_folder_names_the_working_folder(
    train_config, tmp_path, capsys, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = train_config("relmodel", "model.name=assets/smollm2-135m", "model.tokenizer=null")
    line, seconds = refuse(train_main, cfg, tmp_path, capsys)
    assert line.startswith("error: model.name: cannot load a tokenizer from 'assets/smollm2-135m'")
    assert f"relative paths are taken from the working folder {elsewhere}" in line
    assert seconds < 20


def test_an_unknown_hook_point_is_one_line(train_config, tmp_path, capsys):
    cfg = train_config("nohook", "model.hook_point=blocks.1.hook_resid_pots")
    line, seconds = refuse(train_main, cfg, tmp_path, capsys)
    assert line.startswith("error: model.hook_point: 'blocks.1.hook_resid_pots' is not a hook point")
    assert "did you mean blocks.1.hook_resid_post" in line
    assert seconds < 20


@pytest.mark.parametrize("main", [train_main, sweep_main], ids=["train", "sweep"])
def test_an_unreachable_tracking_server_is_refused_in_seconds(train_config, tmp_path, capsys, main):
    cfg = train_config("nomlflow", SECOND)
    line, seconds = refuse(main, cfg, tmp_path, capsys, "tracking.uri=http://mluser:secretpw2@127.0.0.1:1")
    assert line.startswith("error: tracking.uri: no MLflow tracking server answers at http://127.0.0.1:1")
    assert "secretpw2" not in line and "mluser" not in line
    assert seconds < 10


def test_an_unreachable_store_is_refused_before_training(train_config, tmp_path, capsys):
    cfg = train_config("nostore", SECOND)
    line, seconds = refuse(
        sweep_main, cfg, tmp_path, capsys, "store.uri=mongodb://storeuser:secretpw3@127.0.0.1:1/"
    )
    assert line.startswith("error: store.uri: no MongoDB answers at mongodb://")
    assert "127.0.0.1:1" in line and "secretpw3" not in line
    assert seconds < 10


def test_a_failure_raised_in_a_ray_task_is_reported_as_its_real_cause(ray_local):
    @ray_local.remote
    def fails():
        raise RuntimeError("the real cause")

    with pytest.raises(Exception) as info:
        ray_local.get(fails.remote())
    assert "\x1b[" in str(info.value) or "ray::" in str(info.value)  # what Ray's own text looks like
    assert failure_reason(info.value) == "RuntimeError: the real cause"


def test_the_cache_key_follows_what_a_path_points_to(train_config, tmp_path, monkeypatch):
    from raysae.activations import cache_key

    corpus = tmp_path / "assets" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text("the king speaks")
    monkeypatch.chdir(tmp_path)
    spellings = ["assets/corpus", "./assets/corpus", str(corpus), "assets/corpus/"]
    keys = {cache_key(train_config("k", f"data.path={p}"), "h", "tokens") for p in spellings}
    assert len(keys) == 1
    before = keys.pop()
    (corpus / "a.txt").write_text("the queen speaks")  # edited in place
    assert cache_key(train_config("k", "data.path=assets/corpus"), "h", "tokens") != before
