"""The per-expression view and the collator: model inputs, dynamic padding, seeding, DataLoader and accelerate."""

from __future__ import annotations

import inspect

import pytest
import torch
from datasets import load_dataset
from safetensors.torch import load_file

from clipvg_hf.data import (
    CLIPVGCollator,
    CLIPVGEvalTransform,
    CLIPVGTrainTransform,
    GroundingDataset,
    convert_pack,
    streaming_samples,
)
from clipvg_hf.processing_clipvg import build_clip_tokenizer

from utils.data_factory import TINY


@pytest.fixture(scope="module")
def unc_splits(tmp_path_factory):
    out = tmp_path_factory.mktemp("collate_hf")
    convert_pack(TINY / "splits", TINY / "image_data", out, "unsup-single", datasets=["unc"])
    cache = str(out.parent / f"{out.name}_cache")
    splits = {
        split: load_dataset(str(out), "refcoco-unsup-single", split=split, cache_dir=cache)
        for split in ("val", "train_pseudo")
    }
    return {**splits, "root": out}


@pytest.fixture(scope="module")
def collator():
    return CLIPVGCollator(build_clip_tokenizer(TINY.parent / "bpe_simple_vocab_16e6.txt.gz"), return_row_index=True)


def test_eval_batch_matches_the_official_inputs(unc_splits, collator):
    expected = load_file(TINY / "expected.safetensors")
    view = GroundingDataset(unc_splits["val"], CLIPVGEvalTransform())
    batch = collator([view[i] for i in range(len(view))])
    official_ids, official_mask = expected["unc/val/input_ids"].long(), expected["unc/val/text_mask"].bool()
    longest = int(official_mask.sum(1).max())
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (18, longest)  # dynamic padding
    assert torch.equal(batch["attention_mask"].bool(), official_mask[:, :longest])
    real = batch["attention_mask"].bool()
    assert torch.equal(batch["input_ids"][real], official_ids[:, :longest][real])
    assert batch["pixel_values"].shape == (18, 3, 224, 224) and batch["pixel_values"].dtype == torch.float32
    assert batch["pixel_mask"].dtype == torch.long
    assert torch.equal(batch["pixel_mask"], 1 - expected["unc/val/pad_mask"].long())
    torch.testing.assert_close(batch["labels"], expected["unc/val/target_boxes"], atol=1e-6, rtol=0)
    assert batch["row_index"].tolist() == list(range(18))


def test_collator_outputs_are_model_forward_arguments(unc_splits):
    from clipvg_hf import CLIPVGForGrounding

    batch = CLIPVGCollator(build_clip_tokenizer(TINY.parent / "bpe_simple_vocab_16e6.txt.gz"))(
        [GroundingDataset(unc_splits["val"], CLIPVGEvalTransform())[0]]
    )
    assert set(batch) == {"pixel_values", "pixel_mask", "input_ids", "attention_mask", "labels"}
    assert set(batch) <= set(inspect.signature(CLIPVGForGrounding.forward).parameters)


def test_grouped_batches_hold_each_image_once_with_the_same_boxes(unc_splits, converted_model):
    """Evaluation batches: the dataset's image_id groups expressions; model(**batch) gives the per-row boxes."""
    tokenizer = build_clip_tokenizer(TINY.parent / "bpe_simple_vocab_16e6.txt.gz")
    view = GroundingDataset(unc_splits["val"], CLIPVGEvalTransform())
    samples = view.__getitems__(list(range(4)))
    grouped = CLIPVGCollator(tokenizer, group_images=True)(samples)
    plain = CLIPVGCollator(tokenizer)(samples)
    images = len(set(view.image_index[:4].tolist()))
    assert 1 < images < 4 and grouped["pixel_values"].shape[0] == grouped["pixel_mask"].shape[0] == images
    assert torch.equal(grouped["pixel_values"][grouped["image_index"]], plain["pixel_values"])
    assert torch.equal(grouped["pixel_mask"][grouped["image_index"]], plain["pixel_mask"])
    model = converted_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**grouped).pred_boxes, model(**plain).pred_boxes, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="group_images needs samples with an image_id"):
        CLIPVGCollator(tokenizer, group_images=True)([{k: v for k, v in samples[0].items() if k != "image_id"}])


def test_too_long_expression_names_the_sample(collator):
    sample = {
        "pixel_values": torch.zeros(3, 4, 4),
        "pixel_mask": torch.ones(4, 4),
        "labels": torch.zeros(4),
        "text": "word " * 80,
        "row_index": 12,
    }
    with pytest.raises(ValueError, match=r"row 12 is 82 tokens long, over the 77-token CLIP context"):
        collator([sample])


def _epoch_batches(view, collator, num_workers):
    loader = torch.utils.data.DataLoader(view, batch_size=5, num_workers=num_workers, collate_fn=collator)
    return list(loader)


def test_train_augmentation_is_reproducible_across_workers_and_varies_by_epoch(unc_splits, collator):
    view = GroundingDataset(unc_splits["train_pseudo"], CLIPVGTrainTransform(), seed=13)
    single = _epoch_batches(view, collator, 0)
    workers = _epoch_batches(view, collator, 2)
    for a, b in zip(single, workers, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
    view.set_epoch(1)
    next_epoch = _epoch_batches(view, collator, 0)
    assert not torch.equal(single[0]["labels"], next_epoch[0]["labels"])
    view.set_epoch(0)
    assert torch.equal(_epoch_batches(view, collator, 0)[0]["pixel_values"], single[0]["pixel_values"])


def test_unseeded_view_follows_torch_seed(unc_splits):
    view = GroundingDataset(unc_splits["train_pseudo"], CLIPVGTrainTransform())
    torch.manual_seed(0)
    first = [view[i]["labels"] for i in range(4)]
    torch.manual_seed(0)
    again = [view[i]["labels"] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, [view[i]["labels"] for i in range(4)]))


def test_accelerate_prepared_loader_advances_the_epoch(unc_splits, collator):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    view = GroundingDataset(unc_splits["train_pseudo"], CLIPVGTrainTransform(), seed=13)
    loader = accelerator.prepare(torch.utils.data.DataLoader(view, batch_size=8, collate_fn=collator, drop_last=True))
    epochs = []
    for _ in range(2):
        batches = list(loader)
        epochs.append((view.epoch, batches[0]["labels"]))
        assert [b["pixel_values"].shape[0] for b in batches] == [8, 8]
    assert [e for e, _ in epochs] == [0, 1]
    assert not torch.equal(epochs[0][1], epochs[1][1])


def test_streaming_samples_per_rank_cover_the_split_once(unc_splits):
    from datasets.distributed import split_dataset_by_node

    expected = load_file(TINY / "expected.safetensors")["unc/train_pseudo/target_boxes"]
    stream = load_dataset(str(unc_splits["root"]), "refcoco-unsup-single", split="train_pseudo", streaming=True)
    assert stream.num_shards == 8
    seen = {}
    for rank in range(2):
        part = streaming_samples(split_dataset_by_node(stream, rank=rank, world_size=2), CLIPVGEvalTransform())
        rows = {int(s["row_index"]): torch.as_tensor(s["labels"]) for s in part}
        assert not set(rows) & set(seen)
        seen.update(rows)
    assert sorted(seen) == list(range(20))
    torch.testing.assert_close(torch.stack([seen[i] for i in range(20)]), expected, atol=1e-6, rtol=0)
