"""The packed fusion path of CLIP-VG: sequences of real tokens only, packed along the rows of one tensor.

Padded text tokens and letterbox-padded patches are never attended to, so the packed path leaves them out of the
fusion instead of masking them (same boxes as the padded layout, within float rounding). [`PackedSequences`] says
where each sequence lies, [`expression_layout`] lays out one sequence per expression from the distinct rows,
[`packed_attention`] attends within each sequence, and the two mixins give the fusion layer and encoder their
``forward_packed``.

This file is uploaded next to the model as Hub remote code, so it imports only its sibling modules.
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .lean_ops_clipvg import lean_dropout

__all__ = [
    "PackedFusionEncoderMixin",
    "PackedFusionLayerMixin",
    "PackedSequences",
    "expression_layout",
    "packed_attention",
]


@dataclass
class PackedSequences:
    """Where each of several sequences lies when they are packed along the rows of one (T, ...) tensor.

    ``lengths`` rows each, starting at ``first_rows``; ``sequence`` and ``slot`` give each row's sequence and
    position in it. ``pad_index`` and ``unpad_index`` move rows to a padded (S, longest, ...) layout and back.
    """

    lengths: list[int]
    first_rows: torch.Tensor
    sequence: torch.Tensor
    slot: torch.Tensor

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor) -> "PackedSequences":
        length_list = lengths.tolist()
        first_rows = lengths.cumsum(0) - lengths
        sequence = torch.repeat_interleave(
            torch.arange(len(length_list), device=lengths.device), lengths, output_size=sum(length_list)
        )
        return cls(
            length_list,
            first_rows,
            sequence,
            torch.arange(len(sequence), device=lengths.device) - first_rows[sequence],
        )

    @property
    def longest(self) -> int:
        return max(self.lengths)

    @functools.cached_property
    def pad_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, longest) row of each padded position, and which positions are real; padding points at row 0."""
        device = self.first_rows.device
        positions = torch.arange(self.longest, device=device)
        real = positions < torch.tensor(self.lengths, device=device)[:, None]
        return torch.where(real, self.first_rows[:, None] + positions, 0), real

    @functools.cached_property
    def unpad_index(self) -> torch.Tensor:
        """(T,) position of each packed row in the flattened padded layout."""
        return self.sequence * self.longest + self.slot


def _sequence_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
    """Attention of one sequence of real tokens, (heads, L, head_dim) inputs: one fused SDPA call."""
    return F.scaled_dot_product_attention(query[None], key[None], value[None], scale=scaling)[0]


def _sequence_attention_with_dropout(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, p: float
) -> torch.Tensor:
    """[`_sequence_attention`] with dropout on the attention weights, written out: PyTorch's own unfused path draws
    its mask with ``bernoulli_``, which [`lean_dropout`] draws in about half the time."""
    weights = torch.softmax(torch.bmm(query, key.transpose(1, 2)).mul_(scaling), dim=-1)
    return torch.bmm(lean_dropout(weights, p, training=True), value)


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: PackedSequences,
    scaling: float,
    dropout: float = 0.0,
    one_query: bool = False,
    batched: bool | None = None,
) -> torch.Tensor:
    """Attention within each of several sequences packed along the rows: (T, heads, head_dim) inputs.

    Sequence ``s`` has the ``layout.lengths[s]`` consecutive key/value rows of ``layout``, every one a real token, so
    no mask is needed, and as many query rows, or one (``one_query``: ``query`` is then (S, heads, head_dim)).
    On the CPU each sequence is attended on its own: one fused SDPA call without dropout; under attention dropout
    (which PyTorch computes unfused) softmax attention written out with [`lean_dropout`] on its small probability
    tensors, instead of one padded batch whose large temporaries cost more than the padding saves. ``batched`` (the
    default on accelerators) gathers the sequences into a padded batch and runs one masked call, far fewer small
    kernels for the same result. The padded positions hold copies of real rows; the mask gives them zero weight, so
    they get zero gradient.
    """
    if batched is None:
        batched = query.device.type != "cpu"
    heads, head_dim = query.shape[1:]
    if not batched:
        queries = query.split(1) if one_query else query.split(layout.lengths)
        attend = functools.partial(_sequence_attention_with_dropout, p=dropout) if dropout > 0 else _sequence_attention
        outputs = [
            attend(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), scaling).transpose(0, 1)
            for q, k, v in zip(queries, key.split(layout.lengths), value.split(layout.lengths))
        ]
        return torch.cat(outputs).reshape(-1, heads * head_dim)
    index, real = layout.pad_index

    def padded(rows: torch.Tensor) -> torch.Tensor:  # ordered-backward gather, as in forward_packed
        return rows.index_select(0, index.flatten()).view(*index.shape, heads, head_dim)

    padded_query = query[:, None] if one_query else padded(query)
    output = F.scaled_dot_product_attention(
        padded_query.transpose(1, 2),
        padded(key).transpose(1, 2),
        padded(value).transpose(1, 2),
        attn_mask=real[:, None, None, :],
        dropout_p=dropout,
        scale=scaling,
    ).transpose(1, 2)
    if one_query:
        return output.reshape(-1, heads * head_dim)
    return output.reshape(-1, heads * head_dim)[layout.unpad_index]


