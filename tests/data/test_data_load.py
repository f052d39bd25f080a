"""load_split never serves a stale Arrow cache for a local dataset folder."""

import datasets

from clipvg_hf.data import convert_dataset, load_split, local_cache_dir
from clipvg_hf.demo_shapes import ShapesSpec, write_shapes_pack


def _convert(root, images, seed):
    write_shapes_pack(root / "raw", {"train": images, "val": 2}, ShapesSpec(), seed=seed)
    convert_dataset(
        root / "raw" / "splits", root / "raw" / "image_data", root / "data", "shapes", "full", num_shards=1
    )
    return root / "data"


def test_same_folder_name_and_reconversion_give_fresh_rows(tmp_path):
    first = _convert(tmp_path / "a", images=3, seed=1)
    second = _convert(tmp_path / "b", images=5, seed=2)  # another folder also called "data"
    assert len(load_split(first, "shapes-full", "train")) == 3
    assert len(load_split(second, "shapes-full", "train")) == 5
    # datasets alone keys both folders' cache by the name "data": one of them would come back stale
    plain = {
        len(datasets.load_dataset(str(f), "shapes-full", split="train", cache_dir=str(tmp_path / "c")))
        for f in (first, second)
    }
    assert len(plain) == 1
    before = local_cache_dir(first)
    _convert(tmp_path / "a", images=4, seed=3)  # re-converted in place
    assert local_cache_dir(first) != before
    assert len(load_split(first, "shapes-full", "train")) == 4
