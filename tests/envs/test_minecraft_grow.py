"""One GROW iteration on the MineStudio-shaped fake with a chosen task list, through the Python
API (rollout -> build_samples -> Learner): successes and failures in a group, non-zero
advantages, and an update that changes the weights."""

import jax
import numpy as np
import pytest
from flax import nnx
from rollout_helpers import FirstTokenAgent, tiny_config  # tests/envs is on sys.path

from grow_jax.data.pipeline import epoch_batches
from grow_jax.data.samples import BatchShape
from grow_jax.envs import minecraft
from grow_jax.envs.pool import EnvPool
from grow_jax.rollout.loop import run_episodes
from grow_jax.train.rl import build_samples
from grow_jax.train.trainer import Run, rl_config_view

ATTACK = minecraft.noop_groups()
ATTACK[minecraft.GROUPS.index("attack")] = 1


def _attack_on_even(first, action):
    """The fallback decision: attacks when the first sampled token is even (else the no-op),
    so the sampled tokens decide the episode (the fake's goal event needs 8 attack ticks =
    2 decisions)."""
    return np.stack([ATTACK] * 4) if first % 2 == 0 else action


def _config():
    c = tiny_config()
    c.env.suite = "minecraft"
    c.agent.history = 0
    c.env.actions_per_decision = 4
    c.agent.max_new_tokens = 49  # one decision's budget; a random model's text never parses,
    # so every decision goes by the parity of its first token (_attack_on_even)
    c.algo.name = "grow"
    c.algo.format_penalty = 0.0
    c.rl.minibatch_size = 64
    c.rl.lr = 1e-2
    c.rl.warmup_steps = 0
    return c


@pytest.mark.slow
def test_grow_iteration_on_the_fake_trains(tmp_path):
    c = _config()
    run = Run(c, str(tmp_path))
    try:
        by_id = {t.task_id: t for t in minecraft.make_tasks(max_steps=3)}
        chosen = [by_id["mine_block:oak_log"], by_id["kill_entity:sheep"]]
        g = 4
        per_env = [t for t in chosen for _ in range(g)]
        pool = EnvPool(per_env, env_kwargs=dict(fake=True, obs_size=(32, 18)))
        learner = run.learner("policy", rl_config_view(c))
        state = learner.init_state(seed=0)
        before = jax.tree.map(np.asarray, nnx.to_pure_dict(state.params))
        agent = FirstTokenAgent(run.agent, _attack_on_even)
        trajs = run_episodes(pool, agent, run.sampler(), state.params,
                             seeds=[5] * g + [6] * g, groups=[0] * g + [1] * g,
                             rng=jax.random.key(3))
        pool.close()
        assert {tr.task_id for tr in trajs} == {"mine_block:oak_log", "kill_entity:sheep"}
        outcomes = [tr.success for tr in trajs]
        assert any(outcomes) and not all(outcomes)
        samples, stats = build_samples(trajs, c.algo, run.mcfg)
        advs = np.concatenate([s.advantages for s in samples])
        assert samples and np.any(advs != 0), stats
        shape = BatchShape.fit(samples, c.rl.minibatch_size)
        for batches in epoch_batches(samples, shape, run.mcfg, epochs=1, accumulation=1,
                                     seed=0, pad_id=run.pad_id):
            state, metrics = learner.step(state, batches)
        after = jax.tree.map(np.asarray, nnx.to_pure_dict(state.params))
        changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b),
                                               before, after))
        assert any(changed) and np.isfinite(float(metrics["loss"]))
    finally:
        run.close()