def expression_layout(
    text_counts: torch.Tensor, visual_counts: torch.Tensor, image_index: torch.Tensor
) -> tuple[PackedSequences, torch.Tensor]:
    """One packed sequence per expression, gathered from the distinct rows: the layout and the gather index (T,).

    The distinct rows are [REG] (row 0), then every expression's real text tokens (``text_counts`` (E,) of them per
    expression), then every image's visual tokens (``visual_counts`` (I,) per image). Sequence ``e`` is [REG], its
    text rows, then the visual rows of image ``image_index[e]``.
    """
    text_start = 1 + text_counts.cumsum(0) - text_counts
    visual_start = (1 + text_counts.sum() + visual_counts.cumsum(0) - visual_counts)[image_index]
    layout = PackedSequences.from_lengths(1 + text_counts + visual_counts[image_index])
    sequence, slot = layout.sequence, layout.slot
    gather = torch.where(
        slot <= text_counts[sequence],
        text_start[sequence] + slot - 1,
        visual_start[sequence] + slot - 1 - text_counts[sequence],
    )
    return layout, gather.masked_fill(slot == 0, 0)


class PackedFusionLayerMixin:
    """``forward_packed`` of the fusion layer; the layer provides ``self_attn`` (with ``project``, ``out_proj``,
    ``num_heads``, ``head_dim``, ``scaling``, ``dropout``) and ``add_norm_feed_forward``, which the padded
    ``forward`` shares."""

    def forward_packed(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        layout: PackedSequences,
        last: bool = False,
        projected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The layer on sequences packed along the rows of ``hidden_states`` (T, D), every row a real token.

        The sequences lie as ``layout`` says; ``last`` updates only the first row of each, as ``num_queries=1``
        does in ``forward``. ``projected`` gives the query, key and value rows (T, D) when the caller computed them.
        """
        attention = self.self_attn
        query_rows = layout.first_rows if last else None
        if projected is None:
            query, key, value = attention.project(hidden_states, position_embeddings, query_rows)
        else:
            query, key, value = projected
            query = query if query_rows is None else query[query_rows]
        shape = (-1, attention.num_heads, attention.head_dim)
        attended = packed_attention(
            query.view(shape),
            key.view(shape),
            value.view(shape),
            layout,
            attention.scaling,
            attention.dropout if self.training else 0.0,
            one_query=last,
        )
        if query_rows is not None:
            hidden_states = hidden_states[query_rows]
        return self.add_norm_feed_forward(hidden_states, attention.out_proj(attended))


class PackedFusionEncoderMixin:
    """``forward_packed`` of the fusion encoder, whose ``layers`` are [`PackedFusionLayerMixin`] layers."""

    def forward_packed(
        self,
        unique_states: torch.Tensor,
        unique_positions: torch.Tensor,
        gather: torch.Tensor,
        layout: PackedSequences,
    ) -> torch.Tensor:
        """Run the layers on packed sequences of real tokens; returns the final state of each sequence's first row.

        ``unique_states`` and ``unique_positions`` (U, D) hold each distinct input row once (the [REG] token, every
        text token, each image's visual tokens) and ``gather`` (T,) lays the sequences out from them as ``layout``
        says. The first layer's projections depend on a row's input alone, so they are computed once per distinct
        row (an image's visual tokens once for all its expressions); the last layer updates only the first row of
        each sequence (see ``first_token_only`` in the padded ``forward``).
        """
        # index_select, not ``tensor[gather]``: gather repeats row 0 ([REG]) once per sequence, and the backward of
        # advanced indexing (index_put_ with accumulate) sums such repeats with unordered atomic adds on several CPU
        # threads, while index_select's backward (index_add_) sums them in a fixed order: bit-identical training.
        hidden_states, positions = unique_states.index_select(0, gather), unique_positions.index_select(0, gather)
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            projected = None
            if index == 0:
                projected = tuple(
                    rows.index_select(0, gather) for rows in layer.self_attn.project(unique_states, unique_positions)
                )
            if getattr(layer, "gradient_checkpointing", False) and self.training and torch.is_grad_enabled():
                hidden_states = torch.utils.checkpoint.checkpoint(
                    layer.forward_packed, hidden_states, positions, layout, last, projected, use_reentrant=False
                )
            else:
                hidden_states = layer.forward_packed(hidden_states, positions, layout, last, projected)
        return hidden_states
