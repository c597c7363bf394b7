import os
import pickle
import subprocess
import sys
from importlib import import_module
from importlib.metadata import version
from pathlib import Path

import pytest

import raysae
from raysae import __main__ as entry
from raysae.cli import COMMANDS, run_main, user_error
from raysae.config import ConfigError, load_config
from raysae.config.loading import PACKAGED_CONFIGS, packaged_config_names


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


# --- one `raysae` command, each command's --help, named configs -----------------------------


RAYSAE = Path(sys.executable).with_name("raysae")  # the console script beside this Python


def command_main(name: str):
    module = COMMANDS[name].module
    try:
        return import_module(f"{module}.__main__").main
    except ModuleNotFoundError:
        return import_module(module).main


def help_text(capsys, call, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        call(list(argv))
    assert info.value.code == 0
    return capsys.readouterr().out


def check_help(text: str, prog: str, name: str) -> None:
    assert text.startswith(f"usage: {prog} "), text[:200]
    assert "Writes " in text and f"examples:\n  {prog}" in text
    if name != "export":  # its defaults are its format's (below)
        assert "default: " in text  # ArgumentDefaultsHelpFormatter's "(default: x)", or CONFIG's
    if COMMANDS[name].ray:
        assert "--verbose" in text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_help_names_the_command_as_invoked_and_shows_defaults(name, capsys):
    """Run directly, a command is `python -m raysae.<module>`; through the one command (here
    `python -m raysae`, as pytest is not the `raysae` script) it is `python -m raysae <name>`."""
    for prog, call, argv in [
        (f"python -m {COMMANDS[name].module}", command_main(name), []),
        (f"python -m raysae {name}", entry.main, [name]),
    ]:
        text = help_text(capsys, call, *argv, "--help")
        check_help(text, prog, name)
        if name == "export":  # the format's own help, with its options' defaults
            sub = help_text(capsys, call, *argv, "neuronpedia", "--help")
            assert sub.startswith(f"usage: {prog} neuronpedia ") and "(default: 128)" in sub


def test_the_real_entry_points_name_themselves():
    """The console script says `raysae sweep`; `python -m raysae.sweep` says that (the scheme the
    in-process test checks, through the real executables once)."""
    script = subprocess.run([RAYSAE, "sweep", "--help"], capture_output=True, text=True, timeout=120)
    assert script.returncode == 0 and script.stdout.startswith("usage: raysae sweep ")
    assert "raysae sweep quickstart" in script.stdout
    direct = subprocess.run(
        [sys.executable, "-m", "raysae.config", "--help"], capture_output=True, text=True, timeout=120
    )
    assert direct.returncode == 0 and direct.stdout.startswith("usage: python -m raysae.config ")
    top = subprocess.run([RAYSAE, "--help"], capture_output=True, text=True, timeout=120)
    assert top.returncode == 0 and top.stdout.startswith("usage: raysae ")
    assert all(f"\n  {name} " in top.stdout for name in COMMANDS)


def test_version_is_the_package_metadata(capsys):
    assert raysae.__version__ == version("raysae")
    assert help_text(capsys, entry.main, "--version").strip() == f"raysae {raysae.__version__}"


def test_verbose_flag_sets_the_variable_the_output_code_reads(monkeypatch, capsys):
    # setenv, not delenv, first: monkeypatch records nothing for deleting an absent variable, and
    # the "1" the command sets would outlive the test (every later command would run verbose).
    monkeypatch.setenv("RAYSAE_VERBOSE", "0")
    help_text(capsys, entry.main, "--verbose", "config", "--help")
    assert os.environ["RAYSAE_VERBOSE"] == "1"
    monkeypatch.setenv("RAYSAE_VERBOSE", "0")
    help_text(capsys, command_main("sweep"), "--verbose", "--help")
    assert os.environ["RAYSAE_VERBOSE"] == "1"


def test_an_unknown_command_is_refused_listing_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        entry.main(["swep"])
    assert info.value.code == 2 and "invalid choice: 'swep'" in capsys.readouterr().err


def test_a_bare_name_is_a_packaged_config_and_a_path_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"quickstart", "topk", "architectures"} <= set(packaged_config_names())
    assert load_config("quickstart").name == load_config(PACKAGED_CONFIGS / "quickstart.yaml").name
    assert load_config("topk", ["sae.k=8"]).sae.k == 8
    (tmp_path / "quickstart").write_text("name: mine\n")  # a file in the working folder wins
    assert load_config("quickstart").name == "mine"
    with pytest.raises(
        ConfigError, match=r"quickstrt: no such file, and no packaged config .*quickstart, relu, topk"
    ):
        load_config("quickstrt")
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read config file"):
        load_config("missing.yaml")  # a path stays a path


def test_init_writes_a_packaged_config_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        entry.main(["init", "topk"])
    assert info.value.code == 0
    assert (tmp_path / "topk.yaml").read_text() == (PACKAGED_CONFIGS / "topk.yaml").read_text()
    assert "python -m raysae sweep topk.yaml" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        entry.main(["init", "topk"])
    assert info.value.code == 2 and "topk.yaml exists; not overwriting it" in capsys.readouterr().err


def test_a_bare_raysae_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        entry.main([])
    err = capsys.readouterr().err
    assert info.value.code == 2 and all(f"\n  {name} " in err for name in COMMANDS)
