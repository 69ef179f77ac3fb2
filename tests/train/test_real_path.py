"""The real path rollout -> build_samples -> epoch batches -> Learner.step, on BabyAI with the
tiny model: the first update recomputes exactly the behaviour distribution (ratio 1)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.tiny_cpu import get_config
from grow_jax.data.pipeline import epoch_batches
from grow_jax.data.samples import BatchShape
from grow_jax.rollout.loop import run_episodes
from grow_jax.train.rl import build_samples
from grow_jax.train.trainer import Run, rl_config_view


def _config(**agent):
    c = get_config()
    c.agent.update(agent)
    c.env.max_steps = 3
    c.rl.group_size, c.rl.seeds_per_group, c.rl.groups_per_iter = 2, 1, 2
    c.algo.drop_zero_advantage = False
    c.logging.tensorboard = c.logging.progress = False
    c.checkpoint.async_save = False
    return c


def _first_updates(tmp_path, config, *loss_overrides):
    """One rollout of 4 episodes, then one update on all its samples by a fresh learner per
    entry of `loss_overrides` (None: the config's own loss) -> each step's metrics."""
    run = Run(config, str(tmp_path))
    try:
        learner = run.learner("policy", rl_config_view(config))
        params = learner._params_template
        tasks = run.tasks()
        pool = run.pool("train", [tasks[0]] * 4)
        trajs = run_episodes(pool, run.agent, run.sampler(), params, seeds=[3, 3, 4, 4],
                             groups=[0, 0, 1, 1], rng=jax.random.key(0))
        samples, _ = build_samples(trajs, config.algo, run.mcfg)
        rng = np.random.default_rng(0)  # random-init episodes all fail: give every sample a
        for s in samples:  # non-zero advantage so clip_frac can see a ratio outside the clip
            s.advantages[:] = rng.choice([-1.0, 1.0])
        shape = BatchShape.fit(samples, len(samples))
        (batches,) = list(epoch_batches(samples, shape, run.mcfg, epochs=1, pad_id=run.pad_id))
        assert batches["input_ids"].shape[:2] == (1, 1)  # exactly one update
        out = []
        for overrides in loss_overrides:
            if overrides:
                learner = run.learner("policy", rl_config_view(config))
                learner.cfg = dataclasses.replace(learner.cfg, **overrides)
            state = learner.init_state(params=jax.tree.map(jnp.copy, params))
            _, m = learner.step(state, batches)
            out.append({k: float(v) for k, v in jax.device_get(m).items()})
        return out
    finally:
        run.close()


@pytest.mark.slow
def test_first_update_ratio_is_one_at_temperature_with_top_k(tmp_path):
    """T = 0.7 with top-k 5: the train step's logprobs are those the sampler stored."""
    # The same rollout recomputed without the temperature and filter (the old train step)
    # is far from ratio 1: the test can fail; so is it without tiny_cpu's action grammar
    # (algo.action_tokens_only), which is part of the recomputed policy.
    m, bad, free = _first_updates(tmp_path, _config(temperature=0.7, top_k=5), None,
                                  dict(temperature=1.0, top_k=0), dict(grammar=None))
    assert abs(m["ratio_mean"] - 1.0) < 1e-5, m
    assert m["approx_kl"] < 1e-8, m
    assert m["clip_frac"] == 0.0, m
    assert bad["approx_kl"] > 1e-3, bad
    assert free["approx_kl"] > 1e-3, free
