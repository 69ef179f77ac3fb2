"""grow_jax.models."""
