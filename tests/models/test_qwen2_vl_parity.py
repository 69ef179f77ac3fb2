"""Qwen2-VL parity against transformers (PyTorch), plus the jittable path and the KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grow_jax.models.qwen2_vl import inputs as qi
from grow_jax.models.qwen2_vl.modeling import Qwen2VL, init_cache

from ._tiny import TINY_CONFIGS, nnx_from_torch, random_image, tiny, torch_model

try:  # torch-free tests still run without it; `needs_torch` ones skip (conftest)
    import torch
except ImportError:
    torch = None

IMG, VS, VE = 500, 502, 503
_CACHE: dict = {}


def _models(name):
    if name not in _CACHE:
        c = tiny(name)
        if torch is None:  # torch-free: a random NNX model (tm is only used by needs_torch)
            _CACHE[name] = (c, None, Qwen2VL(c, rngs=nnx.Rngs(0)))
            return _CACHE[name]
        tm = torch_model(c)
        _CACHE[name] = (c, tm, nnx_from_torch(c, tm))
    return _CACHE[name]


def _prompt(rng, n_img_tokens, n_text=4):
    """Text, then for each image: <vision_start> image tokens <vision_end> text."""
    ids = list(rng.integers(0, 400, n_text))
    for n in n_img_tokens:
        ids += [VS] + [IMG] * int(n) + [VE] + list(rng.integers(0, 400, 2))
    return ids


def _left_pad(rows):
    T = max(len(r) for r in rows)
    ids = np.zeros((len(rows), T), np.int64)
    mask = np.zeros((len(rows), T), np.int64)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :] = r
        mask[b, T - len(r) :] = 1
    return ids, mask


def _scenario(name, c, seed=0):
    """(input_ids, attention_mask, images per row) for a named scenario."""
    rng = np.random.default_rng(seed)
    merge = c.vision.spatial_merge_size
    shapes = {
        "text_padded": [[], []],
        "one_image": [[(56, 56)]],
        "two_images": [[(56, 84), (84, 56)]],  # grids 1x4x6 and 1x6x4
        "batch_mixed": [[(56, 84), (84, 56)], [], [(56, 56)]],
    }[name]
    rows, images = [], []
    for b, row_shapes in enumerate(shapes):
        imgs = [random_image(rng, h, w) for h, w in row_shapes]
        n_tok = [(h // 14) * (w // 14) // merge**2 for h, w in row_shapes]
        rows.append(_prompt(rng, n_tok, n_text=3 + 2 * b))
        images += imgs
    ids, mask = _left_pad(rows)
    return ids, mask, images


def _torch_logits(tm, ids, mask, pv, grid):
    kw = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if pv is not None:
        kw.update(
            pixel_values=torch.tensor(pv),
            image_grid_thw=torch.tensor(grid),
            mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)),
        )
    with torch.no_grad():
        return tm(**kw).logits.numpy()


CASES = [(n, s) for n in TINY_CONFIGS for s in ("text_padded", "batch_mixed")] + [
    ("gqa2_untied", "one_image"),
    ("gqa2_untied", "two_images"),
]


@pytest.mark.needs_torch
@pytest.mark.parametrize("config_name,scenario", CASES)
def test_logits_match_transformers(config_name, scenario):
    c, tm, model = _models(config_name)
    ids, mask, images = _scenario(scenario, c)
    pv, grid = qi.images_to_patches(images, c) if images else (None, None)
    ref = _torch_logits(tm, ids, mask, pv, grid)
    ours = np.asarray(model(ids, pv, grid, mask))
    valid = mask.astype(bool)
    err = np.abs(ours - ref)[valid].max()
    assert err <= 1e-4, f"{config_name}/{scenario}: max abs logit diff {err}"


@pytest.mark.needs_torch
def test_vision_tower_matches_transformers():
    c, tm, model = _models("gqa2_untied")
    rng = np.random.default_rng(1)
    pv, grid = qi.images_to_patches([random_image(rng, 56, 84), random_image(rng, 84, 56)], c)
    with torch.no_grad():
        ref = tm.model.visual(torch.tensor(pv), grid_thw=torch.tensor(grid)).pooler_output.numpy()
    ours = model.encode_images(
        jnp.asarray(pv), qi.vision_position_ids(grid, 2), qi.vision_segment_ids(grid)
    )
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-5, rtol=0)


@pytest.mark.needs_torch
def test_rope_index_matches_transformers():
    c, tm, _ = _models("gqa2_untied")
    ids, mask, images = _scenario("batch_mixed", c)
    _, grid = qi.images_to_patches(images, c)
    ref_pos, ref_delta = tm.model.get_rope_index(
        torch.tensor(ids),
        mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)),
        image_grid_thw=torch.tensor(grid),
        attention_mask=torch.tensor(mask),
    )
    pos, delta = qi.get_rope_index(ids, grid, mask, c)
    assert pos.dtype == np.int32 and pos.shape == (3,) + ids.shape
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy()[:, 0])


@pytest.mark.needs_torch
def test_vision_metadata_matches_transformers_helpers():
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

    grid = np.array([[1, 4, 6], [1, 6, 4], [2, 2, 2]])
    ref_pos = get_vision_position_ids(torch.tensor(grid), 2).numpy()
    np.testing.assert_array_equal(qi.vision_position_ids(grid, 2), ref_pos)
    cu = get_vision_cu_seqlens(torch.tensor(grid)).numpy()
    seg = qi.vision_segment_ids(grid)
    np.testing.assert_array_equal(np.r_[0, np.cumsum(np.bincount(seg))], cu)


@pytest.mark.needs_torch
def test_images_to_patches_matches_pil_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    c = tiny()
    rng = np.random.default_rng(2)
    # a run of same-shape frames (converted stacked), then other shapes
    images = [random_image(rng, 56, 84) for _ in range(3)] + [random_image(rng, 112, 56),
                                                             random_image(rng, 56, 84)]
    proc = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=10**6)
    ref = proc(images=images, return_tensors="np")
    pv, grid = qi.images_to_patches(images, c)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    np.testing.assert_array_equal(pv, ref["pixel_values"])
    with pytest.raises(ValueError, match="multiples of patch_size"):
        qi.images_to_patches([random_image(rng, 50, 56)], c)


def test_image_token_count_mismatch_raises():
    c, _, model = _models("gqa2_untied")
    ids, mask, images = _scenario("one_image", c)
    pv, grid = qi.images_to_patches(images, c)
    extra_ids = np.concatenate([ids, [[IMG]]], 1)  # one image token too many
    extra_mask = np.concatenate([mask, [[1]]], 1)
    with pytest.raises(ValueError, match="image tokens do not match"):
        model(extra_ids, pv, grid, extra_mask)


def _pure_inputs(c, scenario):
    ids, mask, images = _scenario(scenario, c)
    pv, grid = qi.images_to_patches(images, c)
    pos, delta = qi.get_rope_index(ids, grid, mask, c)
    return ids, mask, pv, grid, pos, delta


def test_padded_image_embeds_and_batched_encoder_do_not_change_results():
    c, _, model = _models("gqa2_untied")
    ids, mask, pv, grid, pos, _ = _pure_inputs(c, "batch_mixed")
    vpos, vseg = qi.vision_position_ids(grid, 2), qi.vision_segment_ids(grid)
    encode = jax.jit(model.encode_images)
    forward = jax.jit(lambda e: model.forward(ids, pos, mask, e)[0])
    emb = encode(pv, vpos, vseg)
    padded = jnp.concatenate([emb, jnp.full((5, emb.shape[1]), 7.0)])
    np.testing.assert_allclose(
        np.asarray(forward(padded)), np.asarray(forward(emb)), atol=1e-6, rtol=0
    )
    # equal-size images as a batch [N, P, patch_dim] == the flat layout
    same = qi.images_to_patches([random_image(np.random.default_rng(3), 56, 84)] * 2, c)
    flat = encode(same[0], qi.vision_position_ids(same[1], 2), qi.vision_segment_ids(same[1]))
    batched = encode(
        same[0].reshape(2, 24, -1),
        qi.vision_position_ids(same[1], 2).reshape(2, 24, 2),
        np.zeros((2, 24), np.int32),
    )
    np.testing.assert_allclose(
        np.asarray(batched).reshape(flat.shape), np.asarray(flat), atol=1e-6, rtol=0
    )


def test_kv_cache_decode_matches_full_forward():
    """Prefill a left-padded image prompt, then decode token by token; compare to one pass."""
    c, _, model = _models("gqa4_tied")
    ids, mask, pv, grid, _, _ = _pure_inputs(c, "batch_mixed")
    B, T0 = ids.shape
    n_new = 4
    new = np.random.default_rng(5).integers(0, 400, (B, n_new))
    full_ids = np.concatenate([ids, new], 1)
    full_mask = np.concatenate([mask, np.ones((B, n_new), mask.dtype)], 1)
    pos, delta = qi.get_rope_index(full_ids, grid, full_mask, c)
    emb = jax.jit(model.encode_images)(
        pv, qi.vision_position_ids(grid, 2), qi.vision_segment_ids(grid)
    )
    ref, _ = jax.jit(model.forward)(full_ids, pos, full_mask, emb)

    max_len = T0 + n_new + 3  # spare slots stay masked
    cache_mask = np.zeros((B, max_len), np.int32)
    cache_mask[:, : T0 + n_new] = full_mask
    step = jax.jit(model.forward)
    cache = init_cache(c, B, max_len)
    # prompt-only rope ids give the same prompt positions; decode ids = valid count + delta
    ppos, pdelta = qi.get_rope_index(ids, grid, mask, c)
    np.testing.assert_array_equal(pdelta, delta)
    out, cache = step(ids, ppos, cache_mask, emb, cache, jnp.int32(0))
    got = [out]
    for i in range(n_new):
        t = T0 + i
        dpos = np.broadcast_to(full_mask[:, :t].sum(1) + delta, (3, B))[..., None]
        out, cache = step(
            full_ids[:, t : t + 1], dpos.astype(np.int32), cache_mask, None, cache, jnp.int32(t)
        )
        got.append(out)
    got = np.concatenate([np.asarray(g) for g in got], 1)
    valid = full_mask.astype(bool)
    err = np.abs(got - np.asarray(ref))[valid].max()
    assert err <= 1e-5, f"cached decode differs from full forward by {err}"


@pytest.mark.needs_torch
def test_rope_index_with_video_and_errors():
    c, tm, _ = _models("gqa2_untied")
    VID = c.video_token_id
    ids = np.array([[1, VS] + [IMG] * 4 + [VE, VS] + [VID] * 12 + [VE, 5]])
    img_grid, vid_grid = np.array([[1, 4, 4]]), np.array([[3, 4, 4]])
    ref_pos, ref_delta = tm.model.get_rope_index(
        torch.tensor(ids),
        mm_token_type_ids=torch.tensor((ids == IMG) + 2 * (ids == VID)),
        image_grid_thw=torch.tensor(img_grid),
        video_grid_thw=torch.tensor(vid_grid),
    )
    pos, delta = qi.get_rope_index(ids, img_grid, None, c, video_grid_thw=vid_grid)
    np.testing.assert_array_equal(pos, ref_pos.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy()[:, 0])
    with pytest.raises(ValueError, match="row 0: more runs of video tokens"):
        qi.get_rope_index(ids, img_grid, None, c)
    with pytest.raises(ValueError, match="row 0: a run of 4 vision tokens does not match"):
        qi.get_rope_index(ids, np.array([[1, 4, 6]]), None, c, video_grid_thw=vid_grid)
