"""What a model push stages: only the weight files of the folder, whatever its safetensors index says."""

import json
import shutil

import pytest

from clipvg_hf.commands.push import main as push_main
from clipvg_hf.hub.repo import HubPublishError
from clipvg_hf.hub.staging import weight_files


def test_an_index_can_only_name_weight_shards_inside_the_folder(converted_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(converted_dir, folder)
    (folder / ".env").write_text("HF_TOKEN=hf_secret\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    for shard in (".env", "../secret.txt", "config.json"):
        index = {"metadata": {}, "weight_map": {"box_head.layers.0.weight": shard, "reg_token": "model.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(HubPublishError, match=r"lists files that are not weight shards of this folder: \["):
            weight_files(folder)
        out = tmp_path / "staged"
        with pytest.raises(SystemExit) as exit_info:
            push_main(["model", "--model_dir", str(folder), "--repo_id", "org/name", "--dry_run", str(out)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and repr(shard) in err
        assert not out.exists()
    (folder / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(HubPublishError, match="not a safetensors index"):
        weight_files(folder)


def test_shards_written_by_save_pretrained_are_staged(converted_model, tmp_path):
    converted_model.save_pretrained(tmp_path / "sharded", max_shard_size="4MB")
    names = weight_files(tmp_path / "sharded")
    assert names[0] == "model.safetensors.index.json" and len(names) > 2
    assert all(name.startswith("model-0000") and name.endswith(".safetensors") for name in names[1:])
