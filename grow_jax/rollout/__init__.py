"""grow_jax.rollout."""
