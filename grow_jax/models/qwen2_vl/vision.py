"""Qwen2-VL vision tower: patch embed, 2-D rotary ViT blocks, patch merger.

Pure arrays in, pure arrays out; no host work. Patches may come flat ([P, patch_dim], as
transformers lays them out, several images separated by segment ids) or batched
([N, P, patch_dim], equal-size images, which keeps attention cost at N*P^2 instead of
(N*P)^2). Attention is block-diagonal over `segment_ids`, equal to transformers' cu_seqlens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grow_jax.models.qwen2_vl.config import VisionConfig
from grow_jax.models.qwen2_vl.layers import ACTIVATIONS, apply_rotary, layer_norm, linear

VISION_ROPE_THETA = 10000.0


def vision_rotary(pos_ids, head_dim: int):
    """cos, sin [..., P, head_dim] (float32) from (h, w) coords [..., P, 2]: half h, half w."""
    spatial = head_dim // 2
    inv_freq = 1.0 / (
        np.float32(VISION_ROPE_THETA) ** (np.arange(0, spatial, 2, dtype=np.float32) / spatial)
    )
    freqs = pos_ids.astype(jnp.float32)[..., None] * inv_freq  # [..., P, 2, hd/4]
    freqs = freqs.reshape(*freqs.shape[:-2], spatial)  # h freqs then w freqs
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


class VisionAttention(nnx.Module):
    def __init__(self, c: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.qkv = linear(c.embed_dim, 3 * c.embed_dim, ("embed", "heads"), bias=True, **kw)
        self.proj = linear(c.embed_dim, c.embed_dim, ("heads", "embed"), bias=True, **kw)
        self.num_heads = c.num_heads
        self.head_dim = c.head_dim

    def __call__(self, x, cos, sin, mask):
        N, P, _ = x.shape
        qkv = self.qkv(x).reshape(N, P, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        cos, sin = cos[:, :, None], sin[:, :, None]
        q = apply_rotary(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = apply_rotary(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=self.head_dim**-0.5)
        return self.proj(out.reshape(N, P, -1))


class VisionMLP(nnx.Module):
    def __init__(self, c: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.fc1 = linear(c.embed_dim, c.mlp_dim, ("embed", "mlp"), bias=True, **kw)
        self.fc2 = linear(c.mlp_dim, c.embed_dim, ("mlp", "embed"), bias=True, **kw)
        self.act = ACTIVATIONS[c.hidden_act]

    def __call__(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nnx.Module):
    def __init__(self, c: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.norm1 = layer_norm(c.embed_dim, **kw)
        self.attn = VisionAttention(c, **kw)
        self.norm2 = layer_norm(c.embed_dim, **kw)
        self.mlp = VisionMLP(c, **kw)

    def __call__(self, x, cos, sin, mask):
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """LayerNorm, then each merge x merge block of patches -> one token of text width."""

    def __init__(self, c: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.ln_q = layer_norm(c.embed_dim, **kw)
        self.mlp0 = linear(c.merge_dim, c.merge_dim, ("merge", "mlp"), bias=True, **kw)
        self.mlp2 = linear(c.merge_dim, c.hidden_size, ("mlp", "embed"), bias=True, **kw)
        self.merge_dim = c.merge_dim

    def __call__(self, x):
        x = self.ln_q(x).reshape(x.shape[0], -1, self.merge_dim)
        return self.mlp2(jax.nn.gelu(self.mlp0(x), approximate=False))


class VisionTower(nnx.Module):
    def __init__(self, c: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        # Conv3d with stride == kernel and no bias == a matmul over the flattened patch.
        self.patch_embed = linear(c.patch_dim, c.embed_dim, ("patch", "embed"), bias=False, **kw)
        self.blocks = nnx.List([VisionBlock(c, **kw) for _ in range(c.depth)])
        self.merger = PatchMerger(c, **kw)
        self.head_dim = c.head_dim
        self.merge_area = c.spatial_merge_size**2
        self.dtype = dtype

    def __call__(self, pixel_values, pos_ids, segment_ids):
        """pixel_values [P, patch_dim] or [N, P, patch_dim] -> [P/m^2, D] or [N, P/m^2, D]."""
        flat = pixel_values.ndim == 2
        if flat:
            pixel_values, pos_ids, segment_ids = (
                pixel_values[None],
                pos_ids[None],
                segment_ids[None],
            )
        if pixel_values.shape[-2] % self.merge_area:
            raise ValueError(
                f"number of patches ({pixel_values.shape[-2]}) must be a multiple of "
                f"spatial_merge_size^2 = {self.merge_area}"
            )
        x = self.patch_embed(pixel_values.astype(self.dtype))
        cos, sin = vision_rotary(pos_ids, self.head_dim)
        mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]  # [N,1,P,P]
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        out = self.merger(x)
        return out[0] if flat else out
