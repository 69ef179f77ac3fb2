"""grow_jax.algo: advantage estimators and losses (formulas in docs/algorithms.md).

- `advantages`: host-side numpy estimators for one rollout group, selected by name
  (`estimate("grow" | "grpo_traj" | "tgrpo" | "gigpo" | "ppo", rewards, **params)`).
- `losses`: pure JAX clipped-ratio policy loss (k3 KL, entropy), PPO value loss,
  `token_logprobs`, `token_entropy`.
- `registry`: the name -> function registry with parameter checking.

Submodules are imported on demand so importing the package does not import JAX.
"""

__all__ = ["estimate", "estimator_names", "estimator_params"]


def __getattr__(name):
    """`from grow_jax.algo import estimate` without importing JAX (numpy only, on demand)."""
    if name in __all__:
        from grow_jax.algo import advantages

        return getattr(advantages, name)
    raise AttributeError(f"module 'grow_jax.algo' has no attribute {name!r}")
