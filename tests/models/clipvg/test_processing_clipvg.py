"""transformers' own common processor tests (``ProcessorTesterMixin``) run on CLIPVGProcessor.

The mixin comes from the sdist of the installed transformers (see ``_transformers_common``). The processor is built
from its parts without the Hub: the letterbox image processor and OpenAI's CLIP tokenizer from the bundled BPE file.
"""

import unittest

import clipvg_hf  # noqa: F401  (registers the Auto classes)
from clipvg_hf import CLIPVGImageProcessor, CLIPVGProcessor, build_clip_tokenizer

from _transformers_common import common, require

require()

ProcessorTesterMixin = common("test_processing_common").ProcessorTesterMixin


class CLIPVGProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = CLIPVGProcessor
    # CLIP's text context is 77 tokens (the processor refuses a longer max_length)
    images_text_kwargs_max_length = 70
    images_text_kwargs_override_max_length = 65
    images_unstructured_max_length = 60

    @classmethod
    def _setup_image_processor(cls):
        return CLIPVGImageProcessor(size={"longest_edge": 32})

    @classmethod
    def _setup_tokenizer(cls):
        return build_clip_tokenizer()

    def test_processor_text_has_no_visual(self):
        self.skipTest("CLIP-VG grounds every expression in an image: a sample without one has nothing to ground")
