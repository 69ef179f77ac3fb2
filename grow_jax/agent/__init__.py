"""grow_jax.agent."""
