"""Where one decode step of the ~100M model goes (batch 16, one new token, 96-slot cache).

Times the jitted step and its parts (decoder layers, output layer), and a plain read of
as many bytes as the step's weights, in wall and process CPU time with the 1-min load
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

B, L, POS = 16, 96, 70


def timed(name: str, fn, *args, n: int = 10, rounds: int = 3) -> None:
    """Best of `rounds` means over n calls, wall and CPU ms."""
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
          f"load {os.getloadavg()[0]:.2f}", flush=True)


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


if __name__ == "__main__":
    main()
