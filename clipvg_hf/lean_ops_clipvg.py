"""Lean element-wise operations of CLIP-VG and HiVG: the same values as the plain operations with fewer full-size
temporaries. On the CPU each large temporary is fresh memory the kernel must fault in, which costs as much as the
arithmetic.

This file is uploaded next to the model as Hub remote code, so it imports nothing from the ``clipvg_hf`` package.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import QuickGELUActivation

__all__ = ["LeanQuickGELUActivation", "lean_dropout", "use_lean_activations"]


class _QuickGELUFunction(torch.autograd.Function):
    """``x * sigmoid(1.702 x)`` that saves only its input: one new buffer forward, two backward.

    Autograd's own graph of the expression saves three tensors and allocates five in its backward. The backward is
    written in differentiable operations, so second derivatives (``create_graph=True``) are autograd's own.
    """

    @staticmethod
    def forward(ctx, hidden_states: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(hidden_states)
        return torch.mul(hidden_states, 1.702).sigmoid_().mul_(hidden_states)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (hidden_states,) = ctx.saved_tensors
        gate = torch.mul(hidden_states, 1.702).sigmoid_()
        # d/dx [x s(1.702 x)] = s (1 + 1.702 x (1 - s)); x s - x = -x (1 - s)
        slope = torch.mul(hidden_states, gate).sub_(hidden_states).mul_(-1.702).add_(1.0)
        return slope.mul_(gate).mul_(grad_output)


class LeanQuickGELUActivation(QuickGELUActivation):
    """CLIP's QuickGELU with the same forward values (the same three operations), computed in place.

    Under autograd its backward is hand-written (see ``_QuickGELUFunction``; gradients agree with autograd's to
    float rounding); without gradients it allocates one buffer instead of three. Graph capture (``torch.compile``,
    ``torch.export``) sees the plain expression.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return super().forward(input)
        if torch.is_grad_enabled() and input.requires_grad:
            return _QuickGELUFunction.apply(input)
        return torch.mul(input, 1.702).sigmoid_().mul_(input)


def use_lean_activations(module: nn.Module) -> None:
    """Swap every QuickGELU activation under ``module`` (the CLIP towers' MLPs) for [`LeanQuickGELUActivation`]."""
    for child in module.modules():
        if isinstance(getattr(child, "activation_fn", None), QuickGELUActivation):
            child.activation_fn = LeanQuickGELUActivation()


def lean_dropout(hidden_states: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``; on the CPU the keep-mask is drawn as ``uniform >= p``: the same Bernoulli(1 - p) mask, drawn
    about twice as fast as ``bernoulli_``, and kept as the scaled float mask the product's backward multiplies by.
    """
    if not training or p == 0.0:
        return hidden_states
    if hidden_states.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(hidden_states, p=p, training=True)
    mask = torch.rand_like(hidden_states).ge_(p).mul_(1.0 / (1.0 - p))
    return hidden_states * mask
