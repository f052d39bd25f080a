"""HiVG's ground-truth object mask: drawn as pycocotools draws the box, carried with the image, used by the loss."""

from pathlib import Path

import numpy as np
import pytest
import torch

from clipvg_hf.data import CLIPVGCollator, CLIPVGEvalTransform, CLIPVGTrainTransform, GroundingDataset, load_split
from clipvg_hf.data.object_mask import rasterize_box

from _hivg_fixture import converted, expected_json, expected_tensors, one_thread, rect_masks

SPLITS = Path(__file__).resolve().parents[2] / "fixtures" / "hivg_tiny" / "splits"
IMAGES = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "tiny" / "image_data"
_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def hivg_dataset(tmp_path_factory):
    """HiVG's fixture split files (COCO rows with a size dict, ReferIt and Flickr30k rows) converted."""
    from clipvg_hf.data import convert_pack

    out = tmp_path_factory.mktemp("hivg-data")
    convert_pack(SPLITS, IMAGES, out, "full")
    return out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_rasteriser_draws_boxes_as_pycocotools_does():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    for i in range(3000):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        if i % 2:  # one decimal, as the annotations store them: corners land on frBbox's rounding boundaries
            x, y, w, h = np.round(rng.uniform(-2, 32, 4), 1) - [0, 0, 4, 4]
        else:
            x, y, w, h = rng.uniform(-2, 32, 4) - [0, 0, 4, 4]
        official = coco_mask.decode(coco_mask.frPyObjects(np.array([[x, y, w, h]]), height, width))[:, :, 0]
        ours = rasterize_box((x, y, x + w, y + h), height, width).numpy()
        assert np.array_equal(ours, official), (x, y, w, h, height, width)


@pytest.mark.parametrize(
    "config, split, key",
    [
        ("refcoco-full", "val", "unc/val"),
        ("refcoco-full", "testA", "unc/testA"),
        ("refcoco-full", "train", "unc/train"),
        ("referit-full", "test", "referit/test"),
        ("flickr30k-full", "test", "flickr/test"),
        ("mixup-full", "val", "mixup/val"),  # COCO rows with a size dict, "referit" and "flickr" rows, all xywh
    ],
)
def test_eval_transform_masks_are_the_official_ones(hivg_dataset, config, split, key):
    data = GroundingDataset(load_split(hivg_dataset, config, split), CLIPVGEvalTransform(), object_masks=True)
    batch = CLIPVGCollator(group_images=True)(data.__getitems__(list(range(len(data)))))
    official = rect_masks(expected_tensors()[f"{key}/obj_mask_rect"])
    assert batch["object_mask"].dtype == torch.uint8 and batch["object_mask"].shape == official.shape
    assert torch.equal(batch["object_mask"].long(), official)
    torch.testing.assert_close(batch["labels"], expected_tensors()[f"{key}/target_boxes"], atol=1e-6, rtol=0)


def test_a_mixup_row_names_its_image_folder():
    from clipvg_hf.data import DATASETS, SplitRowError, parse_row

    info = DATASETS["mixup"]
    row = parse_row(("vg1.jpg", "flickr", [1.5, 2, 3, 4], "a dog", []), 0, info, "mixup_val.pth", "human")
    assert row.file_name == "Flickr30k/flickr30k-images/vg1.jpg" and row.bbox == (1.5, 2.0, 4.5, 6.0)
    with pytest.raises(SplitRowError, match="row 4: mixup row of a non-COCO image 'vg1.jpg' must name its source"):
        parse_row(("vg1.jpg", {"height": 5, "width": 5}, [1, 2, 3, 4], "a dog", []), 4, info, "mixup_val.pth", "human")


