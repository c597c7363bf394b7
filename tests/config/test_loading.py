import pytest
import yaml
from pydantic import BaseModel

from raysae.config import ConfigError, RaysaeConfig, dump_config, load_config, redact


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def problems_of(path=None, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return dict(info.value.problems), str(info.value)


def test_defaults_are_valid():
    cfg = load_config()
    assert isinstance(cfg, RaysaeConfig)
    assert cfg.sae.architecture == "topk"


def test_unknown_key_names_path_and_suggests(tmp_path):
    problems, text = problems_of(write(tmp_path, "sae:\n  archtecture: topk\n"))
    assert problems == {"sae.archtecture": "unknown key (did you mean 'architecture'?)"}
    assert text.startswith(str(tmp_path / "cfg.yaml"))


def test_unknown_section(tmp_path):
    problems, _ = problems_of(write(tmp_path, "trian:\n  lr: 0.1\n"))
    assert problems == {"trian": "unknown key (did you mean 'train'?)"}


def test_wrong_type_names_path(tmp_path):
    problems, text = problems_of(write(tmp_path, "sae:\n  k: fifty\n"))
    assert problems == {"sae.k": "expected int, got 'fifty'"}
    assert "sae.k: expected int, got 'fifty'" in text


def test_bool_is_not_an_int(tmp_path):
    problems, _ = problems_of(write(tmp_path, "train:\n  batch_size: true\n"))
    assert problems == {"train.batch_size": "expected int, got True"}


def test_bad_values_name_paths(tmp_path):
    problems, _ = problems_of(write(tmp_path, "train:\n  lr: -0.1\nsae:\n  architecture: crosscoder\n"))
    assert set(problems) == {"train.lr", "sae.architecture"}
    assert "greater than 0" in problems["train.lr"] and "-0.1" in problems["train.lr"]
    assert "'topk'" in problems["sae.architecture"] and "'crosscoder'" in problems["sae.architecture"]


def test_k_larger_than_d_sae():
    problems, _ = problems_of(overrides=["sae.d_in=16", "sae.expansion_factor=2", "sae.k=33"])
    assert problems == {"sae.k": "k=33 is larger than d_sae=32"}


def test_schedule_fractions_must_fit():
    problems, _ = problems_of(overrides=["train.lr_warmup_fraction=0.5", "train.lr_decay_fraction=0.6"])
    assert set(problems) == {"train.lr_decay_fraction"}


def test_overrides_are_typed_and_win(tmp_path):
    path = write(tmp_path, "sae:\n  k: 16\n")
    cfg = load_config(path, ["sae.k=64", "train.lr=1e-3", "model.hook_point=blocks.3.hook_mlp_out"])
    assert cfg.sae.k == 64 and cfg.train.lr == 1e-3
    assert cfg.model.hook_point == "blocks.3.hook_mlp_out"


def test_override_errors():
    problems, _ = problems_of(overrides=["sae.k"])
    assert "dotted.key=value" in problems[""]
    problems, _ = problems_of(overrides=["sae.k=abc"])
    assert problems == {"sae.k": "expected int, got 'abc'"}
    problems, _ = problems_of(overrides=["name.x=1"])
    assert problems == {"name.x": "unknown config path"}
    problems, _ = problems_of(overrides=["sae.kk=1"])
    assert problems == {"sae.kk": "unknown config path (did you mean 'k'?)"}


def test_yaml_exponent_floats(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  lr: 1e-3\n  total_tokens: 100000\n"))
    assert cfg.train.lr == 1e-3 and cfg.train.total_tokens == 100000


def test_missing_and_malformed_files(tmp_path):
    problems, text = problems_of(tmp_path / "nope.yaml")
    assert "cannot read config file" in text and "nope.yaml" in text
    problems, text = problems_of(write(tmp_path, "sae: [unclosed\n"))
    assert "not valid YAML" in text
    problems, text = problems_of(write(tmp_path, "- a\n- b\n"))
    assert "expected a mapping" in text


def test_search_space_checks(tmp_path):
    text = """
sweep:
  search_space:
    sae.k: {grid: [16, "many"]}
    sae.nope: {grid: [1]}
    train.lr: {loguniform: [0.001, 0.01]}
"""
    problems, _ = problems_of(write(tmp_path, text))
    assert problems == {
        "sweep.search_space[sae.k].grid[1]": "sae.k: expected int, got 'many'",
        "sweep.search_space[sae.nope]": "not a config path that can be swept",
    }


def test_a_search_space_override_names_one_swept_path(tmp_path):
    # `sweep.search_space.sae.k` is the swept key `sae.k`, not a section `sae` holding `k`.
    path = write(tmp_path, "sweep:\n  search_space:\n    sae.architecture: {grid: [topk, jumprelu]}\n")
    cfg = load_config(path, ["sweep.search_space.sae.k={grid: [32, 64]}"])
    assert set(cfg.sweep.search_space) == {"sae.architecture", "sae.k"}
    assert cfg.sweep.search_space["sae.k"].grid == [32, 64]
    cfg = load_config(None, ["sweep.search_space.train.lr.loguniform=[0.0001, 0.01]"])
    assert cfg.sweep.search_space["train.lr"].loguniform == [0.0001, 0.01]
    problems, _ = problems_of(overrides=["sweep.search_space.sae.k={grid: [16, many]}"])
    assert problems == {"sweep.search_space[sae.k].grid[1]": "sae.k: expected int, got 'many'"}
    problems, _ = problems_of(overrides=["sweep.search_space.sae.kk={grid: [1]}"])
    assert problems == {"sweep.search_space[sae.kk]": "not a config path that can be swept"}


@pytest.mark.parametrize(
    "dim, message",
    [
        ("{grid: []}", "grid is empty"),
        ("{uniform: [1.0, 0.5]}", "low < high"),
        ("{loguniform: [0.0, 1.0]}", "low > 0"),
        ("{grid: [1], choice: [2]}", "exactly one"),
    ],
)
def test_bad_search_dims(tmp_path, dim, message):
    problems, _ = problems_of(write(tmp_path, f"sweep:\n  search_space:\n    sae.k: {dim}\n"))
    assert message in problems["sweep.search_space[sae.k]"]


def test_dump_round_trips_and_redacts(tmp_path):
    cfg = load_config(None, ["store.uri=mongodb://alice:s3cret@db.example:27017/x", "sae.k=48"])
    text = dump_config(cfg)
    assert "s3cret" not in text and "mongodb://***@db.example:27017/x" in text
    again = load_config(write(tmp_path, dump_config(cfg, redacted=False)))
    assert again == cfg
    assert yaml.safe_load(text)["sae"]["k"] == 48


def _models(model: type[BaseModel], prefix=""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _models(ann, f"{prefix}{name}.")


def test_every_field_has_a_description():
    missing = [path for path, field in _models(RaysaeConfig) if not field.description]
    assert missing == []


def test_population_members_override_per_sae_settings_only():
    from raysae.config import member_configs

    cfg = load_config(None, ["train.population=[{sae.architecture: jumprelu}, {sae.k: 8, train.lr: 0.01}]"])
    members = member_configs(cfg)
    assert [(m.sae.architecture, m.sae.k, m.train.lr) for m in members] == [
        ("jumprelu", 32, 3e-4),
        ("topk", 8, 0.01),
    ]
    assert all(m.train.population == [] for m in members)
    assert member_configs(load_config()) == [load_config()]
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.population=[{train.batch_size: 8}, {sae.k: fifty}, {sae.kk: 3}]"])
    text = str(err.value)
    assert "train.population[0].train.batch_size: not a per-SAE setting" in text
    assert "train.population[1]: sae.k: expected int, got 'fifty'" in text
    assert "train.population[2].sae.kk: unknown config path (did you mean 'k'?)" in text


def test_population_members_must_share_what_decides_the_batches():
    from raysae.config import check_population

    a = load_config()
    check_population([a, load_config(None, ["sae.architecture=standard", "train.lr=0.1"])])
    with pytest.raises(ConfigError, match=r"train.batch_size: SAE 1 of the population has 8, SAE 0 has 4096"):
        check_population([a, load_config(None, ["train.batch_size=8"])])


@pytest.mark.parametrize(
    "text,redacted",
    [
        ("mongodb://alice:s3cret@db:27017/x", "mongodb://***@db:27017/x"),
        ("mongodb://u:se@cret@pw@db/x?authSource=admin", "mongodb://***@db/x?authSource=admin"),
        ("http://u:p%40ss@h:5000", "http://***@h:5000"),
        ("mongodb://db/?password=abc&authSource=admin", "mongodb://db/?password=***&authSource=admin"),
        ("http://h/x?apiKey=k1;access_token=t2&a=1", "http://h/x?apiKey=***;access_token=***&a=1"),
        ("s3://b/p?region=eu&X-Amz-Signature=ff", "s3://b/p?region=eu&X-Amz-Signature=***"),
        ("mongodb://h1,h2/db?replicaSet=rs", "mongodb://h1,h2/db?replicaSet=rs"),
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
        ("cannot reach http://u:p@h:1/api (mail x@y)", "cannot reach http://***@h:1/api (mail x@y)"),
    ],
)
def test_redact_drops_userinfo_to_the_last_at_and_secret_parameters(text, redacted):
    assert redact(text) == redacted
    assert redact({"a": [text]}) == {"a": [redacted]}


def test_the_tracking_uri_mlflow_gets_has_no_password(tmp_path, monkeypatch):
    from raysae.config.resolve import tracking_credentials, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(
        None, ["tracking.uri=http://mluser:pw@rd%3A@mlflow.example:5000/x", f"output_dir={tmp_path}"]
    )
    assert tracking_uri(cfg) == "http://mlflow.example:5000/x"
    assert tracking_credentials(cfg) == ("mluser", "pw@rd:")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://env:tok@h")
    cfg = load_config(None, [f"output_dir={tmp_path}"])
    assert (tracking_uri(cfg), tracking_credentials(cfg)) == ("https://h", ("env", "tok"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_credentials(cfg) is None and tracking_uri(cfg).startswith("sqlite:///")
