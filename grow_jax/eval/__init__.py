"""grow_jax.eval."""
