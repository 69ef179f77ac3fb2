"""grow_jax.data."""
