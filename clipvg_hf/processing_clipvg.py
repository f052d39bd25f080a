"""Processor of CLIP-VG: the letterbox image processor plus OpenAI's CLIP tokenizer, with the official text cleaning.

This file is uploaded next to the model as Hub remote code, so it imports only its sibling modules.
"""

import gzip
import html
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import CLIPTokenizer
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ImageInput
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack

from .image_processing_clipvg import CLIPVGImageProcessor, CLIPVGImageProcessorKwargs

try:  # ftfy is a dependency of the package; remote-code users without it get a warning, not a crash
    import ftfy
except ImportError:
    ftfy = None

__all__ = [
    "CLIP_TOKENIZER_HUB_ID",
    "CLIPVGProcessor",
    "CLIPVGProcessorKwargs",
    "build_clip_tokenizer",
    "clean_text",
    "default_bpe_path",
]

#: Where real users get the tokenizer (and CLIP weights) of the released CLIP-VG models.
CLIP_TOKENIZER_HUB_ID = "openai/clip-vit-base-patch16"

#: Context length of CLIP's text tower: [SOT] + at most 75 BPE tokens + [EOT].
CLIP_CONTEXT_LENGTH = 77

_BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's vocabulary: 256 byte symbols, the same with "</w>", 48,894 merges, then [SOT] and [EOT] = 49,408 entries.
_NUM_MERGES = 49152 - 256 - 2


# OpenAI's BPE merges file (MIT licence) ships as package data: clipvg_hf/assets/bpe_simple_vocab_16e6.txt.gz is a
# byte-identical copy of the one in OpenAI's CLIP repository (also in the open_clip wheels), so the tokenizer can be
# built offline.
def default_bpe_path() -> Path:
    """Path of the BPE merges file shipped as package data (``clipvg_hf/assets``)."""
    return Path(__file__).resolve().parent / "assets" / _BPE_FILE_NAME


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in OpenAI's order (printable bytes first, then the rest)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def build_clip_tokenizer(bpe_path: str | os.PathLike | None = None, **kwargs) -> CLIPTokenizer:
    """Build OpenAI's CLIP tokenizer from its BPE merges file, without the Hub.

    The ids equal those of OpenAI's ``clip.tokenize`` (given text cleaned with :func:`clean_text`), except that
    padding uses ``<|endoftext|>`` instead of 0; use ``attention_mask``, not ``ids > 0``, to find real tokens.
    Real users can equally load ``CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch16")``.

    Args:
        bpe_path: OpenAI's ``bpe_simple_vocab_16e6.txt.gz``; defaults to the copy shipped with the package.
        **kwargs: forwarded to `CLIPTokenizer` (e.g. ``model_max_length``).
    """
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"BPE merges file not found: {path}. Pass the path of OpenAI's {_BPE_FILE_NAME}, or load the tokenizer "
            f"from the Hub with CLIPTokenizer.from_pretrained({CLIP_TOKENIZER_HUB_ID!r})."
        )
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    # The first line is a version header; OpenAI keeps exactly _NUM_MERGES merges after it.
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    if len(merges) != _NUM_MERGES or any(len(merge) != 2 for merge in merges):
        raise ValueError(f"{path} is not OpenAI's CLIP BPE file: expected {_NUM_MERGES} merge pairs.")
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    kwargs.setdefault("model_max_length", CLIP_CONTEXT_LENGTH)
    return CLIPTokenizer(vocab=vocab, merges=merges, **kwargs)


def clean_text(text: str) -> str:
    """Clean an expression the way the official CLIP-VG pipeline does before BPE, and lower-case it.

    Repairs mojibake with ftfy, un-escapes HTML entities (twice, as OpenAI's tokenizer does, so ``&amp;amp;`` becomes
    ``&``), folds runs of whitespace into one space and strips the ends. `CLIPTokenizer` alone does not un-escape
    HTML, so skipping this changes the ids of expressions such as ``"table &amp; chairs"``.
    """
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class CLIPVGProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: CLIPVGImageProcessorKwargs


