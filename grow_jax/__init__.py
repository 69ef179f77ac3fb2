"""grow_jax: GROW and baselines for RL on vision-language-model agents, in JAX.

Importing the package has no side effects; submodules are imported on demand.
"""

__version__ = "0.1.0"
