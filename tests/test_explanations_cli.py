"""`raysae explanations export|import`: Neuronpedia explanation JSON out of one store and into
another gives the same explanations; a bad entry is named and nothing is written."""

import json

import pytest

from raysae.explanations import main
from raysae.store import explanations as store_explanations
from raysae.store import open_store

SAES = [
    {
        "_id": "np-run/t000",
        "name": "np-run",
        "model": "HuggingFaceTB/SmolLM2-135M",
        "hook_point": "blocks.5.hook_resid_post",
        "d_sae": 64,
    },
    {
        "_id": "np-run/t001",
        "name": "np-run",
        "model": "HuggingFaceTB/SmolLM2-135M",
        "hook_point": "blocks.5.hook_resid_post",
        "d_sae": 32,
    },
]
WRITTEN = [  # (sae_id, index, text, source, score)
    ("np-run/t000", 0, "the word 'the' after a comma", "user", None),
    ("np-run/t000", 0, "definite articles", "gpt-4o-mini", 0.42),
    ("np-run/t000", 63, "<script>window.pwned=1</script> knocking ↵ über", "neuronpedia", -1.5),
    ("np-run/t001", 7, "kings and queens", "user", 1.0),
]


def new_store(folder, explanations=()):
    with open_store(None, folder, create=True) as store:
        for sae in SAES:
            store.put_sae(sae)
        for sae_id, index, text, source, score in explanations:
            store_explanations.add(store, sae_id, index, text, source, score)


def read_back(folder):
    with open_store(None, folder) as store:
        return sorted(
            (e["sae_id"], e["index"], e["text"], e["source"], e["score"])
            for e in store_explanations.every(store)
        )


def test_export_then_import_into_a_fresh_store_gives_the_same_explanations(tmp_path, capsys):
    new_store(tmp_path / "a", WRITTEN)
    out = tmp_path / "np.json"
    assert main(["export", "--store", str(tmp_path / "a"), str(out)]) == 0
    entries = json.loads(out.read_text())
    assert len(entries) == len(WRITTEN)
    first = entries[0]
    assert first["modelId"] == "smollm2-135m" and first["layer"] == "5-raysae-np-run-t000"
    assert (first["index"], first["description"], first["explanationModelName"]) == (
        "0",
        WRITTEN[0][2],
        "user",
    )
    assert "scores" not in first and entries[1]["scores"] == [{"value": 0.42}]
    new_store(tmp_path / "b")
    assert main(["import", "--store", str(tmp_path / "b"), str(out)]) == 0
    assert read_back(tmp_path / "b") == sorted(WRITTEN) == read_back(tmp_path / "a")
    assert "imported 4 explanation(s)" in capsys.readouterr().out
    assert main(["import", "--store", str(tmp_path / "b"), str(out)]) == 0  # again: nothing new
    assert "imported 0 explanation(s)" in capsys.readouterr().out and len(read_back(tmp_path / "b")) == 4
    one = tmp_path / "one.json"
    main(["export", "--store", str(tmp_path / "a"), "--sae", "np-run/t001", str(one)])
    assert [(e["raysae_sae_id"], e["index"]) for e in json.loads(one.read_text())] == [("np-run/t001", "7")]


def test_a_neuronpedia_file_is_mapped_by_modelid_and_layer_or_by_sae(tmp_path):
    new_store(tmp_path / "s")
    ours = tmp_path / "ours.json"  # what our export writes, without the raysae id: found by modelId/layer
    ours.write_text(
        json.dumps(
            [{"modelId": "smollm2-135m", "layer": "5-raysae-np-run-t001", "index": 3, "description": "x"}]
        )
    )
    main(["import", "--store", str(tmp_path / "s"), str(ours)])
    assert read_back(tmp_path / "s") == [("np-run/t001", 3, "x", "neuronpedia", None)]
    theirs = tmp_path / "theirs.jsonl"  # a Neuronpedia dataset export: JSON lines
    rows = [
        {
            "modelId": "gpt2-small",
            "layer": "6-res-jb",
            "index": "12",
            "description": "dogs",
            "explanationModelName": "gpt-3.5-turbo",
            "typeName": "oai_token-act-pair",
        },
        {
            "modelId": "gpt2-small",
            "layer": "6-res-jb",
            "index": "13",
            "description": "cats",
            "typeName": "oai_token-act-pair",
        },
    ]
    theirs.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(
        ValueError,
        match=r"entry 1 of 2: no SAE in the store is modelId 'gpt2-small' layer '6-res-jb'; pass --sae",
    ):
        main(["import", "--store", str(tmp_path / "s"), str(theirs)])
    main(["import", "--store", str(tmp_path / "s"), str(theirs), "--sae", "np-run/t000"])
    assert read_back(tmp_path / "s") == [
        ("np-run/t000", 12, "dogs", "gpt-3.5-turbo", None),
        ("np-run/t000", 13, "cats", "oai_token-act-pair", None),
        ("np-run/t001", 3, "x", "neuronpedia", None),
    ]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"modelId": "m", "layer": "l", "index": "5"}, "entry 3 of 3: missing field 'description'"),
        ({"description": "no index", "raysae_sae_id": "np-run/t000"}, "entry 3 of 3: missing field 'index'"),
        (
            {"index": "5", "description": "where?"},
            "entry 3 of 3: missing field 'modelId' (or pass --sae SAE_ID)",
        ),
        (
            {"index": "64", "description": "past", "raysae_sae_id": "np-run/t000"},
            "entry 3 of 3: SAE 'np-run/t000' has no feature 64",
        ),
        (
            {"index": "-1", "description": "neg", "raysae_sae_id": "np-run/t000"},
            "entry 3 of 3: index must be a feature number",
        ),
        (
            {"index": 1, "description": "s", "raysae_sae_id": "np-run/t000", "scores": [{"value": "hi"}]},
            "entry 3 of 3: score must be a number",
        ),
        ("just text", "entry 3 of 3: expected an object, got str"),
    ],
)
def test_a_bad_entry_is_named_and_nothing_is_written(tmp_path, bad, message):
    new_store(tmp_path / "s")
    good = {"index": "1", "description": "fine", "raysae_sae_id": "np-run/t000"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([good, {**good, "index": "2"}, bad]))
    with pytest.raises(ValueError) as info:
        main(["import", "--store", str(tmp_path / "s"), str(path)])
    assert str(info.value).startswith(message), info.value
    assert read_back(tmp_path / "s") == []


def test_the_command_reports_a_bad_file_in_one_line(tmp_path):
    import subprocess
    import sys

    new_store(tmp_path / "s")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"index": "1", "raysae_sae_id": "np-run/t000"}]))
    done = subprocess.run(
        [sys.executable, "-m", "raysae.explanations", "import", "--store", str(tmp_path / "s"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: entry 1 of 1: missing field 'description'"
