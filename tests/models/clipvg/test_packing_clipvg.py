"""The packed fusion (padding left out of the sequences) gives the masked fusion's boxes and gradients."""

import functools

import pytest
import torch

from clipvg_hf import CLIPVGForGrounding
from clipvg_hf.modeling_clipvg import patch_padding_mask
from clipvg_hf.packing_clipvg import PackedSequences, packed_attention

from conftest import make_tiny_config

ATOL = 1e-5
SIZE = 64
# letterboxes as (top, left, height, width) of the real image on the 64 px canvas
SHAPES = {
    "square": [(0, 0, 64, 64)] * 3,
    "landscape-centred": [(8, 0, 48, 64), (14, 0, 36, 64), (0, 0, 64, 64)],
    "portrait-centred": [(0, 11, 64, 42), (0, 20, 64, 24), (0, 3, 64, 58)],
    "translated-mixed": [(0, 0, 40, 64), (0, 30, 64, 34), (5, 7, 50, 50)],
}
# real token counts per expression (expressions cycle over the images)
TEXT_LENGTHS = {
    "equal": [6] * 7,
    "varied": [3, 9, 5, 14, 2, 7, 11],
    "one-full-context": [16, 4, 1, 8, 3, 16, 5],
}


def _model(**overrides) -> CLIPVGForGrounding:
    torch.manual_seed(0)
    config = make_tiny_config(fusion_dropout=0.0, fusion_num_layers=3, **overrides)
    config.vision_config.patch_size = 8  # an 8 x 8 patch grid: letterboxes cover whole and partial patches
    return CLIPVGForGrounding(config).eval()


@pytest.fixture(scope="module")
def model() -> CLIPVGForGrounding:
    return _model()


def _batch(model, shapes, lengths, pad_to=None):
    generator = torch.Generator().manual_seed(3)
    images = torch.zeros(len(shapes), 3, SIZE, SIZE)
    masks = torch.zeros(len(shapes), SIZE, SIZE, dtype=torch.long)
    for i, (top, left, height, width) in enumerate(shapes):
        images[i, :, top : top + height, left : left + width] = torch.randn(3, height, width, generator=generator)
        masks[i, top : top + height, left : left + width] = 1
    image_index = torch.arange(len(lengths)) % len(shapes)
    width = pad_to or max(lengths)
    ids = torch.full((len(lengths), width), 98, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(1, 97, (length,), generator=generator)
        attention[row, :length] = 1
    return dict(pixel_values=images, pixel_mask=masks, input_ids=ids, attention_mask=attention), image_index


def _per_expression(batch, image_index):
    return dict(batch, pixel_values=batch["pixel_values"][image_index], pixel_mask=batch["pixel_mask"][image_index])


@pytest.mark.parametrize("text", list(TEXT_LENGTHS))
@pytest.mark.parametrize("shapes", list(SHAPES))
def test_packed_boxes_equal_masked_boxes(model, shapes, text):
    batch, image_index = _batch(model, SHAPES[shapes], TEXT_LENGTHS[text], pad_to=16 if text == "equal" else None)
    rows = _per_expression(batch, image_index)
    with torch.no_grad():
        masked = model(**rows, output_hidden_states=True).pred_boxes  # the padded, masked layout
        packed = model(**rows).pred_boxes
        packed_grouped = model(**batch, image_index=image_index).pred_boxes  # each image's tokens once
    torch.testing.assert_close(packed, masked, atol=ATOL, rtol=0)
    torch.testing.assert_close(packed_grouped, masked, atol=ATOL, rtol=0)


def test_packed_fusion_computes_real_tokens_only(model):
    batch, image_index = _batch(model, SHAPES["translated-mixed"], TEXT_LENGTHS["varied"], pad_to=16)
    seen = []
    handle = model.fusion.layers[1].fc1.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        model(**batch, image_index=image_index)
    handle.remove()
    real_patches = (~patch_padding_mask(batch["pixel_mask"], model.config.num_patches_per_side)).sum(1)
    assert real_patches.min() < model.config.num_patches_per_side**2  # some patches are padding
    expected = sum(1 + length + 1 + int(real_patches[i]) for length, i in zip(TEXT_LENGTHS["varied"], image_index))
    assert seen == [expected]


def test_packed_gradients_equal_masked_gradients():
    model = _model().train()  # dropout is 0: both layouts compute the same function
    batch, image_index = _batch(model, SHAPES["translated-mixed"], TEXT_LENGTHS["varied"])
    rows = _per_expression(batch, image_index)
    labels = torch.tensor([[0.5, 0.5, 0.3, 0.4]]).repeat(len(image_index), 1)

    def gradients(**kwargs):
        model.zero_grad(set_to_none=True)
        out = model(**rows, labels=labels, **kwargs)
        out.loss.backward()
        return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    masked_loss, masked = gradients(output_hidden_states=True)
    packed_loss, packed = gradients()
    torch.testing.assert_close(packed_loss, masked_loss, atol=ATOL, rtol=0)
    assert packed.keys() == masked.keys()
    assert "clip.vision_model.embeddings.position_embedding.weight" in packed
    scale = max(g.abs().max() for g in masked.values())
    for name, grad in masked.items():
        torch.testing.assert_close(packed[name], grad, atol=1e-5 * scale, rtol=0, msg=name)


def test_batched_packed_attention_equals_per_sequence():
    """The padded-batch strategy (accelerators) against one call per sequence (the CPU), with gradients."""
    generator = torch.Generator().manual_seed(0)
    layout = PackedSequences.from_lengths(torch.tensor([5, 1, 9, 3]))
    inputs = [torch.randn(18, 2, 4, generator=generator, requires_grad=True) for _ in range(3)]
    for one_query in (False, True):
        results = []
        for batched in (False, True):
            query, key, value = inputs
            query = query[layout.first_rows] if one_query else query
            out = packed_attention(query, key, value, layout, scaling=0.5, one_query=one_query, batched=batched)
            grads = torch.autograd.grad((out * torch.arange(out.numel()).view_as(out)).sum(), inputs)
            results.append((out, grads))
        (loop, loop_grads), (batched, batched_grads) = results
        assert loop.shape == (4 if one_query else 18, 8)
        torch.testing.assert_close(batched, loop, atol=1e-6, rtol=0)
        for a, b in zip(batched_grads, loop_grads):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("batched", [False, True], ids=["per-sequence", "padded-batch"])
def test_packed_backward_is_bit_identical_on_two_threads(batched, monkeypatch):
    """The [REG] row is gathered once per sequence: its gradient sums as many contributions. With more than 32k
    gathered elements on more than one thread, the backward of ``tensor[index]`` adds them in an unordered,
    timing-dependent way; the packed fusion must sum them in a fixed order so that training is reproducible."""
    import clipvg_hf.packing_clipvg as packing

    if batched:
        monkeypatch.setattr(packing, "packed_attention", functools.partial(packed_attention, batched=True))
    model = _model(fusion_hidden_size=64, fusion_num_heads=4).train()
    batch, image_index = _batch(model, SHAPES["translated-mixed"] * 8, TEXT_LENGTHS["varied"] * 20)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients = []
        for _ in range(8):
            model.zero_grad(set_to_none=True)
            boxes = model(**batch, image_index=image_index).pred_boxes
            boxes.square().sum().backward()
            gradients.append(
                torch.cat([model.reg_token.grad.flatten(), model.fusion_position_embeddings.weight.grad[0]])
            )
    finally:
        torch.set_num_threads(threads)
    for gradient in gradients[1:]:
        assert torch.equal(gradient, gradients[0])