def test_hivg_loss_on_the_data_pipeline_batch_is_the_official_one(hivg_dataset):
    """The unc/train rows through the eval transform and the collator: the seven official loss terms (1e-5); the
    box-on-canvas fallback gives other alignment and segmentation terms."""
    data = GroundingDataset(
        load_split(hivg_dataset, "refcoco-full", "train"), CLIPVGEvalTransform(), object_masks=True
    )
    batch = CLIPVGCollator()(data.__getitems__(list(range(len(data)))))
    model, reference = converted("unc"), expected_json()["loss_on_train"]
    with torch.no_grad():
        out = model(**batch, bridge_batch_mixing=True)
        fallback = model(**{k: v for k, v in batch.items() if k != "object_mask"}, bridge_batch_mixing=True)
    renamed = {"loss_algin_focal": "loss_align_focal"}
    for name, value in reference.items():
        if name != "total":
            assert abs(out.loss_dict[renamed.get(name, name)].item() - value) <= 1e-5, name
    assert abs(out.loss.item() - reference["total"]) <= 1e-5 * reference["total"]
    assert abs(fallback.loss_dict["loss_seg_dice"] - out.loss_dict["loss_seg_dice"]) > 1e-5


@pytest.mark.parametrize("fused", [False, True])
def test_train_transform_carries_the_mask_with_the_image(hivg_dataset, fused):
    """Crop and resize branches: the mask stays inside the image and hugs the target box (within the nearest
    resize's pixel); the fused crop-resize shortcut gives the exact branch's mask. Labels from the float box, as
    the mask is."""
    transform = CLIPVGTrainTransform(draft_decode=fused, fused_crop_resize=fused)
    split = load_split(hivg_dataset, "refcoco-full", "val")
    data = GroundingDataset(split, transform, seed=3, object_masks=True, box_key="bbox")
    branches = set()
    for index in range(len(data)):
        item = data[index]
        branches.add(item["meta"]["branch"])
        mask = item["object_mask"].bool()
        assert not (mask & (item["pixel_mask"] == 0)).any()
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        cx, cy, w, h = (item["labels"] * 224).tolist()
        if w < 2 or h < 2:
            continue
        drawn = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
        box = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        assert (drawn - box).abs().max() <= 1.5, (index, drawn, box)
        if fused:
            exact = GroundingDataset(split, CLIPVGTrainTransform(), seed=3, object_masks=True, box_key="bbox")
            assert torch.equal(exact[index]["object_mask"], item["object_mask"])
    assert branches == {"crop", "resize"}


def test_a_training_step_takes_the_masks_from_the_loader(hivg_dataset):
    """Augmented samples through a DataLoader and the collator into one HiVG optimisation step (what clipvg-train
    builds for HiVG models): the step's alignment and segmentation terms are those of the carried masks."""
    import copy

    from clipvg_hf.modeling_hivg import hivg_loss

    data = GroundingDataset(
        load_split(hivg_dataset, "refcoco-full", "train"), CLIPVGTrainTransform(), seed=0, object_masks=True
    )
    loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=CLIPVGCollator())
    batch = next(iter(loader))
    assert batch["object_mask"].shape == (4, 224, 224) and batch["object_mask"].any()
    model = copy.deepcopy(converted("unc")).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(**batch)
    out.loss.backward()
    optimizer.step()
    expected = hivg_loss(
        out.pred_boxes[:, 0],
        batch["labels"],
        out.logits_per_text,
        out.visual_token_similarity,
        out.seg_mask_logits,
        batch["object_mask"],
        model.config.loss_weights,
    )
    for name in ("loss_align_focal", "loss_align_dice", "loss_seg_focal", "loss_seg_dice"):
        assert torch.allclose(out.loss_dict[name], expected[name])
    assert model.seg_head[0].weight.grad.abs().sum() > 0


def test_streamed_samples_carry_the_same_masks(hivg_dataset):
    from clipvg_hf.data import streaming_samples

    config, split = "mixup-full", "val"
    streamed = streaming_samples(
        load_split(hivg_dataset, config, split, streaming=True), CLIPVGTrainTransform(), seed=5, object_masks=True
    )
    data = GroundingDataset(load_split(hivg_dataset, config, split), CLIPVGTrainTransform(), seed=5, object_masks=True)
    by_row = {int(sample["row_index"]): sample for sample in streamed}
    assert len(by_row) == len(data)
    for index in range(len(data)):
        item = data[index]
        assert torch.equal(torch.as_tensor(by_row[item["row_index"]]["object_mask"]), item["object_mask"])
