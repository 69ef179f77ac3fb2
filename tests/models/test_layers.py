"""Exact reformulations made for speed give the same results as the plain computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grow_jax.models.qwen2_vl import inputs as qi
from grow_jax.models.qwen2_vl.modeling import Qwen2VL, init_cache

from ._tiny import random_image, tiny


def _batch(c, rng):
    """Two left-padded rows, one with a 56x56 image (4 merged tokens), one text-only."""
    img = [c.vision_start_token_id] + [c.image_token_id] * 4 + [c.vision_end_token_id]
    rows = [
        list(rng.integers(0, 400, 3)) + img + list(rng.integers(0, 400, 4)),
        list(rng.integers(0, 400, 6)),
    ]
    T = max(map(len, rows))
    ids = np.zeros((2, T), np.int32)
    mask = np.zeros((2, T), np.int32)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :], mask[b, T - len(r) :] = r, 1
    pv, grid = qi.images_to_patches([random_image(rng, 56, 56)], c)
    pos, _ = qi.get_rope_index(ids, grid, mask, c)
    return ids, mask, pos, pv, grid


def test_logits_at_equals_gathered_full_logits():
    """`logits_at` computes the last layer at those rows only; the logits must equal the
    full forward's logits gathered at the same rows, without and with a KV cache."""
    c = tiny()  # 2 layers, GQA 2
    model = Qwen2VL(c, rngs=nnx.Rngs(1))
    ids, mask, pos, pv, grid = _batch(c, np.random.default_rng(0))
    emb = jax.jit(model.encode_images)(
        pv, qi.vision_position_ids(grid, 2), qi.vision_segment_ids(grid)
    )
    B, T = ids.shape
    rows = np.array([[T - 1, T - 3, 0], [T - 2, T - 1, T - 1]], np.int32)  # any order, repeats
    fwd = jax.jit(model.forward)
    full, _ = fwd(ids, pos, mask, emb)
    want = np.take_along_axis(np.asarray(full), rows[..., None], axis=1)
    got, _ = fwd(ids, pos, mask, emb, logits_at=rows)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, rtol=0)

    # with a cache: prefill the first T-2 tokens, then the last 2 at cache_pos T-2
    L = T + 3
    cmask = np.zeros((B, L), np.int32)
    cmask[:, :T] = mask
    cache = init_cache(c, B, L)
    _, cache = fwd(ids[:, : T - 2], pos[..., : T - 2], cmask, emb, cache, jnp.int32(0))
    step_rows = np.array([[1], [0]], np.int32)  # positions T-1 and T-2 of the new tokens
    got, new_cache = fwd(
        ids[:, T - 2 :], pos[..., T - 2 :], cmask, None, cache, jnp.int32(T - 2), step_rows
    )
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(full)[[0, 1], [T - 1, T - 2]][:, None], atol=2e-6, rtol=0
    )
    _, ref_cache = fwd(ids[:, T - 2 :], pos[..., T - 2 :], cmask, None, cache, jnp.int32(T - 2))
    for a, b in zip(jax.tree.leaves(new_cache), jax.tree.leaves(ref_cache)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
