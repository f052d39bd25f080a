"""Tiny randomly initialised transformers models, saved to a folder like a Hub checkpoint (no download).

A DETR detector (transformers ResNet backbone), an OWLv2 zero-shot detector, a CLIP zero-shot classifier (the
project's offline CLIP tokenizer) and a BLIP captioner (a BERT word-piece tokenizer over a small vocabulary). Each
loads with ``pipeline(task, model=folder)``, the code path a Hub id takes.
"""

from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    DetrConfig,
    DetrForObjectDetection,
    DetrImageProcessor,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    Owlv2Processor,
    ResNetConfig,
)

from clipvg_hf.processing_clipvg import build_clip_tokenizer

DETR_LABELS = ["person", "dog", "cup", "dining table", "shirt", "horse"]
#: The vision tower of the tiny CLIP and BLIP: one layer, 32 px images, 2 x 2 patches.
TINY_VISION = {
    "hidden_size": 16,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 16,
}
CAPTION_WORDS = ["a", "man", "dog", "on", "the", "riding", "horse", "person", "cup", "table", "##s"]


def build_detr(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], out_features=["stage4"])
    config = DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        num_queries=12,
        id2label=dict(enumerate(DETR_LABELS)),
        label2id={n: i for i, n in enumerate(DETR_LABELS)},
    )
    model = DetrForObjectDetection(config)
    with torch.no_grad():  # spread the random boxes and classes so that several survive the overlap removal
        model.model.query_position_embeddings.weight.normal_(0.0, 3.0)
        for layer in model.model.decoder.layers:  # sharp cross-attention: each query looks at other places
            layer.encoder_attn.q_proj.weight.mul_(30.0)
            layer.encoder_attn.k_proj.weight.mul_(30.0)
        for layer in model.bbox_predictor.layers:
            layer.weight.normal_(0.0, 0.5)
        model.class_labels_classifier.weight.mul_(20.0)
    model.save_pretrained(folder)
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


def build_owlv2(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(model_max_length=16)
    config = Owlv2Config(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    model = Owlv2ForObjectDetection(config)
    with torch.no_grad():  # boxes near the model's grid prior (random weights give degenerate ones)
        model.box_head.dense2.weight.mul_(0.01)
        model.box_head.dense2.bias[2:] += 0.5
    model.save_pretrained(folder)
    Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer
    ).save_pretrained(folder)
    return folder


def build_clip(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        vision_config=TINY_VISION,
        projection_dim=8,
        logit_scale_init_value=8.0,
    )
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_blip(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CAPTION_WORDS]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "encoder_hidden_size": 16,
            "max_position_embeddings": 32,
            "bos_token_id": 2,
            "sep_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config=TINY_VISION,
        projection_dim=8,
    )
    model = BlipForConditionalGeneration(config)
    # a random decoder would stop at once: make it write a few words (a choice of this test model, not of the code)
    model.generation_config.min_new_tokens = 4
    model.generation_config.suppress_tokens = [0, 1, 2, 4]
    model.save_pretrained(folder)
    BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(folder)
    return folder


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` small noise images of a few sizes (PNG and JPEG)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = (64, 96) if i % 2 == 0 else (80, 60)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = folder / f"img_{i:03d}.{'png' if i % 3 else 'jpg'}"
        PIL.Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
