"""``--output_config`` of SSA / MSA names the folder of the selected config: a path is refused before any work."""

import pytest

from clipvg_hf.commands.curriculum import msa_main, ssa_main


@pytest.mark.parametrize("command", [ssa_main, msa_main])
@pytest.mark.parametrize("name", ["../../x", "a/b", ".."])
def test_an_output_config_that_is_a_path_is_refused(tmp_path, capsys, command, name):
    argv = [
        *("--dataset", str(tmp_path / "data"), "--dataset_config", "refcoco-unsup-multi"),
        *("--output_dir", str(tmp_path / "run"), "--output_config", name),
    ]
    with pytest.raises(SystemExit) as err:
        command(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --output_config {name!r}: not a name")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
