"""transformers' own common image-processor tests (``ImageProcessingTestMixin``) run on CLIPVGImageProcessor.

The mixin comes from the sdist of the installed transformers (see ``_transformers_common``).
"""

import unittest

import clipvg_hf  # noqa: F401  (registers the Auto classes)
from clipvg_hf import CLIPVGImageProcessor

from _transformers_common import common, require

require()

_image_common = common("test_image_processing_common")


class CLIPVGImageProcessingTester(_image_common.ImageProcessingTester):
    """Small random images letterboxed onto a 32-pixel canvas."""

    def __init__(self, parent, **kwargs):
        kwargs.setdefault("batch_size", 4)
        kwargs.setdefault("min_resolution", 12)
        kwargs.setdefault("max_resolution", 60)
        kwargs.setdefault("size", {"longest_edge": 32})
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self) -> dict:
        # the mixin looks processors up in transformers' built-in table; CLIP-VG has the PIL backend only
        return {"pil": CLIPVGImageProcessor}

    def expected_output_image_shape(self, images) -> tuple[int, int, int]:
        side = self.size["longest_edge"]  # every image is letterboxed onto the square canvas
        return self.num_channels, side, side


class CLIPVGImageProcessingTest(_image_common.ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = CLIPVGImageProcessingTester

    def test_new_models_require_torchvision_backend(self):
        self.skipTest("this package never depends on torchvision; its PIL backend reproduces the official letterbox")
