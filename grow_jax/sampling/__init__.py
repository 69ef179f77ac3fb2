"""grow_jax.sampling."""
