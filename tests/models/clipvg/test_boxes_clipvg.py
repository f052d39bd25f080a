"""The box geometry home: layouts, IoU, the letterbox offsets and the official box rules, and the old import names."""

import numpy as np
import pytest
import torch

from clipvg_hf import boxes_clipvg
from clipvg_hf.boxes_clipvg import (
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    canvas_cxcywh_to_xyxy,
    crop_box,
    exact_box,
    frbbox_corners,
    grounding_iou,
    letterbox_geometry,
    letterbox_offset,
    xyxy_to_canvas_cxcywh,
)


def test_iou_clamps_prediction_to_canvas():
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # half outside the canvas on two sides
    target = torch.tensor([[0.25, 0.25, 0.5, 0.5]])
    assert grounding_iou(pred, target).item() == pytest.approx(1.0)
    boxes = torch.tensor([[0.3, 0.4, 0.2, 0.6]])
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes)


@pytest.mark.parametrize("free", [0, 1, 2, 3, 5, 11, 112, 113])
def test_letterbox_offset_is_the_official_rounding(free):
    assert letterbox_offset(free) == round(free / 2.0 - 0.1)


def test_letterbox_round_trip_is_exact_up_to_float64():
    geometry = letterbox_geometry(375, 500, 224)
    assert (geometry.new_height, geometry.new_width, geometry.left) == (168, 224, 0)
    assert geometry.top == letterbox_offset(224 - 168)
    xyxy = np.array([[10.0, 20.0, 300.0, 200.0]])
    canvas = torch.from_numpy(xyxy_to_canvas_cxcywh(xyxy, geometry, 224))
    np.testing.assert_allclose(canvas_cxcywh_to_xyxy(canvas, geometry, 224).numpy(), xyxy, rtol=0, atol=1e-9)


def test_crop_and_frbbox_corners():
    box = torch.tensor([10.0, 20.0, 90.0, 80.0])
    assert crop_box(box, (30, 5, 40, 60)).tolist() == [5.0, 0.0, 60.0, 40.0]
    assert frbbox_corners(exact_box((1.5, 2.5, 3.0, 4.0), "xywh"), "xywh") == (1.5, 2.5, 4.5, 6.5)
    assert frbbox_corners((1.5, 2.5, 4.5, 6.5), "xyxy") == (1.5, 2.5, 1.5 + (4.5 - 1.5), 2.5 + (6.5 - 2.5))
    with pytest.raises(ValueError, match="box_format"):
        frbbox_corners((0, 0, 1, 1), "cxcywh")


def test_old_import_names_are_the_same_objects():
    from clipvg_hf import image_processing_clipvg, modeling_clipvg
    from clipvg_hf.data import object_mask, splits, transforms

    for module, names in [
        (modeling_clipvg, ["box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "grounding_iou"]),
        (image_processing_clipvg, ["BOX_FORMATS", "LetterboxGeometry", "letterbox_geometry", "boxes_to_xyxy"]),
        (splits, ["official_box", "exact_box"]),
        (object_mask, ["frbbox_corners"]),
        (transforms, ["crop_box"]),
    ]:
        for name in names:
            assert getattr(module, name) is getattr(boxes_clipvg, name), (module.__name__, name)
