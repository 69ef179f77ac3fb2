"""PPO's value head: V(s) = w . h + b on the final hidden state at the last prompt position.

The head shares the policy's backbone (its gradient flows into it, weighted by
`algo.value_coef`), as in RL4VLM. Its params live in `TrainState.value` (replicated, f32,
zero-initialised so V = 0 before training) with their own optimizer state
`TrainState.value_opt_state`, and are checkpointed with the train state.

Values are computed in a pass before the update (`ValuePass.annotate`), not at rollout
time: the sampler's KV-cache path does not expose hidden states, and one extra forward at
the single last-prompt position of each sample is cheap. The pass uses the same params the
rollout used, so V_old is the behaviour value of each decision.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from grow_jax import distributed
from grow_jax.data.samples import Sample


def init(hidden_size: int, mesh) -> dict:
    """Zero head {"w": [D], "b": []} replicated on the mesh."""
    rep = NamedSharding(mesh, P())
    return {"w": jax.device_put(jnp.zeros((hidden_size,), jnp.float32), rep),
            "b": jax.device_put(jnp.zeros((), jnp.float32), rep)}


def apply(head: dict, hidden: jax.Array) -> jax.Array:
    """hidden [..., D] -> values [...] (f32)."""
    return hidden.astype(jnp.float32) @ head["w"] + head["b"]


def _values(params, head, rest, batch, *, graphdef):
    """[B] values of a [1, 1, B, ...] batch at each sample's last prompt position."""
    from grow_jax.train.step import action_hidden  # step imports this module

    mb = jax.tree.map(lambda x: x[0, 0], batch)
    mb["target_pos"] = mb["target_pos"][:, :1]  # the first target = the last prompt position
    return apply(head, action_hidden(nnx.merge(graphdef, params, rest), mb)[:, 0])


class ValuePass:
    """Jitted V(s) of every sample under a train state, minibatch-sized chunks at a time."""

    def __init__(self, learner):
        self.learner = learner
        self._fn = distributed.lockstep(jax.jit(functools.partial(_values,
                                                                  graphdef=learner.graphdef)))

    def __call__(self, state, samples: list[Sample], minibatch: int, model_config,
                 pad_id: int = 0) -> np.ndarray:
        """[N] values of `samples` (in order)."""
        from grow_jax.train.step import chunk_batches  # step imports this module

        out = []
        for chunk, batch in chunk_batches(self.learner.mesh, samples, minibatch, model_config,
                                          pad_id):
            v = self._fn(state.params, state.value, self.learner.rest, batch)
            out.append(distributed.host_value(v)[:len(chunk)])
        return np.concatenate(out).astype(np.float64)
