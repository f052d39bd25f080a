"""Image processor of CLIP-VG: the official evaluation letterbox, pixel mask and box post-processing.

This file is uploaded next to the model as Hub remote code, so it imports only its sibling modules (the box
geometry of ``boxes_clipvg``).
"""

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ImageInput, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack

from .boxes_clipvg import (
    BOX_FORMATS,
    LetterboxGeometry,
    boxes_to_xyxy,
    canvas_cxcywh_to_xyxy,
    letterbox_geometry,
    xyxy_to_canvas_cxcywh,
)

__all__ = [
    "BOX_FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIPVGImageProcessor",
    "CLIPVGImageProcessorKwargs",
    "LetterboxGeometry",
    "letterbox_geometry",
]

# CLIP-VG normalises with ImageNet statistics, not CLIP's.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _read_image_file(path: str | os.PathLike) -> PIL.Image.Image:
    """Open an image file fully, as the official data loader does (no EXIF rotation), with a clear error."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"Could not read image {os.fspath(path)!r}: {error}") from error


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
    """Convert any PIL mode to an RGB ``(H, W, 3)`` uint8 array with PIL's own ``convert("RGB")``.

    transformers' ``convert_to_rgb`` composites transparent images onto white, which the official pipeline does not.
    """
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Got an empty image of {image.width}x{image.height} pixels (mode {image.mode}).")
    try:
        return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Could not decode the image (mode {image.mode}, {image.width}x{image.height}): {error}"
        ) from error


class CLIPVGImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    box_format (`str`, *optional*, defaults to `"xyxy"`):
        Layout of the `boxes` passed to `preprocess`: `"xyxy"` (corners) or `"xywh"` (top-left corner and size), in
        pixels of the original image.
    truncate_boxes (`bool`, *optional*, defaults to `False`):
        Cut box numbers to integers before use, as the official CLIP-VG data loader does. Turn it on to reproduce the
        official targets (and accuracies) on the released split files.
    """

    box_format: str
    truncate_boxes: bool


