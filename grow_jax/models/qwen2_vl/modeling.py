"""Qwen2-VL in Flax NNX: vision tower + Qwen2 decoder with M-RoPE and a fixed-size KV cache.

Public API:
- `Qwen2VL(config, *, rngs)`: the model; params in `config.param_dtype`, compute in `config.dtype`.
- `model(input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None) -> logits [B,T,V]`: convenience path, numpy or jax inputs, host prep via inputs.py then jitted calls.
- `model.encode_images(pixel_values, vision_pos_ids, vision_segment_ids) -> [P/m^2, D]` (or [N, P/m^2, D] for batched [N, P, patch_dim] input): pure, jittable.
- `model.forward(input_ids, position_ids, attention_mask, image_embeds=None, cache=None, cache_pos=None, logits_at=None) -> (logits, new_cache)`: pure, jittable, static shapes; image embeds (extra padded rows allowed) fill the `image_token_id` positions in row-major order.
- `init_cache(config, batch, max_len, dtype=None) -> cache`: per layer {"k","v"} zeros [B, kv_heads, max_len, head_dim].
- With a cache, `attention_mask` is [B, max_len] (1 = slot holds a real token), the T new keys are written at [cache_pos, cache_pos+T), and queries see slots <= their own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grow_jax.models.qwen2_vl import inputs as qinputs
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig, TextConfig
from grow_jax.models.qwen2_vl.layers import ACTIVATIONS, RMSNorm, apply_rotary, dtype_of, linear
from grow_jax.models.qwen2_vl.vision import VisionTower
from grow_jax.sharding import shard

Cache = list  # list over layers of {"k": [B, K, L, hd], "v": [B, K, L, hd]}


def init_cache(config: Qwen2VLConfig, batch: int, max_len: int, dtype=None) -> Cache:
    """Zeroed fixed-size KV cache for `batch` sequences of up to `max_len` tokens.

    Heads-major ([B, kv_heads, max_len, head_dim]): the layout attention's dots read, so
    a decode step writes its one new slot in place and copies nothing else; a
    [B, max_len, kv_heads, head_dim] cache was transposed whole, per layer and step."""
    t = config.text
    dtype = dtype_of(config.dtype) if dtype is None else dtype
    shape = (batch, t.num_key_value_heads, max_len, t.head_dim)
    return [
        {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
        for _ in range(t.num_hidden_layers)
    ]


def take_rows(x, rows):
    """x [B, T, ...] at positions rows [B, K] -> [B, K, ...]."""
    idx = rows.astype(jnp.int32).reshape(rows.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def causal_mask(q_slot, k_slot, valid):
    """[B, 1, Tq, S]: query at slot q_slot ([Tq] or [B, Tq]) sees valid keys at slots <= its own."""
    q_slot = jnp.broadcast_to(q_slot, (valid.shape[0], q_slot.shape[-1]))
    return ((k_slot[None, None, :] <= q_slot[:, :, None]) & valid[:, None, :])[:, None]


def segment_mask(q_seg, k_seg):
    """[B, 1, Tq, S]: a query sees only keys of its own segment (packed samples)."""
    return (q_seg[:, :, None] == k_seg[:, None, :])[:, None]


def mrope_cos_sin(position_ids, t: TextConfig, dtype):
    """cos, sin [B, T, head_dim] from M-RoPE ids [3, B, T]: frequency band i uses axis sel[i]."""
    hd = t.head_dim
    inv_freq = 1.0 / (
        np.float32(t.rope_theta) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd))
    )
    sel = np.repeat(np.arange(3), t.mrope_section)  # [hd/2] -> which of (t, h, w)
    pos = jnp.moveaxis(position_ids[sel], 0, -1).astype(jnp.float32)  # [B, T, hd/2]
    freqs = pos * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


class Attention(nnx.Module):
    def __init__(self, t: TextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        n, k, hd, d = t.num_attention_heads, t.num_key_value_heads, t.head_dim, t.hidden_size
        self.q_proj = linear(d, n * hd, ("embed", "heads"), bias=True, **kw)
        self.k_proj = linear(d, k * hd, ("embed", "kv_heads"), bias=True, **kw)
        self.v_proj = linear(d, k * hd, ("embed", "kv_heads"), bias=True, **kw)
        self.o_proj = linear(n * hd, d, ("heads", "embed"), bias=False, **kw)
        self.shape = (n, k, hd)

    def __call__(self, x, cos, sin, mask, kv=None, cache_pos=None, rows=None):
        """Keys/values from all T positions; queries (and the output) only at `rows`
        (int [B, K]) if given, with `mask` [B, 1, K, S] for those rows."""
        B, T, _ = x.shape
        n, k, hd = self.shape
        key = self.k_proj(x).reshape(B, T, k, hd)
        val = self.v_proj(x).reshape(B, T, k, hd)
        key = apply_rotary(key, cos[:, :, None], sin[:, :, None])
        if rows is not None:
            x, cos, sin = (take_rows(a, rows) for a in (x, cos, sin))
        q = self.q_proj(x).reshape(B, x.shape[1], n, hd)
        q = apply_rotary(q, cos[:, :, None], sin[:, :, None])
        new_kv = None
        if kv is not None:
            start = (0, 0, cache_pos, 0)
            new_kv = {
                name: jax.lax.dynamic_update_slice(
                    kv[name], jnp.swapaxes(new, 1, 2).astype(kv[name].dtype), start
                )
                for name, new in (("k", key), ("v", val))
            }
            key, val = (jnp.swapaxes(new_kv[n], 1, 2).astype(q.dtype) for n in ("k", "v"))
        out = jax.nn.dot_product_attention(q, key, val, mask=mask, scale=hd**-0.5)
        return self.o_proj(out.reshape(B, q.shape[1], n * hd)), new_kv


class MLP(nnx.Module):
    def __init__(self, t: TextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        d, f = t.hidden_size, t.intermediate_size
        self.gate_proj = linear(d, f, ("embed", "mlp"), bias=False, **kw)
        self.up_proj = linear(d, f, ("embed", "mlp"), bias=False, **kw)
        self.down_proj = linear(f, d, ("mlp", "embed"), bias=False, **kw)
        self.act = ACTIVATIONS[t.hidden_act]

    def __call__(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, t: TextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = Attention(t, **kw)
        self.post_attention_layernorm = RMSNorm(
            t.hidden_size, t.rms_norm_eps, param_dtype=param_dtype
        )
        self.mlp = MLP(t, **kw)

    def __call__(self, x, cos, sin, mask, kv=None, cache_pos=None, rows=None):
        """Output [B, T, D], or [B, K, D] at `rows` only (see Attention)."""
        h, new_kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv, cache_pos, rows)
        if rows is not None:
            x = take_rows(x, rows)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), new_kv


class Qwen2VL(nnx.Module):
    """Qwen2-VL for conditional generation (logits over the vocabulary)."""

    def __init__(self, config: Qwen2VLConfig, *, rngs: nnx.Rngs):
        self.config = config
        t = config.text
        dtype, pdtype = dtype_of(config.dtype), dtype_of(config.param_dtype)
        kw = {"dtype": dtype, "param_dtype": pdtype, "rngs": rngs}
        self.visual = VisionTower(config.vision, **kw)
        self.embed_tokens = nnx.Embed(
            t.vocab_size,
            t.hidden_size,
            dtype=dtype,
            param_dtype=pdtype,
            embedding_init=nnx.with_metadata(
                nnx.initializers.normal(0.02), logical_axes=("vocab", "embed")
            ),
            rngs=rngs,
        )
        self.layers = nnx.List([DecoderLayer(t, **kw) for _ in range(t.num_hidden_layers)])
        self.norm = RMSNorm(t.hidden_size, t.rms_norm_eps, param_dtype=pdtype)
        if not t.tie_word_embeddings:
            self.lm_head = linear(t.hidden_size, t.vocab_size, ("embed", "vocab"), bias=False, **kw)

    # ------------------------------------------------------------ pure path
    def encode_images(self, pixel_values, vision_pos_ids, vision_segment_ids):
        """Vision tower + merger: merged image tokens in text width."""
        return self.visual(pixel_values, vision_pos_ids, vision_segment_ids)

    def forward(
        self,
        input_ids,
        position_ids,
        attention_mask,
        image_embeds=None,
        cache=None,
        cache_pos=None,
        logits_at=None,
    ):
        """Logits [B, T, V] and the updated cache (None without a cache).

        `logits_at` (int [B, K], optional): compute logits only at these positions and
        return [B, K, V]; training needs them only where action tokens are predicted, and
        the output layer is the largest matmul of a small model. The last decoder layer then
        also runs its queries, attention output and MLP at those positions only.
        """
        x, new_cache = self.hidden_states(input_ids, position_ids, attention_mask,
                                          image_embeds, cache, cache_pos, logits_at)
        return self.output_logits(x), new_cache

    def output_logits(self, x):
        """The output layer: final hidden states [B, K, D] -> logits [B, K, V]."""
        if self.config.text.tie_word_embeddings:
            logits = self.embed_tokens.attend(x)
        else:
            logits = self.lm_head(x)
        return shard(logits, ("batch", None, "vocab"))

    def hidden_states(self, input_ids, position_ids, attention_mask, image_embeds=None,
                      cache=None, cache_pos=None, logits_at=None, segment_ids=None):
        """`forward` before the output layer: final-normed hidden states [B, T or K, D]
        (also what a value head reads) and the updated cache.

        `segment_ids` (int [B, T], no cache): packed rows (grow_jax.data.packing); tokens
        attend causally within their own segment only."""
        c, t = self.config, self.config.text
        dtype = dtype_of(c.dtype)
        B, T = input_ids.shape
        x = self.embed_tokens(input_ids).astype(dtype)
        if image_embeds is not None:
            emb = image_embeds.reshape(-1, t.hidden_size).astype(dtype)
            is_img = input_ids == c.image_token_id
            idx = jnp.cumsum(is_img.reshape(-1)) - 1
            idx = jnp.clip(idx, 0, emb.shape[0] - 1).reshape(B, T)
            x = jnp.where(is_img[..., None], emb[idx], x)
        x = shard(x, ("batch", None, "embed"))
        cos, sin = mrope_cos_sin(position_ids, t, dtype)

        valid = attention_mask.astype(bool)
        if cache is None:
            if valid.shape != (B, T):
                raise ValueError(f"attention_mask must be [B, T] = {(B, T)}, got {valid.shape}")
            start = 0
            k_slot = jnp.arange(T)
        else:
            L = cache[0]["k"].shape[2]
            if valid.shape != (B, L):
                raise ValueError(
                    f"with a cache, attention_mask must be [B, max_len] = {(B, L)}, got {valid.shape}"
                )
            if cache_pos is None:
                raise ValueError("forward: cache given without cache_pos")
            start = cache_pos
            k_slot = jnp.arange(L)
        mask = causal_mask(start + jnp.arange(T), k_slot, valid)
        if segment_ids is not None:
            if cache is not None:
                raise ValueError("hidden_states: segment_ids (packed rows) take no cache")
            mask = mask & segment_mask(segment_ids, segment_ids)

        # Only the logits rows feed the output, so the last layer computes queries, attention
        # output and MLP at those rows only (keys/values still cover every position).
        rows = None if logits_at is None else logits_at.astype(jnp.int32)
        new_cache = None if cache is None else []
        call = _remat_layer if c.remat and cache is None else _call_layer
        last_mask = None
        if rows is not None:
            last_mask = causal_mask(start + rows, k_slot, valid)
            if segment_ids is not None:
                last_mask = last_mask & segment_mask(take_rows(segment_ids, rows), segment_ids)
        for i, layer in enumerate(self.layers):
            last = rows is not None and i == len(self.layers) - 1
            x, kv = call(
                layer,
                x,
                cos,
                sin,
                last_mask if last else mask,
                None if cache is None else cache[i],
                cache_pos,
                rows if last else None,
            )
            if cache is not None:
                new_cache.append(kv)
        if rows is not None and not len(self.layers):
            x = take_rows(x, rows)
        return self.norm(x), new_cache

    # ------------------------------------------------------ convenience path
    def __call__(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None):
        """Logits [B, T, V] like transformers' forward; does host prep then jitted calls."""
        c = self.config
        ids = np.asarray(input_ids)
        mask = (
            np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask)
        )
        n_tokens = int((ids == c.image_token_id).sum())
        merge = c.vision.spatial_merge_size
        if (pixel_values is None) != (image_grid_thw is None):
            raise ValueError("pixel_values and image_grid_thw must be given together")
        n_merged = (
            0
            if image_grid_thw is None
            else int(qinputs.num_image_tokens(image_grid_thw, merge).sum())
        )
        if n_tokens != n_merged:
            raise ValueError(
                f"image features and image tokens do not match: {n_tokens} image tokens "
                f"(id {c.image_token_id}) in input_ids, {n_merged} merged patches from image_grid_thw"
            )
        position_ids, _ = qinputs.get_rope_index(ids, image_grid_thw, mask, c)
        image_embeds = None
        if pixel_values is not None:
            grid = np.asarray(image_grid_thw)
            pv = np.asarray(pixel_values)
            if pv.shape[0] != int(grid.prod(-1).sum()):
                raise ValueError(
                    f"pixel_values has {pv.shape[0]} patches, image_grid_thw implies "
                    f"{int(grid.prod(-1).sum())}"
                )
            image_embeds = _encode_jit(
                self, pv, qinputs.vision_position_ids(grid, merge), qinputs.vision_segment_ids(grid)
            )
        return _forward_jit(self, ids.astype(np.int32), position_ids, mask, image_embeds)


def _call_layer(layer, *args):
    return layer(*args)


# config.remat: only each layer's input is kept for the backward pass, the rest recomputed.
_remat_layer = nnx.remat(_call_layer)


@nnx.jit
def _encode_jit(model, pixel_values, pos_ids, segment_ids):
    return model.encode_images(pixel_values, pos_ids, segment_ids)


@nnx.jit
def _forward_jit(model, input_ids, position_ids, attention_mask, image_embeds):
    return model.forward(input_ids, position_ids, attention_mask, image_embeds)[0]
