"""grow_jax.models.qwen2_vl."""
