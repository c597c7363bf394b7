"""What a sweep prints (issue 16): the quickstart config, shrunk, as a subprocess on the test run's
Ray. Redirected to a file it writes plain lines, mostly raysae's, with a progress line holding an
ETA for every phase and nothing after the summary; in a terminal it draws live bars."""

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from raysae.config import load_config
from raysae.run_dir import write_config
from tests.conftest import command_on_test_ray, tiny_model_overrides, write_corpus

QUICKSTART = Path(__file__).parents[1] / "raysae" / "configs" / "quickstart.yaml"
OURS = re.compile(r"^\d\d:\d\d:\d\d ")
"""raysae's lines: a time, then the message (Ray's and MLflow's carry a date and a level)."""
ETA = re.compile(r"ETA \d+:\d\d")


def quickstart_config(root: Path, tokenizer_dir, name: str) -> Path:
    """quickstart.yaml on the tiny random model and a small local corpus: 2 architectures, small
    caches, few tokens, no CE loss, the analysis on."""
    corpus = root / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        write_corpus(corpus, 80, seed=1)
    cfg = load_config(
        QUICKSTART,
        [
            f"name={name}",
            *tiny_model_overrides(root, tokenizer_dir, corpus),
            "activations.model_batch_size=32",
            "activations.n_contexts=32",
            "sae.k=4",
            "sae.dead_tokens_threshold=4096",
            "train.total_tokens=8192",
            "train.batch_size=256",
            "train.eval_tokens=2048",
            "train.init_tokens=1024",
            "train.ce_contexts=0",
            "sweep.search_space={sae.architecture: {grid: [topk, jumprelu]}}",
            "analysis.n_tokens=480",
            "analysis.batch_contexts=8",
            "analysis.actors.cpus=0.5",
            "store.database=raysae_test_output",
        ],
    )
    folder = root / name
    folder.mkdir()
    write_config(cfg, folder)
    return folder / "config.yaml"


@pytest.mark.slow
def test_a_sweep_prints_plain_progress_to_a_file_and_live_bars_to_a_terminal(
    tmp_path, tokenizer_dir, ray_local
):
    config = quickstart_config(tmp_path, tokenizer_dir, "output-file")
    log = tmp_path / "output.txt"
    with log.open("wb") as out:
        driver = command_on_test_ray("raysae.sweep", config, ray_local, stdout=out, stderr=subprocess.STDOUT)
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "\x1b" not in text and "\r" not in text, [line for line in text.splitlines() if "\x1b" in line][:5]
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) < 300, len(lines)
    summary = next(i for i, line in enumerate(lines) if line.startswith("sae_id"))
    ours = [line for line in lines[:summary] if OURS.match(line)] + lines[summary:]
    assert len(ours) > len(lines) / 2, [line for line in lines if not OURS.match(line)][:20]
    # the summary names what each SAE is, and it ends the output with the next commands
    assert {"topk", "jumprelu"} <= set(lines[summary + 1].split() + lines[summary + 2].split())
    assert lines[-2].strip().startswith("raysae dashboard --store"), lines[-5:]
    assert lines[-1].strip().startswith("mlflow ui --backend-store-uri sqlite:"), lines[-5:]
    for phase in ("generation:", "training t000 topk", "training t001 jumprelu", "analysis:"):
        assert any(line.split(" ", 1)[1].startswith(phase) and ETA.search(line) for line in ours), phase
    assert not any("TrainingReport(" in line or "DEFAULT_" in line for line in lines)

    # The same sweep (another name, the caches reused) in a terminal: tqdm bars redrawn in place.
    config = quickstart_config(tmp_path, tokenizer_dir, "output-tty")
    leader, follower = pty.openpty()
    driver = command_on_test_ray("raysae.sweep", config, ray_local, stdout=follower, stderr=follower)
    os.close(follower)
    seen, deadline = b"", time.time() + 600
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the command has ended
                    break
                if not chunk:
                    break
                seen += chunk
            elif driver.poll() is not None:
                break
        assert driver.wait(timeout=60) == 0, seen.decode(errors="replace")[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        os.close(leader)
    shown = seen.decode(errors="replace")
    assert "\r" in shown  # a bar redrawn in place
    assert re.search(r"training t000 topk: +\d+%\|", shown), shown[-2000:]
    assert re.search(r"\d+%\|[^\r\n]*\[\d+:\d\d<\d+:\d\d", shown)  # elapsed<remaining: the ETA
