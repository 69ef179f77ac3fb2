"""grow_jax.algo."""
