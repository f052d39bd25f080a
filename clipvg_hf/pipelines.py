"""The ``"visual-grounding"`` pipeline: an image and referring expressions in, one box per expression out.

Importing ``clipvg_hf`` registers it with transformers' ``PIPELINE_REGISTRY``, so ``pipeline("visual-grounding",
model=...)`` builds it. The stock ``pipeline("zero-shot-object-detection", model=...)`` also works with CLIP-VG (the
candidate labels are the expressions), but it runs one forward pass per expression and does not clean the text like
the official pipeline; this one batches the expressions of an image together, encodes the image once for all of them
(``image_index``) and uses [`CLIPVGProcessor`].

``dtype=torch.bfloat16`` (or the older ``torch_dtype=``) runs the model with its weights held in bf16 and its box
head in fp32: transformers loads a model id or folder that way (the model's ``_keep_in_fp32_modules_strict``), and a
model object passed in another dtype is cast in place the same way (``to_inference_dtype``), never left silently in
its own dtype.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoModelForZeroShotObjectDetection, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .errors import first_line

__all__ = ["VisualGroundingPipeline", "register_pipelines"]

TASK = "visual-grounding"


class VisualGroundingPipeline(Pipeline):
    """Locate the region of an image that each referring expression describes.

    ```python
    >>> import clipvg_hf  # registers the task
    >>> from transformers import pipeline
    >>> grounder = pipeline("visual-grounding", model="path/to/clipvg")
    >>> grounder("photo.jpg", text=["the man on the left", "the red car"])
    [{'score': 1.0, 'label': 'the man on the left', 'box': {'xmin': 12.0, 'ymin': 40.5, 'xmax': 180.2, 'ymax': 420.0}},
     {'score': 1.0, 'label': 'the red car', 'box': {...}}]
    ```

    Inputs: an image (PIL, path or URL) with `text` (one expression or a list), a list of images with `text` (the same
    expressions for all of them, or one list per image), or dicts `{"image": ..., "text": ...}`. The expressions of one
    image run as one batch. Returns, per image, one dict per expression in input order: `label` is the expression,
    `box` its box in pixels of the (EXIF-rotated, as transformers loads it) image, `score` is 1.0 because CLIP-VG has
    no confidence head and always answers with exactly one box.
    """

    _load_processor = True
    _load_image_processor = None
    _load_tokenizer = None
    _load_feature_extractor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        requested = kwargs.get("dtype", "auto")
        if requested in (None, "auto"):
            requested = kwargs.get("torch_dtype")
        super().__init__(*args, **kwargs)
        if isinstance(requested, str) and requested != "auto":
            requested = getattr(torch, requested, None)
        if isinstance(requested, torch.dtype) and self.model.dtype != requested:
            # transformers leaves a model object in its own dtype: cast it as a low-precision load would
            cast = getattr(self.model, "to_inference_dtype", None)
            self.model = cast(requested) if cast is not None else self.model.to(requested)

    def __call__(self, image: Any, text: str | list[str] | list[list[str]] | None = None, **kwargs: Any) -> Any:
        """Ground `text` in `image`; see the class docstring for the accepted layouts."""
        if isinstance(image, dict) or (isinstance(image, (list, tuple)) and image and isinstance(image[0], dict)):
            if text is not None:
                raise ValueError("Pass text inside the input dicts or as `text=`, not both.")
            return super().__call__(image, **kwargs)
        if isinstance(image, (list, tuple)):
            if isinstance(text, str) or (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)):
                per_image = [text] * len(image)
            elif isinstance(text, (list, tuple)) and len(text) == len(image):
                per_image = list(text)
            else:
                raise ValueError(
                    f"Got {len(image)} images: pass `text` as expressions shared by all of them or one list per image."
                )
            return super().__call__(
                [{"image": im, "text": t} for im, t in zip(image, per_image, strict=True)], **kwargs
            )
        return super().__call__({"image": image, "text": text}, **kwargs)

    def _sanitize_parameters(self, timeout: float | None = None, **kwargs: Any):
        if kwargs:
            raise TypeError(f"Unexpected arguments for the {TASK} pipeline: {sorted(kwargs)}.")
        preprocess_params = {} if timeout is None else {"timeout": timeout}
        return preprocess_params, {}, {}

    def preprocess(self, inputs: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if not isinstance(inputs, dict) or "image" not in inputs or inputs.get("text") is None:
            raise ValueError(f"The {TASK} pipeline needs an image and `text` (one expression or a list of them).")
        texts = _expressions(inputs["text"])
        image = _load_image(inputs["image"], timeout)
        self._check_image_size(image, inputs["image"])
        model_inputs = self.processor(images=image, text=texts, return_tensors="pt")
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.dtype)
        return {"target_size": (image.height, image.width), "text_labels": texts, **model_inputs}

    def _check_image_size(self, image: Any, source: Any) -> None:
        """An image so thin that the letterbox would shrink its short side to no pixel is refused by name."""
        size = getattr(getattr(self.processor, "image_processor", None), "size", None)
        longest = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
        width, height = image.size
        if longest and min(width, height) * longest < max(width, height):
            name = f" {_describe(source)}" if isinstance(source, str) else ""
            raise ValueError(
                f"Image{name} of {width}x{height} pixels is too thin: resized to the "
                f"model's {longest}-pixel input its short side would have no pixel."
            )

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        target_size = model_inputs.pop("target_size")
        text_labels = model_inputs.pop("text_labels")
        outputs = self.model(**model_inputs)
        return {"target_size": target_size, "text_labels": text_labels, "pred_boxes": outputs.pred_boxes}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        texts = model_outputs["text_labels"]
        results = self.processor.post_process_grounded_object_detection(
            {"pred_boxes": model_outputs["pred_boxes"].float()},
            target_sizes=[model_outputs["target_size"]] * len(texts),
            text_labels=texts,
        )
        return [_as_detection(result) for result in results]


def _expressions(text: Any) -> list[str]:
    """One expression or a list of them, checked: anything else is an error naming what was given."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)):
        raise ValueError(f"`text` must be a string or a list of strings, got {type(text).__name__} {text!r}.")
    wrong = [(i, t) for i, t in enumerate(texts) if not isinstance(t, str)]
    if wrong:
        index, value = wrong[0]
        raise ValueError(f"`text` item {index} must be a string, got {type(value).__name__} {value!r}.")
    if not texts:
        raise ValueError("Got an empty list of expressions.")
    return list(texts)


