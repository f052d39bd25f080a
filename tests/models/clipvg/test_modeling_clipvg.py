"""transformers' own common model and config tests (``ModelTesterMixin``, ``ConfigTester``) run on CLIP-VG.

The mixins come from the sdist of the installed transformers (see ``_transformers_common``). Every skip below names
why the test does not apply to CLIP-VG.
"""

import unittest

import torch

import clipvg_hf  # noqa: F401  (registers the Auto classes)
from clipvg_hf import CLIPVGConfig, CLIPVGForGrounding

from _transformers_common import common, require

require()

ModelTesterMixin = common("test_modeling_common").ModelTesterMixin
ConfigTester = common("test_configuration_common").ConfigTester


class CLIPVGModelTester:
    """A tiny CLIP-VG (width 32, 2 layers everywhere, 32 px images, patch 8) and a batch of inputs for it."""

    def __init__(self, parent, batch_size=3, text_length=7, image_size=32, patch_size=8):
        self.parent = parent
        self.batch_size = batch_size
        self.text_length = text_length
        self.image_size = image_size
        self.patch_size = patch_size
        self.is_training = True
        # the fusion encoder is what the common tests see as "the" encoder
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.seq_length = 1 + text_length + 1 + (image_size // patch_size) ** 2  # [REG], text, CLS, patches
        # output_hidden_states adds the multi-level visual and text features, the patch mask and the fusion states
        self.num_hidden_states_types = 4
        self.text_config = dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            projection_dim=32,
            bos_token_id=97,
            eos_token_id=98,
            pad_token_id=0,
        )
        self.vision_config = dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=32,
        )

    def config_kwargs(self) -> dict:
        return dict(
            text_config=dict(self.text_config),
            vision_config=dict(self.vision_config),
            projection_dim=32,
            extract_layers=[0, 1],
            fusion_hidden_size=self.hidden_size,
            fusion_num_layers=self.num_hidden_layers,
            fusion_num_heads=self.num_attention_heads,
            fusion_intermediate_size=37,
            max_text_length=16,
            image_size=self.image_size,
            trainable_clip="all",
        )

    def get_config(self) -> CLIPVGConfig:
        return CLIPVGConfig(**self.config_kwargs())

    def prepare_config_and_inputs_for_common(self):
        generator = torch.Generator().manual_seed(0)
        batch, length, size = self.batch_size, self.text_length, self.image_size
        input_ids = torch.randint(1, 97, (batch, length), generator=generator)
        attention_mask = torch.ones(batch, length, dtype=torch.long)
        attention_mask[-1, length - 3 :] = 0  # a shorter expression
        pixel_mask = torch.ones(batch, size, size, dtype=torch.long)
        pixel_mask[0, :, 3 * size // 4 :] = 0  # a letterboxed image
        inputs = dict(
            pixel_values=torch.randn(batch, 3, size, size, generator=generator),
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_mask=pixel_mask,
        )
        return self.get_config(), inputs


class CLIPVGModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CLIPVGForGrounding,)
    additional_model_inputs = ["input_ids", "pixel_mask"]
    _is_composite = True
    # the config module carries no copyright year; the check is wanted for this model all the same
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = CLIPVGModelTester(self)
        # the config tester compares its keyword arguments with the JSON, so it gets the scalar fields only
        scalars = {k: v for k, v in self.model_tester.config_kwargs().items() if not k.endswith("_config")}
        scalars.update(projection_dim=512, image_size=224)  # those of the default (ViT-B/16) towers
        self.config_tester = ConfigTester(self, config_class=CLIPVGConfig, has_text_modality=False, **scalars)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:  # target boxes, normalised (cx, cy, w, h)
            inputs["labels"] = torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1], [0.7, 0.2, 0.4, 0.2]])
        return inputs

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_torch_export(self):
        """transformers' export tests are not in its sdist; their core, written here: torch.export keeps the boxes."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = CLIPVGForGrounding(config).eval()
        exported = torch.export.export(model, args=(), kwargs=inputs, strict=False)
        with torch.no_grad():
            expected = model(**inputs).pred_boxes
            torch.testing.assert_close(exported.module()(**inputs).pred_boxes, expected, atol=1e-6, rtol=0)
