"""grow_jax.algo: advantage estimators and losses (formulas in docs/algorithms.md).

- `advantages`: host-side numpy estimators for one rollout group, selected by name
  (`estimate("grow" | "grpo_traj" | "tgrpo" | "gigpo" | "ppo", rewards, **params)`).
- `losses`: pure JAX clipped-ratio policy loss (k3 KL, entropy), PPO value loss,
  `token_logprobs`, `token_entropy`.
- `registry`: the name -> function registry with parameter checking.

Submodules are imported on demand so importing the package does not import JAX.
"""


def __getattr__(name: str):
    """`from grow_jax.algo import estimate`: the single-group estimator API, loaded lazily."""
    if name == "estimate":
        from grow_jax.algo.advantages import estimate

        return estimate
    raise AttributeError(f"module 'grow_jax.algo' has no attribute {name!r}")