def _describe(source: Any) -> str:
    """How an image input is named in messages (a path or URL as given, else its type)."""
    if isinstance(source, str):
        return repr(source if len(source) <= 200 else source[:200] + "...")
    return type(source).__name__


def _load_image(source: Any, timeout: float | None) -> Any:
    """``transformers.image_utils.load_image`` with errors that name the input (missing file, unreachable URL)."""
    if isinstance(source, str) and not source.startswith(("http://", "https://", "data:")):
        if not os.path.isfile(source) and (os.sep in source or "." in source[-5:]):
            raise ValueError(f"Image file not found: {source!r}.")
    try:
        return load_image(source, timeout=timeout)
    except Exception as error:  # PIL, httpx and base64 errors: re-raised naming the input
        raise ValueError(f"Could not load image {_describe(source)}: {first_line(error)}") from error


def _as_detection(result: dict[str, Any]) -> dict[str, Any]:
    """One row of post-processed output as the pipeline's plain dict."""
    xmin, ymin, xmax, ymax = (float(v) for v in result["boxes"][0].tolist())
    return {
        "score": float(result["scores"][0]),
        "label": result["text_labels"][0],
        "box": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax},
    }


def register_pipelines() -> None:
    """Register the ``"visual-grounding"`` task with transformers (done on ``import clipvg_hf``)."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK,
            pipeline_class=VisualGroundingPipeline,
            pt_model=AutoModelForZeroShotObjectDetection,
            type="multimodal",
        )
