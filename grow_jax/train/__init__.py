"""grow_jax.train."""
