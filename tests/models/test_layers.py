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


def test_bf16_linear_rounds_once_after_a_float32_product():
    """A bf16 Linear on CPU computes its product and bias in float32 and rounds once (the
    fast XLA:CPU dot): equal to the float32 computation on the same bf16 inputs, rounded
    to bf16; float32 layers are untouched (the plain nnx.Linear product)."""
    from grow_jax.models.qwen2_vl.layers import linear

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 64)), jnp.bfloat16)
    layer = linear(64, 96, ("embed", "mlp"), bias=True, dtype=jnp.bfloat16,
                   param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.asarray(rng.normal(size=96), jnp.float32)
    y = jax.jit(lambda x: layer(x))(x)
    assert y.dtype == jnp.bfloat16 and y.shape == (3, 5, 96)
    w, b = (layer.kernel[...].astype(jnp.bfloat16).astype(jnp.float32),
            layer.bias[...].astype(jnp.bfloat16).astype(jnp.float32))
    want = (x.astype(jnp.float32) @ w + b).astype(jnp.bfloat16)
    # one rounding: at most one bf16 ulp from the rounded float32 result (sum order)
    ulp = np.abs(np.asarray(want, np.float32)) * 2.0 ** -7
    assert np.all(np.abs(np.asarray(y, np.float32) - np.asarray(want, np.float32)) <= ulp)
    hlo = jax.jit(lambda x: layer(x)).lower(x).as_text()
    assert "tensor<64x96xbf16>) -> tensor<15x96xf32>" in hlo  # bf16 operands, f32 result

    f32 = linear(64, 96, ("embed", "mlp"), bias=True, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    xf = x.astype(jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(f32(xf)), np.asarray(nnx.Linear.__call__(f32, xf.reshape(15, 64))
                                        ).reshape(3, 5, 96))
