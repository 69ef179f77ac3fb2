"""grow_jax.sampling: batched generation with a KV cache.

`generate(model, prompts, ...)` is the transformers-like entry point (the function, not the
module); `grow_jax.sampling.generate.Sampler` is the rollout hot path it wraps.
"""

from grow_jax.sampling.generate import generate  # noqa: F401  (the function shadows the module)

__all__ = ["generate"]
