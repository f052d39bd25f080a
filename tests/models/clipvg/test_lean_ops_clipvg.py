"""The lean QuickGELU and CPU dropout compute what the plain operations compute."""

import math

import pytest
import torch
from transformers.activations import QuickGELUActivation

from clipvg_hf import CLIPVGForGrounding
from clipvg_hf.lean_ops_clipvg import LeanQuickGELUActivation, lean_dropout

from conftest import make_tiny_config


def _input(*shape: int, requires_grad: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (4 * torch.randn(*shape, generator=generator)).requires_grad_(requires_grad)


def test_lean_quick_gelu_forward_is_bitwise_quick_gelu():
    x = _input(6, 50, 40)
    with torch.no_grad():
        assert torch.equal(LeanQuickGELUActivation()(x), QuickGELUActivation()(x))
    x.requires_grad_(True)
    assert torch.equal(LeanQuickGELUActivation()(x), QuickGELUActivation()(x))
    assert not torch.equal(x, LeanQuickGELUActivation()(x))  # the input is never overwritten


def test_lean_quick_gelu_gradient_matches_autograd():
    plain, lean = _input(6, 50, 40, requires_grad=True), _input(6, 50, 40, requires_grad=True)
    weights = _input(6, 50, 40) + 1
    (QuickGELUActivation()(plain) * weights).sum().backward()
    (LeanQuickGELUActivation()(lean) * weights).sum().backward()
    torch.testing.assert_close(lean.grad, plain.grad, atol=1e-5, rtol=1e-5)
    assert lean.grad.abs().max() > 1  # a real gradient was compared


def test_lean_quick_gelu_has_first_and_second_derivatives():
    x = _input(4, 5).double().requires_grad_(True)
    activation = LeanQuickGELUActivation()
    assert torch.autograd.gradcheck(activation, (x,))
    assert torch.autograd.gradgradcheck(activation, (x,))


def test_model_towers_use_the_lean_activation_and_keep_their_weights():
    model = CLIPVGForGrounding(make_tiny_config())
    mlps = [layer.mlp for tower in (model.clip.vision_model, model.clip.text_model) for layer in tower.encoder.layers]
    assert mlps and all(isinstance(mlp.activation_fn, LeanQuickGELUActivation) for mlp in mlps)
    assert not any("activation" in name for name in model.state_dict())


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_lean_dropout_draws_bernoulli_keep_masks_and_scales_the_kept_values(p):
    x = _input(400, 500, requires_grad=True)
    torch.manual_seed(1)
    y = lean_dropout(x, p, training=True)
    dropped = y == 0
    share = dropped.float().mean().item()
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / x.numel())
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p), rtol=1e-6, atol=0)
    y.sum().backward()  # the gradient is the scaled keep-mask
    torch.testing.assert_close(x.grad, (~dropped).float() / (1 - p), rtol=1e-6, atol=0)
    torch.manual_seed(1)
    assert torch.equal(lean_dropout(x, p, training=True), y)  # seeded like torch's own dropout


def test_lean_dropout_is_the_identity_when_off():
    x = _input(3, 4)
    assert lean_dropout(x, 0.1, training=False) is x
    assert lean_dropout(x, 0.0, training=True) is x
