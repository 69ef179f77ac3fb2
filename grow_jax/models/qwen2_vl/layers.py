"""Small building blocks shared by the vision tower and the decoder.

Every parameter carries `logical_axes` metadata (e.g. ("embed", "mlp")) that
`grow_jax.sharding` maps to mesh axes. (`nnx.with_partitioning` is not used because its
eager sharding needs a mesh at construction time; plain metadata does not.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_INIT = nnx.initializers.normal(0.02)


def dtype_of(name: str):
    return jnp.dtype(name)


ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}


class Linear(nnx.Linear):
    """nnx.Linear applied to inputs flattened to 2-D.

    Same parameters as nnx.Linear. On XLA:CPU the weight gradient of a [B, T, D] @ [D, F]
    product (a contraction over two batch-like dims) compiles to a loop ~3x slower than
    the plain [B*T, D] GEMM; flattening first is exact and makes training ~2x faster here.
    A bf16 (or other narrow float) product on XLA:CPU also asks for a float32 result, then
    casts it to the compute dtype: XLA:CPU runs a bf16 x bf16 -> bf16 dot ~6x slower than
    the same dot with a float32 result (benchmarks/decode_step.py), which rounds once,
    after the accumulation; accelerators keep their native bf16 dot.
    """

    def __call__(self, x):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        dtype = jnp.dtype(self.dtype or x.dtype)
        if dtype.itemsize < 4 and jax.default_backend() == "cpu":
            y = _f32_result(self, x2, dtype).astype(dtype)
        else:
            y = super().__call__(x2)
        return y.reshape(*lead, -1)


def _f32_result(layer: nnx.Linear, x, dtype):
    """layer(x) with the product and bias add in float32 (inputs in the compute dtype)."""
    y = jax.lax.dot_general(x.astype(dtype), layer.kernel[...].astype(dtype),
                            (((1,), (0,)), ((), ())), precision=layer.precision,
                            preferred_element_type=jnp.float32)
    if layer.bias is not None:
        y = y + layer.bias[...].astype(dtype)
    return y


def linear(
    d_in: int, d_out: int, axes: tuple, *, bias: bool, dtype, param_dtype, rngs: nnx.Rngs
) -> nnx.Linear:
    """Linear (kernel [in, out]) with logical axes on kernel and bias."""
    return Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.with_metadata(_INIT, logical_axes=axes),
        bias_init=nnx.with_metadata(nnx.initializers.zeros_init(), logical_axes=axes[1:]),
        rngs=rngs,
    )


def layer_norm(dim: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm(eps=1e-6) with exact (two-pass) variance, like torch."""
    return nnx.LayerNorm(
        dim,
        epsilon=1e-6,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nnx.with_metadata(nnx.initializers.ones_init(), logical_axes=("norm",)),
        bias_init=nnx.with_metadata(nnx.initializers.zeros_init(), logical_axes=("norm",)),
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, normalised in float32 like transformers."""

    def __init__(self, dim: int, eps: float, *, param_dtype):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
        self.eps = eps

    def __call__(self, x):
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(dtype) * x32.astype(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rotary(x, cos, sin):
    """x * cos + rotate_half(x) * sin; cos/sin broadcast over the heads axis (-2)."""
    return x * cos + rotate_half(x) * sin
