"""Sequence packing: several samples per token row instead of one padded row each.

GROW's state-action samples are short and of uneven length; padding each to the batch's
bucket spends decoder FLOPs on pad tokens. A packed micro-batch lays the samples out
back to back in R rows of L tokens, each token tagged with its sample's segment id
(1, 2, ... within a row; 0 = padding). The model then attends block-diagonally and
causally within each segment (`Qwen2VL.hidden_states(segment_ids=...)`), every sample
keeps its own M-RoPE positions (they restart per sample) and its images (in row-major
order, as the image tokens appear), so each sample's hidden states are those of the
padded layout.

The loss side is unchanged: the per-sample action-token arrays (targets, loss_mask,
old_logprobs, advantages, optional fields) are exactly `collate`'s [B, K], and
`target_slot` [B, K] picks each action token's hidden state out of the packed rows'
[R, Kr] logits positions (`target_pos`). Token and sample weighting, the value head's
first-target read and partial-update scaling therefore see the same arrays as padding.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from grow_jax.data.samples import (BatchShape, ImageSlots, Sample, pack_images, round_up,
                                   target_arrays)

MAX_FACTOR = 8  # automatic row lengths: up to this many padded buckets (see `fit`)


@dataclasses.dataclass(frozen=True)
class PackedShape:
    """Static shapes of one packed micro-batch: the compile key of the train step."""

    batch: int  # sample slots B (as BatchShape.batch: the loss's [B, K] arrays)
    targets: int  # action-token slots per sample K
    rows: int  # packed rows R
    row_len: int  # tokens per row L
    row_targets: int  # logits positions per row Kr
    images: ImageSlots


def check_pack_len(shape: BatchShape, pack_len: int) -> None:
    """`rl.pack_len` must be 0 (automatic) or hold the longest sample's bucket."""
    if pack_len < 0:
        raise ValueError(f"rl.pack_len must be >= 0 (0: automatic), got {pack_len}")
    if pack_len and pack_len < shape.seq:
        raise ValueError(f"rl.pack_len={pack_len} is shorter than the longest sample's bucket "
                         f"({shape.seq} tokens); use 0 (automatic) or >= {shape.seq}")


def attention_share(text_config) -> float:
    """Attention FLOPs per token and per key, relative to a decoder layer's matmul FLOPs
    per token: a row of L tokens costs L * (1 + L * share) token-equivalents, since XLA
    computes every (query, key) score of a row and masks it."""
    t = text_config
    d, q, kv = t.hidden_size, t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    return 4 * q / (2 * (2 * d * q + 2 * d * kv + 3 * d * t.intermediate_size))


def assign_rows(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """First-fit decreasing: sample indices per row (each row's total <= row_len)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):  # stable: ties by index
        n = lengths[i]
        if n > row_len:
            raise ValueError(f"a sample of {n} tokens does not fit packed rows of {row_len}")
        r = next((r for r, left in enumerate(room) if left >= n), None)
        if r is None:
            rows.append([])
            room.append(row_len)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= n
    return rows


def fit(batches: Sequence[Sequence[Sample]], shape: BatchShape, text_config, pack_len: int = 0,
        row_multiple: int = 1, seq_multiple: int = 16) -> PackedShape:
    """The cheapest bucketed packed shape that holds every micro-batch in `batches` (sample
    slots, action slots and image layout are `shape`'s). Row length: `pack_len`, or (0)
    the multiple of `seq_multiple` from the padded bucket up to MAX_FACTOR buckets whose
    rows x L x (1 + L * attention share) is smallest, so attention over long rows does
    not eat what packing saves."""
    check_pack_len(shape, pack_len)
    lengths = [[s.length for s in samples] for samples in batches]
    share = attention_share(text_config)
    best = None
    lens = [pack_len] if pack_len else range(shape.seq, MAX_FACTOR * shape.seq + 1, seq_multiple)
    for L in lens:
        layouts = [assign_rows(n, L) for n in lengths]
        rows = round_up(max([1] + [len(x) for x in layouts]), row_multiple)
        cost = rows * L * (1 + L * share)
        if best is None or cost < best[0]:
            best = cost, L, rows, layouts
    _, L, rows, layouts = best
    row_targets = max([1] + [sum(len(samples[i].target_pos) for i in r)
                             for samples, layout in zip(batches, layouts) for r in layout])
    return PackedShape(shape.batch, shape.targets, rows, L, round_up(row_targets, 8),
                       shape.images)


def collate_packed(samples: Sequence[Sample], shape: PackedShape, model_config,
                   pad_id: int = 0, fields: tuple[str, ...] | None = None) -> dict:
    """Packs samples into fixed-shape arrays.

    Returns input_ids/attention_mask/segment_ids [R, L], position_ids [3, R, L], image
    arrays in the layout of `shape.images`, target_pos [R, Kr] (the rows' logits
    positions), target_slot [B, K] (each action token's index into the flattened
    [R * Kr] logits) and `collate`'s per-sample targets/loss_mask/old_logprobs/advantages
    (+ `fields`) [B, K].
    """
    if fields is None:
        fields = samples[0].optional_fields() if samples else ()
    b, k, n_rows, L, kr = (shape.batch, shape.targets, shape.rows, shape.row_len,
                           shape.row_targets)
    if len(samples) > b:
        raise ValueError(f"{len(samples)} samples do not fit a batch of {b}")
    for s in samples:
        if len(s.target_pos) > k:
            raise ValueError(f"a sample of {len(s.target_pos)} targets exceeds {shape}")
    layout = assign_rows([s.length for s in samples], L)
    if len(layout) > n_rows:
        raise ValueError(f"{len(samples)} samples need {len(layout)} packed rows, {shape} has "
                         f"{n_rows}")
    ids = np.full((n_rows, L), pad_id, np.int32)
    seg = np.zeros((n_rows, L), np.int32)
    pos = np.zeros((3, n_rows, L), np.int32)
    tpos = np.zeros((n_rows, kr), np.int32)
    slot = np.zeros((b, k), np.int32)
    order = []  # samples in row-major token order: the order their images are embedded in
    for r, members in enumerate(layout):
        off = used = 0
        for j, i in enumerate(members):
            s = samples[i]
            n, kk = s.length, len(s.target_pos)
            if used + kk > kr:
                raise ValueError(f"packed row {r} needs more than {kr} logits positions")
            ids[r, off:off + n] = s.input_ids
            seg[r, off:off + n] = j + 1
            pos[:, r, off:off + n] = s.position_ids
            tpos[r, used:used + kk] = s.target_pos + off
            slot[i, :kk] = r * kr + used + np.arange(kk)
            off, used = off + n, used + kk
            order.append(s)
    grid = (np.concatenate([s.image_grid_thw for s in order]) if order
            else np.zeros((0, 3), np.int32))
    pixel_values, vpos, vseg = pack_images([s.pixel_values for s in order], grid,
                                           shape.images, model_config)
    out = dict(input_ids=ids, attention_mask=(seg > 0).astype(np.int32), segment_ids=seg,
               position_ids=pos, pixel_values=pixel_values, vision_pos_ids=vpos,
               vision_segment_ids=vseg, target_pos=tpos, target_slot=slot)
    out.update(target_arrays(samples, b, k, fields))
    return out
