"""The official training augmentation: box consistency per step, the spatial-word guard, scales, crop, jitter."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
import torch

from clipvg_hf.data import (
    CLIPVGEvalTransform,
    CLIPVGTrainTransform,
    color_jitter,
    has_spatial_word,
    normalize_and_pad,
    random_size_crop,
    resize_long_side,
    resize_short_side,
    train_scales,
)
from clipvg_hf.image_processing_clipvg import CLIPVGImageProcessor

BOX = (70, 40, 190, 150)  # x1, y1, x2, y2 of the white rectangle, exclusive ends


def box_image(size=(320, 240), box=BOX) -> PIL.Image.Image:
    image = PIL.Image.new("RGB", size, (40, 40, 40))
    PIL.ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    return image


def white_extent(array: np.ndarray, threshold: float) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the pixels brighter than threshold (exclusive ends), None if there are none."""
    ys, xs = np.nonzero(array > threshold)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def pil_extent(image: PIL.Image.Image) -> tuple[int, int, int, int] | None:
    return white_extent(np.asarray(image.convert("L"), dtype=np.float32), 255 * 0.5 + 40 * 0.5)


def canvas_box(labels: torch.Tensor, size: int = 224) -> np.ndarray:
    cx, cy, w, h = (labels * size).tolist()
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def test_train_scales_and_spatial_words():
    assert train_scales() == (224, 192, 160, 128, 96, 64, 32)
    assert train_scales(aug_scale=False) == (224,)
    for text in ("the LEFT one", "laptop", "upright lamp", "bottommost", "middle"):  # substring match
        assert has_spatial_word(text)
    assert not has_spatial_word("a dog near a cat")


@pytest.mark.parametrize("size", [224, 96, 32])
def test_resize_long_side_keeps_box_on_the_same_pixels(size):
    image, box = resize_long_side(box_image(), torch.tensor(BOX, dtype=torch.float32), size)
    assert max(image.size) == size
    found = pil_extent(image)
    assert np.abs(np.array(found) - box.numpy()).max() <= 1.0


@pytest.mark.parametrize("short", [400, 500, 600])
def test_resize_short_side_keeps_box_on_the_same_pixels(short):
    image, box = resize_short_side(box_image(), torch.tensor(BOX, dtype=torch.float32), short)
    assert min(image.size) == short and image.size == (round(320 * short / 240), short)
    assert np.abs(np.array(pil_extent(image)) - box.numpy()).max() <= 1.0


def test_random_size_crop_bounds_and_exact_box_tracking():
    image = box_image((700, 520), (150, 100, 500, 400))
    box = torch.tensor([150, 100, 500, 400], dtype=torch.float32)
    cropped_count = 0
    for seed in range(40):
        out, out_box, window = random_size_crop(image, box, np.random.default_rng(seed))
        if window is None:
            assert out is image and torch.equal(out_box, box)
            continue
        cropped_count += 1
        top, left, height, width = window
        assert 384 <= width <= 600 and 384 <= height <= 520
        assert 0 <= top <= 520 - height and 0 <= left <= 700 - width
        assert out.size == (width, height)
        assert (box[0] + box[2]) / 2 > top and (box[1] + box[3]) / 2 > left  # the official acceptance test
        found = pil_extent(out)
        if out_box[2] > out_box[0] and out_box[3] > out_box[1]:
            assert found == tuple(int(v) for v in out_box.tolist())  # a crop moves pixels exactly
        else:
            assert found is None
    assert cropped_count > 20


def test_random_size_crop_keeps_the_official_cross_axis_check():
    # The official test compares the box centre x with the window's top and y with its left. On a 384-px-high
    # image top is always 0, so a box at the far left (centre x = 2) is accepted whenever left < centre y = 300,
    # i.e. also by windows that do not contain it at all; the box is then clamped to zero width.
    image = box_image((1000, 384), (0, 250, 4, 350))
    box = torch.tensor([0, 250, 4, 350], dtype=torch.float32)
    lost = 0
    for seed in range(30):
        _, out_box, window = random_size_crop(image, box, np.random.default_rng(seed))
        if window is not None and window[1] >= 4:
            lost += 1
            assert out_box[0] == out_box[2] == 0
    assert lost > 0


def test_random_size_crop_gives_up_after_max_tries():
    image = box_image((600, 600))
    box = torch.tensor([0, 0, 0, 600], dtype=torch.float32)  # centre x = 0 can never exceed a top >= 0
    out, out_box, window = random_size_crop(image, box, np.random.default_rng(0))
    assert window is None and out is image and torch.equal(out_box, box)
    with pytest.raises(ValueError, match="needs both sides >= 384"):
        random_size_crop(box_image((300, 600)), box, np.random.default_rng(0))


