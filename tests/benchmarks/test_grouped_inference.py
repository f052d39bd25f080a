"""The grouped inference path of the benchmarks (benchmarks/grouped_inference.py) and the forward pass with
``image_index`` give the plain forward pass's boxes within 1e-5."""

import pytest
import torch

from benchmarks.grouped_inference import predict_boxes_grouped, trim_text_padding
from clipvg_hf import CLIPVGForGrounding
from clipvg_hf.boxes_clipvg import grounding_iou

from conftest import make_tiny_config

ATOL = 1e-5


def _tiny_model(attn: str = "sdpa", **overrides) -> CLIPVGForGrounding:
    torch.manual_seed(0)
    model = CLIPVGForGrounding(make_tiny_config(**overrides)).eval()
    model.set_attn_implementation(attn)
    return model


def _grouped_batch(model: CLIPVGForGrounding, counts=(3, 1, 4), pad_to: int | None = None, pad_id: int = 0):
    """Distinct images with letterbox padding, several expressions of different lengths per image."""
    size, vocab = model.config.image_size, model.config.text_config.vocab_size
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(len(counts), 3, size, size, generator=generator)
    masks = torch.ones(len(counts), size, size, dtype=torch.long)
    masks[0, :, size - 20 :] = 0  # a wide image: padding on the right
    masks[-1, :13, :] = 0  # a tall one: padding on top
    images[masks[:, None].expand_as(images) == 0] = 0
    image_index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    lengths = torch.randint(3, model.config.max_text_length - 2, (len(image_index),), generator=generator)
    width = pad_to or int(lengths.max())
    ids = torch.full((len(image_index), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, length in enumerate(lengths.tolist()):
        ids[row, :length] = torch.randint(1, vocab - 2, (length,), generator=generator)
        attention[row, :length] = 1
    return images, masks, image_index, ids, attention


def _plain(model, images, masks, image_index, ids, attention) -> torch.Tensor:
    with torch.no_grad():
        out = model(
            pixel_values=images[image_index], pixel_mask=masks[image_index], input_ids=ids, attention_mask=attention
        )
    return out.pred_boxes[:, 0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pad_to", [None, 16], ids=["longest", "full-context"])
def test_grouped_equals_plain_forward(attn, pad_to):
    model = _tiny_model(attn)
    batch = _grouped_batch(model, pad_to=pad_to)
    fast = predict_boxes_grouped(model, *batch)
    torch.testing.assert_close(fast, _plain(model, *batch), atol=ATOL, rtol=0)


def test_forward_with_image_index_equals_repeated_images():
    model = _tiny_model()
    images, masks, image_index, ids, attention = _grouped_batch(model)
    labels = torch.rand(len(ids), 4) * 0.5 + 0.2
    with torch.no_grad():
        grouped = model(
            pixel_values=images,
            pixel_mask=masks,
            image_index=image_index,
            input_ids=ids,
            attention_mask=attention,
            labels=labels,
            output_hidden_states=True,
        )
        plain = model(
            pixel_values=images[image_index],
            pixel_mask=masks[image_index],
            input_ids=ids,
            attention_mask=attention,
            labels=labels,
            output_hidden_states=True,
        )
    torch.testing.assert_close(grouped.pred_boxes, plain.pred_boxes, atol=ATOL, rtol=0)
    torch.testing.assert_close(grouped.loss, plain.loss, atol=ATOL, rtol=0)
    assert torch.equal(grouped.patch_attention_mask, plain.patch_attention_mask)
    torch.testing.assert_close(grouped.visual_features, plain.visual_features, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="image_index values"):
        model(pixel_values=images, input_ids=ids, image_index=image_index + len(images))
    with pytest.raises(ValueError, match="pixel_mask"):
        model(pixel_values=images, pixel_mask=masks[image_index], input_ids=ids, image_index=image_index)


def test_grouped_chunks_shuffled_order_and_pad_id():
    model = _tiny_model()
    images, masks, image_index, ids, attention = _grouped_batch(model, counts=(2, 5, 3), pad_to=16)
    order = torch.randperm(len(image_index), generator=torch.Generator().manual_seed(3))
    ids_eot = ids.clone()
    ids_eot[attention == 0] = model.config.text_config.vocab_size - 1  # another pad id changes nothing
    batch = (images, masks, image_index[order], ids_eot[order], attention[order])
    fast = predict_boxes_grouped(model, *batch, expression_batch_size=3)
    torch.testing.assert_close(
        fast, _plain(model, images, masks, image_index[order], ids[order], attention[order]), atol=ATOL, rtol=0
    )


def test_grouped_without_masks_and_unused_images():
    model = _tiny_model()
    images, _, _, ids, _ = _grouped_batch(model)
    image_index = torch.tensor([2, 2, 0, 2, 0, 0, 2, 0])  # image 1 has no expression
    fast = predict_boxes_grouped(model, images, None, image_index, ids, None)
    ones = torch.ones(len(images), *images.shape[2:], dtype=torch.long)
    torch.testing.assert_close(
        fast, _plain(model, images, ones, image_index, ids, torch.ones_like(ids)), atol=ATOL, rtol=0
    )


def test_trim_text_padding():
    ids = torch.tensor([[5, 6, 0, 0, 0], [5, 6, 7, 0, 0]])
    mask = (ids > 0).long()
    trimmed_ids, trimmed_mask = trim_text_padding(ids, mask)
    assert trimmed_ids.tolist() == [[5, 6, 0], [5, 6, 7]] and trimmed_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_grouped_input_errors():
    model = _tiny_model()
    images, masks, image_index, ids, attention = _grouped_batch(model)
    with pytest.raises(ValueError, match="image_index values must lie"):
        predict_boxes_grouped(model, images, masks, image_index + 5, ids, attention)
    with pytest.raises(ValueError, match="one image per expression"):
        predict_boxes_grouped(model, images, masks, image_index[:-1], ids, attention)
    with pytest.raises(ValueError, match="pixel_mask"):
        predict_boxes_grouped(model, images, masks[:1], image_index, ids, attention)


def test_first_token_only_fusion_matches_full_last_layer_with_gradients():
    """The [REG]-only last fusion layer gives the same box and the same gradients as the full layer (training)."""
    model = _tiny_model(fusion_dropout=0.0).train()
    images, masks, image_index, ids, attention = _grouped_batch(model)
    labels = torch.tensor([[0.5, 0.5, 0.3, 0.4]]).expand(len(ids), 4)

    def grads(first_token_only: bool):
        model.zero_grad(set_to_none=True)
        fusion_forward = model.fusion.forward

        def forced(*args, **kwargs):
            kwargs["first_token_only"] = first_token_only
            return fusion_forward(*args, **kwargs)

        model.fusion.forward = forced
        try:
            out = model(
                pixel_values=images[image_index],
                pixel_mask=masks[image_index],
                input_ids=ids,
                attention_mask=attention,
                labels=labels,
            )
            out.loss.backward()
        finally:
            del model.fusion.forward
        return out.pred_boxes.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    boxes_fast, grads_fast = grads(True)
    boxes_full, grads_full = grads(False)
    torch.testing.assert_close(boxes_fast, boxes_full, atol=ATOL, rtol=0)
    assert grads_fast.keys() == grads_full.keys()
    assert "clip.vision_model.embeddings.position_embedding.weight" in grads_fast
    for name, grad in grads_fast.items():
        torch.testing.assert_close(grad, grads_full[name], atol=ATOL, rtol=1e-4, msg=name)


def test_grouped_reproduces_official_predictions_on_fixture(converted_model, expected_tensors):
    """On the parity fixture, per-image encoding reproduces the official boxes and IoUs."""
    split = "unc/val"
    pixel_values = expected_tensors[f"{split}/pixel_values"].float()
    pixel_mask = 1 - expected_tensors[f"{split}/pad_mask"].long()
    ids = expected_tensors[f"{split}/input_ids"].long()
    attention = expected_tensors[f"{split}/text_mask"].long()
    rows = torch.cat([pixel_values.flatten(1), pixel_mask.flatten(1).float()], dim=1)
    _, image_index = torch.unique(rows, dim=0, return_inverse=True)  # which fixture rows show the same image
    first = torch.stack([torch.nonzero(image_index == i)[0, 0] for i in range(int(image_index.max()) + 1)])
    images, masks = pixel_values[first], pixel_mask[first]
    assert len(images) < len(image_index)  # the fixture has several expressions per image
    boxes = predict_boxes_grouped(converted_model, images, masks, image_index, ids, attention)
    torch.testing.assert_close(boxes, expected_tensors[f"{split}/pred_boxes"], atol=ATOL, rtol=0)
    iou = grounding_iou(boxes, expected_tensors[f"{split}/target_boxes"])
    torch.testing.assert_close(iou, expected_tensors[f"{split}/iou"], atol=ATOL, rtol=0)
