"""grow_jax.envs."""
