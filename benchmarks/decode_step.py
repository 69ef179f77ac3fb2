"""Where one decode step of the ~100M model goes (batch 16, one new token, 96-slot cache).

Times the jitted step and its parts (decoder layers, output layer), a plain read of as many
bytes as the step's weights, and the step with other weight dtypes (bf16 weights and
compute, as `Sampler(dtype="bfloat16")`; int8 weight-only with a per-output-column scale,
dequantized to f32 inside the step), in wall and process CPU time with the 1-min load
average beside each line: on a shared machine the CPU time is the steadier figure.
Prints only (profiling aid for benchmarks/sampler.py; writes no docs).

    python benchmarks/decode_step.py
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
from _common import MODEL_100M  # benchmarks/_common.py (the script dir is on sys.path)
from flax import nnx

from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.models.qwen2_vl.modeling import Qwen2VL, init_cache
from grow_jax.sampling.generate import _cast, decode_graph

B, L, POS = 16, 96, 70


def timed(name: str, fn, *args, n: int = 10, rounds: int = 3, note: str = "") -> float:
    """Best of `rounds` means over n calls, wall and CPU ms (returns the wall seconds)."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    walls, cpus = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            out = fn(*args)
        jax.block_until_ready(out)
        walls.append((time.perf_counter() - t) / n)
        cpus.append((time.process_time() - c) / n)
    print(f"{name:32s} wall {1e3 * min(walls):8.2f} ms  cpu {1e3 * min(cpus):8.2f} ms  "
          f"load {os.getloadavg()[0]:.2f}{note}", flush=True)
    return min(walls)


def output_layer_rows(hidden: int, vocab: int) -> None:
    """The output layer's matmul alone at 1, B and 4B rows: with one row XLA streams the
    weights (a read-bound matrix-vector product); with a few rows it runs a small-M matrix
    product, compute-bound far below the big-matmul rate. Where decode sits between the two
    says whether fewer bytes (bf16/int8 weights) or a better small-M kernel is the lever."""
    w = jnp.ones((hidden, vocab), jnp.float32) * 0.01
    for rows in (1, B, 4 * B):
        x = jnp.ones((rows, hidden), jnp.float32)
        s = timed(f"output matmul, {rows} rows", jnp.matmul, x, w)
        print(f"{'':32s} = {2 * rows * hidden * vocab / s / 1e9:6.1f} GFLOP/s, weights read "
              f"at {w.nbytes / s / 1e9:5.1f} GB/s", flush=True)


def quantize_int8(params):
    """Matrices (ndim >= 2) as (int8 values, f32 scale per output column); others as-is."""
    def q(x):
        if x.ndim < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        scale = jnp.maximum(jnp.abs(x).max(axis=tuple(range(x.ndim - 1))), 1e-12) / 127
        return (jnp.round(x / scale).astype(jnp.int8), scale)
    return jax.tree.map(q, params)


def dequantize(qparams):
    return jax.tree.map(lambda x: x[0].astype(jnp.float32) * x[1] if isinstance(x, tuple)
                        else x, qparams, is_leaf=lambda x: isinstance(x, tuple))


def main():
    config = Qwen2VLConfig.tiny(**MODEL_100M)
    graph, params, rest = nnx.split(Qwen2VL(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    cache = init_cache(config, B, L)
    mask = jnp.ones((B, L), jnp.int32)
    ids, pos = jnp.ones((B, 1), jnp.int32), jnp.full((3, B, 1), POS, jnp.int32)
    decoder = {k: v for k, v in nnx.to_pure_dict(params).items() if k in ("layers", "lm_head")}
    n_bytes = sum(x.nbytes for x in jax.tree.leaves(decoder))

    def step(params, cache):
        model = nnx.merge(graph, params, rest)
        return model.forward(ids, pos, mask, cache=cache, cache_pos=jnp.int32(POS))

    def layers(params, cache):
        model = nnx.merge(graph, params, rest)
        return model.hidden_states(ids, pos, mask, cache=cache, cache_pos=jnp.int32(POS))

    def head(params, x):
        return nnx.merge(graph, params, rest).output_logits(x)

    timed(f"read {n_bytes / 1e6:.0f} MB (weights' size)", jnp.sum,
          jnp.ones((n_bytes // 4,), jnp.float32))
    timed("decode step", step, params, cache)
    timed("decoder layers (no output layer)", layers, params, cache)
    timed("output layer", head, params, jnp.ones((B, 1, config.text.hidden_size)))
    output_layer_rows(config.text.hidden_size, config.text.vocab_size)

    model = nnx.merge(graph, params, rest)
    bf_graph, bf_config = decode_graph(model, "bfloat16")
    bf_params, bf_rest = _cast(params, "bfloat16"), _cast(rest, "bfloat16")
    bf_cache = init_cache(bf_config, B, L, bf_config.dtype)

    def step_bf16(params, cache):
        model = nnx.merge(bf_graph, params, bf_rest)
        return model.forward(ids, pos, mask, cache=cache, cache_pos=jnp.int32(POS))

    timed("decode step, bf16 weights+compute", step_bf16, bf_params, bf_cache)
    qparams = quantize_int8(params)
    timed("decode step, int8 weights -> f32", lambda q, c: step(dequantize(q), c),
          qparams, cache)


if __name__ == "__main__":
    main()
