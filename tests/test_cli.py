import pickle

import pytest

from raysae.cli import run_main, user_error
from raysae.config import ConfigError


def test_config_error_survives_pickling():
    err = ConfigError([("sae.k", "expected int, got 'x'")], "cfg.yaml")
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems and str(again) == str(err)


def test_user_error_found_behind_wrappers():
    try:
        try:
            raise ConfigError([("model.hook_point", "bad")])
        except ConfigError as inner:
            raise RuntimeError("ray wrapper") from inner
    except RuntimeError as outer:
        assert isinstance(user_error(outer), ConfigError)
    assert user_error(RuntimeError("a real bug")) is None


def test_user_error_recovered_from_an_actor_that_died():
    class ActorDiedError(Exception):  # stands in for ray.exceptions.ActorDiedError's text
        pass

    text = "The actor died...\nTraceback ...\nraysae.config.base.ConfigError: model.hook_point: 'x' is not a hook\n"
    assert user_error(ActorDiedError(text)) == "model.hook_point: 'x' is not a hook"


def test_run_main_exit_codes(capsys):
    def bad(argv):
        raise ConfigError([("train.lr", "expected greater than 0, got -1")])

    with pytest.raises(SystemExit) as info:
        run_main(bad, [])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: train.lr: expected greater than 0, got -1"

    def buggy(argv):
        raise KeyError("not bad input, a bug")

    with pytest.raises(KeyError):
        run_main(buggy, [])


def test_train_command_rejects_bad_input_in_one_paragraph():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "raysae.train", "--set", "train.population=[{train.batch_size: 8}]"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: train.population[0].train.batch_size: not a per-SAE setting")