def test_color_jitter_probability_and_factor_range():
    image = box_image()
    applied = [color_jitter(image, np.random.default_rng(seed))[1] for seed in range(400)]
    rate = sum(1 for a in applied if a) / len(applied)
    assert 0.74 < rate < 0.86
    orders = {tuple(name for name, _ in a) for a in applied if a}
    assert len(orders) == 6  # all permutations of brightness / contrast / saturation occur
    factors = [f for a in applied for _, f in a]
    assert min(factors) >= 0.6 and max(factors) <= 1.4
    jittered, ops = color_jitter(image, np.random.default_rng(1), p=1.0)
    assert ops and jittered.size == image.size and jittered.tobytes() != image.tobytes()


def test_normalize_and_pad_translate_moves_pixels_and_box_together():
    image, box = resize_long_side(box_image(), torch.tensor(BOX, dtype=torch.float32), 160)
    for seed in range(5):
        out = normalize_and_pad(image, box, 224, np.random.default_rng(seed))
        top, left = out["offset"]
        mask = out["pixel_mask"].numpy()
        assert white_extent(mask, 0.5) == (left, top, left + image.width, top + image.height)
        assert 0 <= top <= 224 - image.height and 0 <= left <= 224 - image.width
        np.testing.assert_allclose(canvas_box(out["labels"]), box.numpy() + [left, top, left, top], atol=1e-4)
        red = out["pixel_values"][0].numpy()
        assert np.abs(np.array(white_extent(red, 0.5)) - canvas_box(out["labels"])).max() <= 1.0


def test_full_train_transform_keeps_box_on_the_object_and_never_flips():
    transform = CLIPVGTrainTransform(aug_color=False)
    image = box_image()
    branches, scales = set(), set()
    for seed in range(60):
        out = transform(image, BOX, "a white square", np.random.default_rng(seed))
        branches.add(out["meta"]["branch"])
        scales.add(out["meta"]["scale"])
        mask = out["pixel_mask"].numpy()
        real = white_extent(mask, 0.5)
        assert max(real[2] - real[0], real[3] - real[1]) == out["meta"]["scale"]
        found = white_extent(out["pixel_values"][0].numpy(), 0.5)
        expected = canvas_box(out["labels"])
        if expected[2] - expected[0] < 1 or expected[3] - expected[1] < 1:
            continue  # the crop cut the box away (official behaviour)
        assert found is not None and np.abs(np.array(found) - expected).max() <= 1.5
        if out["meta"]["branch"] == "resize":  # no flip: the box keeps its relative place in the picture
            relative_x = ((expected[0] + expected[2]) / 2 - real[0]) / (real[2] - real[0])
            assert abs(relative_x - (BOX[0] + BOX[2]) / 2 / 320) < 0.03
    assert branches == {"crop", "resize"}
    assert scales == set(train_scales())


def test_spatial_word_guard_disables_the_crop_branch():
    transform = CLIPVGTrainTransform()
    image = box_image()
    guarded = [transform(image, BOX, "the laptop", np.random.default_rng(s))["meta"]["branch"] for s in range(40)]
    assert set(guarded) == {"resize"}
    free = [transform(image, BOX, "a white square", np.random.default_rng(s))["meta"]["branch"] for s in range(40)]
    assert 8 <= free.count("crop") <= 32


def test_same_rng_same_sample():
    transform = CLIPVGTrainTransform()
    a = transform(box_image(), BOX, "a white square", np.random.default_rng(5))
    b = transform(box_image(), BOX, "a white square", np.random.default_rng(5))
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])


@pytest.mark.parametrize("size", [(481, 640), (900, 40), (33, 700), (131, 97)])
def test_unaugmented_train_path_equals_the_image_processor(size):
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    box = [1, 2, size[0] - 3, size[1] - 1]
    plain = CLIPVGTrainTransform(aug_scale=False, aug_crop=False, aug_color=False, aug_translate=False)
    ours = plain(image, box, "x", rng)
    processor = CLIPVGImageProcessor()(images=[image], boxes=[box], return_tensors="pt")
    assert torch.equal(ours["pixel_values"], processor["pixel_values"][0])
    assert torch.equal(ours["pixel_mask"], processor["pixel_mask"][0].long())
    torch.testing.assert_close(ours["labels"], processor["labels"][0], atol=1e-6, rtol=0)
    evaluated = CLIPVGEvalTransform()(image, box)
    assert torch.equal(evaluated["pixel_values"], processor["pixel_values"][0])