class CLIPVGProcessor(ProcessorMixin):
    r"""Processor of CLIP-VG: [`CLIPVGImageProcessor`] for the letterbox and a CLIP tokenizer for the expressions.

    Every expression becomes one row of the batch; each distinct image is letterboxed once and `image_index` gives
    the image of each expression, the input layout of [`CLIPVGForGrounding`] (which encodes each image once).
    Expressions are cleaned and lower-cased like the official pipeline (:func:`clean_text`) and padded to the longest
    one by default (`padding="max_length"` gives CLIP's 77). An expression over CLIP's context is truncated with a
    warning naming it, or rejected with `truncation=False` (the official behaviour).

    Args:
        image_processor ([`CLIPVGImageProcessor`]): the letterbox image processor.
        tokenizer ([`CLIPTokenizer`]): OpenAI's CLIP tokenizer, e.g. from `"openai/clip-vit-base-patch16"` or
            :func:`build_clip_tokenizer`.
    """

    valid_processor_kwargs = CLIPVGProcessorKwargs
    text_kwargs = {"padding": "longest"}

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as usual. The ``auto_map`` that saving as remote code records on the processor is written to the file
        only: loading never sets it, so the saved and the reloaded processor stay equal."""
        had_auto_map = "auto_map" in self.__dict__
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if not had_auto_map:
                self.__dict__.pop("auto_map", None)

    @property
    def model_input_names(self) -> list[str]:
        """The tokenizer's and image processor's inputs, and ``image_index`` (images and text together)."""
        return list(dict.fromkeys([*super().model_input_names, "image_index"]))

    @classmethod
    def from_defaults(cls, image_size: int = 224) -> "CLIPVGProcessor":
        """The official processor without any download: letterbox to `image_size` px and OpenAI's CLIP BPE tokenizer
        built from the bundled vocabulary (:func:`build_clip_tokenizer`)."""
        return cls(CLIPVGImageProcessor(size={"longest_edge": int(image_size)}), build_clip_tokenizer())

    def __call__(
        self,
        images: ImageInput | None = None,
        text: str | list[str] | list[list[str]] | None = None,
        boxes: Any = None,
        **kwargs: Unpack[CLIPVGProcessorKwargs],
    ) -> BatchFeature:
        r"""Prepare (image, expression) pairs for [`CLIPVGForGrounding`].

        Args:
            images: one image, or a list of images (PIL, NumPy, torch or file paths).
            text: the referring expressions. A string or list of strings pairs with the images one to one, or, with a
                single image, all refer to that image; a list of lists gives several expressions per image.
            boxes: optional ground-truth boxes in original-image pixels, one per row (per expression, or per image
                without `text`), returned as normalised `labels`. See `box_format` and `truncate_boxes`.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` (when `text` is given), `pixel_values` and
            `pixel_mask` (when `images` are given; one row per distinct image), `image_index` (with both: the row of
            `pixel_values` each expression refers to, so that the model encodes each image once for all its
            expressions) and `labels` (when `boxes` are given; one row per expression, or per image without `text`).
        """
        if images is None and text is None:
            raise ValueError("Pass images, text or both.")
        output_kwargs = self._merge_kwargs(
            CLIPVGProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        return_tensors = output_kwargs["text_kwargs"].get("return_tensors")
        images_kwargs = output_kwargs["images_kwargs"]
        data: dict[str, Any] = {}
        if boxes is not None and images is None:
            raise ValueError("boxes are given in image pixels, so they need images.")
        if text is None:
            data.update(self.image_processor(_as_image_list(images), boxes=boxes, **images_kwargs))
            return BatchFeature(data=data, tensor_type=return_tensors)
        expressions, image_index = self._flatten_text(text, images)
        data.update(self._tokenize(expressions, output_kwargs["text_kwargs"]))
        if images is not None:
            image_list = _as_image_list(images)
            data.update(self.image_processor(image_list, **images_kwargs))
            data["image_index"] = image_index
            if boxes is not None:  # one box per expression, in pixels of its image
                rows = [image_list[i] for i in image_index]
                data["labels"] = self.image_processor(rows, boxes=boxes, **images_kwargs)["labels"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _flatten_text(
        text: str | list[str] | list[list[str]], images: ImageInput | None
    ) -> tuple[list[str], list[int]]:
        """List the expressions, one per batch row, with the index of the image each one refers to."""
        if isinstance(text, str):
            text = [text]
        if not isinstance(text, (list, tuple)) or len(text) == 0:
            raise ValueError(f"text must be a string, a non-empty list of strings or a list of lists, got {text!r}.")
        num_images = None if images is None else len(_as_image_list(images))
        if all(isinstance(item, str) for item in text):
            if num_images is None or num_images == len(text):
                return list(text), list(range(len(text)))
            if num_images == 1:
                return list(text), [0] * len(text)
            raise ValueError(
                f"Got {num_images} images and {len(text)} expressions: pass one expression per image, one image with "
                "several expressions, or one list of expressions per image."
            )
        if not all(isinstance(group, (list, tuple)) and all(isinstance(t, str) for t in group) for group in text):
            raise ValueError("text must be a string, a list of strings or a list of lists of strings.")
        if num_images is not None and num_images != len(text):
            raise ValueError(f"Got {num_images} images and {len(text)} lists of expressions; pass one list per image.")
        expressions = [t for group in text for t in group]
        image_index = [i for i, group in enumerate(text) for _ in group]
        return expressions, image_index

    def _tokenize(self, expressions: list[str], text_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Clean and tokenize the expressions, enforcing CLIP's context length."""
        cleaned = [clean_text(t) for t in expressions]
        for index, (original, clean) in enumerate(zip(expressions, cleaned, strict=True)):
            if not clean:
                raise ValueError(f"Expression {index} is empty (got {original!r}); CLIP-VG needs a referring text.")
        text_kwargs = dict(text_kwargs)
        context = self.tokenizer.model_max_length
        limit = text_kwargs.get("max_length") or context
        if limit > context:
            raise ValueError(f"max_length={limit} exceeds CLIP's text context of {context} tokens.")
        truncation = text_kwargs.pop("truncation", None)
        lengths = [len(ids) for ids in self.tokenizer(cleaned, verbose=False)["input_ids"]]
        too_long = [(i, n) for i, n in enumerate(lengths) if n > limit]
        for index, length in too_long:
            what = (
                f"Expression {index} ({expressions[index]!r}) has {length} tokens with [SOT] and [EOT], "
                f"more than {limit}"
            )
            if truncation is False or truncation == "do_not_truncate":
                raise ValueError(f"{what}; shorten it, or pass truncation=True to cut it.")
            warnings.warn(f"{what}; it is truncated to its first {limit - 2} BPE tokens.", UserWarning, stacklevel=3)
        text_kwargs.update(truncation=True, max_length=limit)
        return dict(self.tokenizer(cleaned, **text_kwargs))

    def post_process_grounded_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.0,
        target_sizes: Any = None,
        text_labels: Sequence[str] | Sequence[Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Turn [`CLIPVGForGrounding`] outputs into one box per (image, expression), in original-image pixels.

        Args:
            outputs: the model output, with `pred_boxes` of shape `(batch_size, 1, 4)`.
            threshold: score threshold, see [`CLIPVGImageProcessor.post_process_object_detection`] (CLIP-VG's scores
                are a constant 1.0, so every box is kept for any threshold up to 1).
            target_sizes: `(height, width)` of the original image of each row.
            text_labels: the expression of each row (a list of strings, or OWLv2-style a list of one-element lists).

        Returns:
            One dict per row with `"scores"`, `"labels"`, `"boxes"` (`(1, 4)`, `(x1, y1, x2, y2)` pixels) and
            `"text_labels"` (the row's expression, or `None`).
        """
        results = self.image_processor.post_process_object_detection(
            outputs, threshold=threshold, target_sizes=target_sizes
        )
        if text_labels is not None and len(text_labels) != len(results):
            raise ValueError(f"Got {len(text_labels)} text labels for {len(results)} rows; pass one per row.")
        for index, result in enumerate(results):
            if text_labels is None:
                result["text_labels"] = None
                continue
            row = [text_labels[index]] if isinstance(text_labels[index], str) else list(text_labels[index])
            result["text_labels"] = [row[int(label)] for label in result["labels"]]
        return results


def _as_image_list(images: ImageInput) -> list[Any]:
    """A flat list of images from one image or a list of them."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("Got an empty list of images.")
        if any(isinstance(image, (list, tuple)) for image in images):
            raise ValueError("Pass images as a flat list; give several expressions per image through text instead.")
        return list(images)
    return [images]