class CLIPVGImageProcessor(PilBackend):
    r"""Letterbox image processor of CLIP-VG (PIL/NumPy, no torchvision needed).

    Reproduces the official evaluation transform: the long side is resized to `size["longest_edge"]` with PIL
    bilinear (sides `round(side * scale)`), pixels are scaled to [0, 1] and normalised with **ImageNet** statistics,
    then the image is centred on a zero canvas (offsets `round(free / 2 - 0.1)`). Returns `pixel_values`,
    `pixel_mask` (1 = real pixel, 0 = padding) and, when `boxes` are given, `labels`: normalised
    `(center_x, center_y, width, height)` on the canvas, the format of the model's `pred_boxes`.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = CLIPVGImageProcessorKwargs

    size = {"longest_edge": 224}
    default_to_square = False
    resample = PILImageResampling.BILINEAR
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD
    do_convert_rgb = True
    box_format = "xyxy"
    truncate_boxes = False

    def __init__(self, **kwargs: Unpack[CLIPVGImageProcessorKwargs]) -> None:
        super().__init__(**kwargs)
        self._check_letterbox_settings(size=self.size, do_resize=self.do_resize)

    @staticmethod
    def _check_letterbox_settings(size: SizeDict | None, do_resize: bool | None) -> None:
        """Reject settings under which the output would not be the square letterbox the model expects."""
        if size is None or set(dict(size)) != {"longest_edge"} or size.longest_edge <= 0:
            raise ValueError(f"size must be {{'longest_edge': <positive int>}} (the canvas side), got {size}.")
        if do_resize is False:
            raise ValueError("CLIPVGImageProcessor always letterboxes; do_resize=False is not supported.")

    def fetch_images(self, image_url_or_urls: Any) -> Any:
        """Open local image files like the official data loader (no EXIF rotation); URLs go through transformers."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if image_url_or_urls is None:
            raise ValueError("Got None instead of an image.")
        if isinstance(image_url_or_urls, os.PathLike) or (
            isinstance(image_url_or_urls, str) and not image_url_or_urls.startswith(("http://", "https://"))
        ):
            return _read_image_file(image_url_or_urls)
        return super().fetch_images(image_url_or_urls)

    def process_image(self, image: ImageInput, do_convert_rgb: bool | None = None, **kwargs: Any) -> np.ndarray:
        """Turn one image (PIL, NumPy or torch) into a channels-first array.

        With ``do_convert_rgb`` (the default) any PIL mode becomes RGB through PIL's ``convert("RGB")``, and arrays
        with 1 or 4 channels get their grey channel repeated or their alpha dropped, as that conversion does.
        With ``do_convert_rgb=False`` the channels are kept as they are (the model itself takes 3).
        """
        convert = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb
        if isinstance(image, PIL.Image.Image) and convert:
            image = _pil_to_rgb(image)
            kwargs["input_data_format"] = "channels_last"
        array = super().process_image(image, do_convert_rgb=False, **kwargs)
        if convert and array.shape[0] == 1:
            array = np.repeat(array, 3, axis=0)
        elif convert and array.shape[0] == 4:  # drop alpha like PIL's convert("RGB")
            array = array[:3]
        if (convert and array.shape[0] != 3) or array.shape[1] == 0 or array.shape[2] == 0:
            raise ValueError(
                f"Expected a non-empty image with 1, 3 or 4 channels, got an array of shape {array.shape}."
            )
        return array

    def preprocess(
        self,
        images: ImageInput,
        boxes: Any = None,
        **kwargs: Unpack[CLIPVGImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        boxes (`list` or `np.ndarray`, *optional*):
            One box per image, in pixels of that image (layout given by `box_format`). They are returned as `labels`:
            normalised `(center_x, center_y, width, height)` on the letterboxed canvas.
        """
        return super().preprocess(images, boxes, **kwargs)

    def _preprocess_image_like_inputs(self, images: ImageInput, boxes: Any = None, **kwargs: Any) -> BatchFeature:
        """Convert each distinct input image once (a batch may repeat one image for several expressions)."""
        flat = self._prepare_images_structure(images)
        if len(flat) == 0:
            raise ValueError("Got an empty list of images.")
        converted: dict[int, np.ndarray] = {}
        arrays = []
        for image in flat:
            if id(image) not in converted:
                converted[id(image)] = self.process_image(image, **kwargs)
            arrays.append(converted[id(image)])
        return self._preprocess(arrays, boxes, **kwargs)

    def _letterbox(
        self,
        image: np.ndarray,
        side: int,
        resample: PILImageResampling,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Sequence[float],
        image_std: Sequence[float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resize, normalise and centre one channels-first image; return it with its pixel mask."""
        geometry = letterbox_geometry(image.shape[1], image.shape[2], side)
        image = self.resize(image, SizeDict(height=geometry.new_height, width=geometry.new_width), resample=resample)
        if do_rescale:
            image = self.rescale(image, rescale_factor)
        if do_normalize:
            image = self.normalize(image, image_mean, image_std)
        canvas = np.zeros((image.shape[0], side, side), dtype=np.float32)
        mask = np.zeros((side, side), dtype=np.int64)
        rows = slice(geometry.top, geometry.top + geometry.new_height)
        cols = slice(geometry.left, geometry.left + geometry.new_width)
        canvas[:, rows, cols] = image
        mask[rows, cols] = 1
        return canvas, mask

    def _preprocess(
        self,
        images: list[np.ndarray],
        boxes: Any,
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        box_format: str,
        truncate_boxes: bool,
        return_tensors: str | None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Letterbox every image and, when given, map one box per image onto the canvas."""
        self._check_letterbox_settings(size=size, do_resize=do_resize)
        side = size.longest_edge
        done: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        pixel_values, pixel_mask = [], []
        for image in images:
            if id(image) not in done:
                done[id(image)] = self._letterbox(
                    image, side, resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std
                )
            pixel_values.append(done[id(image)][0])
            pixel_mask.append(done[id(image)][1])
        data = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        if boxes is not None:
            data["labels"] = self._boxes_to_labels(images, boxes, side, box_format, truncate_boxes)
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _boxes_to_labels(
        images: list[np.ndarray], boxes: Any, side: int, box_format: str, truncate: bool
    ) -> np.ndarray:
        """One normalised canvas box per image, as float32 ``(B, 4)``."""
        xyxy = boxes_to_xyxy(boxes, box_format=box_format, truncate=truncate)
        if len(xyxy) != len(images):
            raise ValueError(f"Got {len(xyxy)} boxes for {len(images)} images; pass exactly one box per image.")
        labels = [
            xyxy_to_canvas_cxcywh(box[None], letterbox_geometry(image.shape[1], image.shape[2], side), side)[0]
            for image, box in zip(images, xyxy, strict=True)
        ]
        return np.stack(labels).astype(np.float32)

    def post_process_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.0,
        target_sizes: torch.Tensor | Sequence[tuple[int, int]] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Turn [`CLIPVGForGrounding`] outputs into boxes ``(x1, y1, x2, y2)`` in original-image pixels.

        Args:
            outputs: model output (or mapping) with `pred_boxes` of shape `(batch_size, num_queries, 4)`, normalised
                `(center_x, center_y, width, height)` on the letterboxed canvas.
            threshold: keep boxes whose score is at least this value.
            target_sizes: `(height, width)` of each original image, as a `(batch_size, 2)` tensor or a list of
                pairs. The letterbox is inverted exactly and boxes are clamped to the image. If unset, boxes stay
                normalised corners on the canvas.

        Returns:
            One dict per image with `"scores"`, `"labels"` and `"boxes"`. CLIP-VG has no confidence head: it always
            returns exactly one box per (image, expression). `scores` is therefore a constant 1.0 (not a probability)
            unless the outputs carry `logits`, in which case it is their sigmoid; `labels` is the index of the query
            (always 0 for CLIP-VG).
        """
        pred_boxes = outputs["pred_boxes"]
        if pred_boxes.ndim == 2:
            pred_boxes = pred_boxes[:, None]
        logits = outputs.get("logits") if hasattr(outputs, "get") else getattr(outputs, "logits", None)
        if logits is not None:
            scores, labels = torch.sigmoid(logits).max(dim=-1)
        else:
            scores = torch.ones(pred_boxes.shape[:2], dtype=pred_boxes.dtype, device=pred_boxes.device)
            labels = torch.zeros(pred_boxes.shape[:2], dtype=torch.long, device=pred_boxes.device)
        if target_sizes is not None and len(target_sizes) != len(pred_boxes):
            raise ValueError(f"Got {len(target_sizes)} target sizes for {len(pred_boxes)} images; pass one per image.")
        side = self.size.longest_edge
        results = []
        for index in range(len(pred_boxes)):
            if target_sizes is None:
                geometry = LetterboxGeometry(1.0, side, side, 0, 0)
                boxes = canvas_cxcywh_to_xyxy(pred_boxes[index], geometry, side) / side
            else:
                height, width = (int(v) for v in target_sizes[index])
                geometry = letterbox_geometry(height, width, side)
                boxes = canvas_cxcywh_to_xyxy(pred_boxes[index], geometry, side, clamp_to=(height, width))
            keep = scores[index] >= threshold
            results.append(
                {
                    "scores": scores[index][keep],
                    "labels": labels[index][keep],
                    "boxes": boxes[keep].to(pred_boxes.dtype),
                }
            )
        return results
