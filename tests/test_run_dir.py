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


def test_resume_record_keeps_the_first_record_and_names_what_changed(tmp_path):
    from raysae.run_dir import resume_record

    path = tmp_path / "state" / "record.json"
    first = {"trials": [[{"sae.k": 8}]], "note": "kept"}
    assert resume_record(path, first) == (first, [])
    assert resume_record(path, first) == (first, [])  # the same job again: resumable
    record, changed = resume_record(path, {"trials": [[{"sae.k": 16}]], "note": "kept"})
    assert record == first and changed == ["trials"]  # lists are compared whole
    record, changed = resume_record(path, {"trials": [[{"sae.k": 8}]], "note": "other"}, compared="trials")
    assert changed == []  # only the compared part counts
    nested = tmp_path / "nested.json"
    resume_record(nested, {"sae 0": {"sae": {"k": 8, "d_in": 32}}})
    assert resume_record(nested, {"sae 0": {"sae": {"k": 9, "d_in": 32}}})[1] == ["sae 0.sae.k"]


def test_run_dir_names_its_files_and_finds_the_run_of_an_sae(tmp_path):
    from raysae.run_dir import RunDir, sae_id_of, sae_ids

    run = RunDir(tmp_path / "runs" / "demo")
    assert run.results == str(tmp_path / "runs" / "demo" / "results.csv")
    assert sae_ids("demo", "t003", 1) == ["demo/t003"] and sae_ids("demo", "train", 2)[1] == "demo/train/1"
    sae_dir = run.sae("demo/t003/1")
    assert sae_id_of(sae_dir) == "demo/t003/1"
    assert RunDir.holding(sae_dir, "demo/t003/1").root == run.root
    assert RunDir(tmp_path).neuronpedia("demo/t003") == str(tmp_path / "neuronpedia" / "demo__t003")
