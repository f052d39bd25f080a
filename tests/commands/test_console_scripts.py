"""Every console script is a ``main(argv) -> int`` of :mod:`clipvg_hf.commands` under the one error decorator, and a
usage error raised below it (a typed library error included) ends as one line ``error: ...`` with exit status 2."""

import configparser
import importlib

import pytest

from clipvg_hf.commands.errors import report_usage_errors
from clipvg_hf.errors import HubPublishError, UsageError

from utils.paths import REPO_ROOT


def console_scripts() -> dict[str, str]:
    """``name -> "module:function"`` from setup.cfg's ``[options.entry_points]``."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


SCRIPTS = console_scripts()
#: What the decorator's wrapper compiles to: the same code object for every decorated function.
DECORATED = report_usage_errors(lambda argv=None: 0).__code__


def entry_point(name: str):
    module, function = SCRIPTS[name].split(":")
    return module, getattr(importlib.import_module(module), function)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_console_script_is_a_decorated_main_of_the_command_layer(name):
    module, main = entry_point(name)
    assert module == f"clipvg_hf.commands.{name.removeprefix('clipvg-').replace('-', '_')}", SCRIPTS[name]
    assert main.__name__ == "main" and main.__code__ is DECORATED, f"{name}: not under @report_usage_errors"


#: A usage error each command raises after parsing (a library check or a typed error), and the words it shows.
FAILURES = {
    "clipvg-app": (["--model", "{tmp}/empty"], "--model {tmp}/empty: "),
    "clipvg-convert-checkpoint": (["--checkpoint", "{tmp}/none.pth", "--output_dir", "{tmp}/out"], "none.pth"),
    "clipvg-convert-splits": (
        ["--split_root", "{tmp}", "--image_root", "{tmp}", "--setting", "unsup-single", "--output_dir", "{tmp}/file"],
        "--output_dir {tmp}/file is a file, not a folder",
    ),
    "clipvg-curriculum": (["grid", "--scores", "a={tmp}", "--output", "{tmp}/no/g.png"], "--output {tmp}/no/g.png"),
    "clipvg-demo": (["--output_dir", "{tmp}/file"], "--output_dir {tmp}/file is a file, not a folder"),
    "clipvg-evaluate": (
        ["--model_name_or_path", "{tmp}/no/model", "--dataset", "{tmp}", "--split", "val"],
        "--model_name_or_path {tmp}/no/model: model folder not found",
    ),
    "clipvg-predict": (
        ["--model_name_or_path", "{tmp}", "--image", "{tmp}/x.jpg", "--text", " "],
        "--text number 1 is empty",
    ),
    "clipvg-pseudo-label": (
        ["--image_dir", "{tmp}/none", "--detector", "d", "--output_dir", "{tmp}/out"],
        "--image_dir '{tmp}/none': not a folder",
    ),
    "clipvg-push": (
        ["space", "--model_id", "bad id", "--repo_id", "org/demo", "--dry_run", "{tmp}/out"],
        "malformed repo id 'bad id'",
    ),
    "clipvg-train": (
        ["--dataset", "{tmp}", "--dataset_config", "c", "--output_dir", "{tmp}/file"],
        "--output_dir {tmp}/file is a file",
    ),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_console_script_reports_a_usage_error_as_one_line_and_exit_status_2(name, tmp_path, capsys):
    assert name in FAILURES, f"add a usage error of {name} to FAILURES"
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    argv, words = FAILURES[name]
    _, main = entry_point(name)
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and words.format(tmp=tmp_path) in lines[-1], err


def test_the_decorator_shows_the_first_line_of_a_typed_error_and_leaves_bugs_alone(capsys):
    @report_usage_errors
    def refuses(argv: list[str] | None = None) -> int:
        raise HubPublishError("no Hugging Face token: set HF_TOKEN\n(more advice on a second line)")

    @report_usage_errors
    def breaks(argv: list[str] | None = None) -> int:
        raise KeyError("a bug")

    with pytest.raises(SystemExit) as exit_info:
        refuses([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: no Hugging Face token: set HF_TOKEN\n"
    with pytest.raises(KeyError):
        breaks([])
    assert issubclass(HubPublishError, UsageError) and issubclass(UsageError, ValueError)
