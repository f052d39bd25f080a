"""Image-grouped batches: the sampler's order, and ``GroundingDataset.__getitems__`` = item by item, decoding less."""

import numpy as np
import pytest
import torch
from datasets import load_dataset

import clipvg_hf.data.dataset as dataset_module
import clipvg_hf.data.decode as decode_module
from clipvg_hf.data import (
    CLIPVGCollator,
    CLIPVGTrainTransform,
    GroundingDataset,
    ImageGroupedSampler,
    config_name,
    image_ids,
)

KEYS = ("pixel_values", "pixel_mask", "labels")


@pytest.fixture(scope="module")
def train_split(fixture_dataset):
    return load_dataset(
        str(fixture_dataset),
        config_name("unc", "unsup-single"),
        split="train_pseudo",
        cache_dir=str(fixture_dataset / "cache"),
    )


def _assert_same(batch, items):
    assert len(batch) == len(items)
    for a, b in zip(batch, items):
        assert a["row_index"] == b["row_index"] and a["text"] == b["text"]
        for key in KEYS:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), (a["row_index"], key)


def test_sampler_visits_every_position_once_per_epoch_in_short_runs_of_one_image():
    image_of = np.repeat(np.arange(40), np.arange(1, 41) % 9 + 1)  # 1..9 expressions per image
    sampler = ImageGroupedSampler(image_of, max_per_image=4, seed=3)
    orders = [sampler.indices(epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order) == list(range(len(image_of)))
        images = image_of[order]
        runs = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
        # at least ceil(count / 4) runs per image; chunks are shuffled, so two chunks of an image may meet
        counts = np.bincount(image_of)
        assert len(runs) <= sum(-(-c // 4) for c in counts)
        assert len(runs) < len(image_of) / 2  # grouping happened (a plain shuffle gives ~1 run per position)
    assert orders[0] != orders[1]
    assert ImageGroupedSampler(image_of, 4, seed=3).indices(1) == orders[1]  # deterministic in (seed, epoch)
    sampler.set_epoch(2)
    assert list(sampler) == orders[2] and len(sampler) == len(image_of)


def test_sampler_keeps_whole_images_together_when_runs_may_be_long():
    image_of = np.repeat([7, 3, 9, 5], [5, 1, 3, 4])
    order = ImageGroupedSampler(image_of, max_per_image=10, seed=0).indices(0)
    images = image_of[order]
    assert np.count_nonzero(images[1:] != images[:-1]) == 3  # one run per image


def test_sampler_refuses_bad_arguments():
    with pytest.raises(ValueError, match="max_per_image"):
        ImageGroupedSampler([0, 1], max_per_image=0)
    with pytest.raises(ValueError, match="at least one"):
        ImageGroupedSampler([])


def test_image_ids_follow_subsets(train_split):
    dataset = GroundingDataset(train_split)
    subset = torch.utils.data.Subset(torch.utils.data.Subset(dataset, [5, 4, 3, 2, 1]), [0, 2, 4])
    assert image_ids(subset).tolist() == dataset.image_index[[5, 3, 1]].tolist()
    with pytest.raises(TypeError, match="GroundingDataset"):
        image_ids(torch.utils.data.TensorDataset(torch.zeros(3)))


@pytest.mark.parametrize(
    "transform",
    [
        CLIPVGTrainTransform(),
        CLIPVGTrainTransform(draft_decode=True, fused_crop_resize=True),
        CLIPVGTrainTransform(draft_decode=True),
    ],
    ids=["exact", "draft+fused", "draft"],
)
@pytest.mark.parametrize("simplejpeg", [True, False], ids=["simplejpeg", "pil"])
def test_getitems_equals_item_by_item_and_decodes_each_run_once(train_split, transform, simplejpeg, monkeypatch):
    if not simplejpeg:
        monkeypatch.setattr(decode_module, "simplejpeg", None)
    dataset = GroundingDataset(train_split, transform, seed=11)
    order = ImageGroupedSampler(image_ids(dataset), max_per_image=8, seed=0).indices(0) * 4  # every branch drawn
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        _assert_same(dataset.__getitems__(order), [dataset[i] for i in order])

    opened = []
    real_open = dataset_module.open_raw_image
    monkeypatch.setattr(dataset_module, "open_raw_image", lambda *a, **k: opened.append(a[1]) or real_open(*a, **k))
    dataset.__getitems__(order)
    images = dataset.image_index[order]
    assert len(opened) == 1 + np.count_nonzero(images[1:] != images[:-1]) < len(order)


def test_a_dataloader_batch_goes_through_getitems(train_split):
    dataset = GroundingDataset(train_split, CLIPVGTrainTransform(), seed=5)
    sampler = ImageGroupedSampler(image_ids(dataset), max_per_image=3, seed=1)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=6, sampler=sampler, collate_fn=CLIPVGCollator(return_row_index=True)
    )
    rows = torch.cat([batch["row_index"] for batch in loader]).tolist()
    assert rows == [int(dataset.row_index[i]) for i in sampler.indices(0)]


def test_getitems_names_a_truncated_image(train_split, tmp_path):
    transform = CLIPVGTrainTransform(draft_decode=True)
    table = train_split.cast_column("image", __import__("datasets").Image(decode=False))
    first = table[0]
    broken = table.map(
        lambda row: {"image": {"bytes": row["image"]["bytes"][: len(row["image"]["bytes"]) // 3], "path": None}},
        cache_file_name=str(tmp_path / "broken.arrow"),
    )
    assert first["file_name"].lower().endswith(".jpg")
    dataset = GroundingDataset(broken, transform, seed=0)
    positions = [i for i in range(len(dataset)) if dataset.image_index[i] == 0]
    with pytest.raises(ValueError, match=first["file_name"]):
        dataset.__getitems__(positions)


def test_prepared_loader_follows_the_sampler_each_epoch_and_on_resume(train_split):
    from accelerate import Accelerator

    dataset = GroundingDataset(train_split, CLIPVGTrainTransform(draft_decode=True), seed=5)
    sampler = ImageGroupedSampler(image_ids(dataset), max_per_image=3, seed=2)
    loader = Accelerator(cpu=True).prepare(
        torch.utils.data.DataLoader(
            dataset, batch_size=4, sampler=sampler, collate_fn=CLIPVGCollator(return_row_index=True)
        )
    )
    rows_of = {epoch: [int(dataset.row_index[i]) for i in sampler.indices(epoch)] for epoch in (0, 1)}
    assert rows_of[0] != rows_of[1]
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)  # forwarded to the sampler by the prepared loader
        assert torch.cat([b["row_index"] for b in loader]).tolist() == rows_of[epoch]
    loader.set_epoch(1)
    resumed = Accelerator(cpu=True).skip_first_batches(loader, 2)
    assert torch.cat([b["row_index"] for b in resumed]).tolist() == rows_of[1][8:]


def test_eval_runs_in_file_order_letterbox_each_image_once(train_split, monkeypatch):
    from clipvg_hf.data import CLIPVGEvalTransform
    from clipvg_hf.image_processing_clipvg import CLIPVGImageProcessor

    dataset = GroundingDataset(train_split, CLIPVGEvalTransform())
    order = list(range(len(dataset)))  # evaluation loaders read the file order, where an image's rows are adjacent
    letterboxed = []
    real = CLIPVGImageProcessor._letterbox
    monkeypatch.setattr(
        CLIPVGImageProcessor, "_letterbox", lambda self, *a, **k: letterboxed.append(1) or real(self, *a, **k)
    )
    batch = dataset.__getitems__(order)
    images = dataset.image_index[order]
    assert len(letterboxed) == 1 + np.count_nonzero(images[1:] != images[:-1]) < len(order)
    _assert_same(batch, [dataset[i] for i in order])
    assert all(item["pixel_mask"].dtype == torch.long for item in batch)


def test_streamed_samples_decode_each_image_once_and_equal_the_map_style_view(
    fixture_dataset, train_split, monkeypatch
):
    from clipvg_hf.data import streaming_samples

    transform = CLIPVGTrainTransform(draft_decode=True)
    stream = load_dataset(
        str(fixture_dataset), config_name("unc", "unsup-single"), split="train_pseudo", streaming=True
    )
    opened = []
    real_open = dataset_module.open_raw_image
    monkeypatch.setattr(dataset_module, "open_raw_image", lambda *a, **k: opened.append(a[1]) or real_open(*a, **k))
    streamed = list(streaming_samples(stream, transform, seed=21))
    view = GroundingDataset(train_split, transform, seed=21)
    assert len(streamed) == len(view) and len(opened) == len(train_split) < len(view)  # one open per image
    by_row = {int(view.row_index[i]): i for i in range(len(view))}
    _assert_same(streamed, [view[by_row[int(s["row_index"])]] for s in streamed])
