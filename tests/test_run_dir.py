import csv
from pathlib import Path

from raysae.run_dir import write_results


def test_results_put_swept_settings_between_ids_and_metrics(tmp_path):
    rows = [
        {"sae_id": "r/0", "architecture": "topk", "fvu": 0.2, "l0": 32.0, "sae.k": 32, "kl_sae": 0.1},
        {"sae_id": "r/1", "architecture": "topk", "fvu": 0.3, "train.lr": 0.01, "error": "diverged"},
    ]
    with Path(write_results(rows, tmp_path)).open() as f:
        table = list(csv.reader(f))
    header = table[0]
    assert header[:4] == ["sae_id", "architecture", "sae.k", "train.lr"]
    assert header[4:6] == ["mse", "fvu"] and header[-2:] == ["kl_sae", "error"]
    assert dict(zip(header, table[2], strict=True))["sae.k"] == ""
    assert dict(zip(header, table[2], strict=True))["error"] == "diverged"
