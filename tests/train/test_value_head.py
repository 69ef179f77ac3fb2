"""PPO's value head: trained by the step through the value loss, kept in TrainState and
checkpointed with it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from configs.tiny_cpu import get_config
from grow_jax import sharding
from grow_jax.data.pipeline import stack_micro_batches
from grow_jax.data.samples import BatchShape, collate, decision_samples
from grow_jax.train.step import Learner, LossConfig
from grow_jax.train.trainer import Run, rl_config_view
from grow_jax.train.value_head import ValuePass

from ._synth import make_trajectory, tiny_config, tiny_model

CFG = tiny_config()


def test_step_trains_the_value_head_towards_the_returns():
    rng = np.random.default_rng(0)
    samples = decision_samples(make_trajectory(rng, CFG, 4, frame_hw=(56, 56)),
                               np.zeros(4, np.float32), CFG)
    for s in samples:
        k = len(s.target_pos)
        s.old_values, s.returns = np.zeros(k, np.float32), np.full(k, 2.0, np.float32)
    batch = stack_micro_batches([collate(samples, BatchShape.fit(samples, 4), CFG)], 1)
    batch = jax.tree.map(lambda x: np.repeat(x, 5, axis=0), batch)  # 5 updates
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    model = sharding.shard_model(tiny_model(CFG), mesh)
    learner = Learner(model, optax.adam(1e-3), LossConfig(value_coef=0.5, value_clip=None),
                      mesh, value_tx=optax.adam(3e-2))
    state = learner.init_state(params=jax.tree.map(jnp.copy, nnx.state(model, nnx.Param)))
    assert float(jnp.abs(state.value["w"]).sum()) == 0.0  # V = 0 before training
    state, m = learner.step(state, batch)
    # V starts at 0 against returns of 2: vf_loss = .5 * 2^2 = 2 at the first update
    assert np.isfinite(float(m["vf_loss"])) and float(m["vf_loss"]) < 2.0
    assert int(state.step) == 5
    v = ValuePass(learner)(state, samples, 4, CFG)  # the pre-update pass PPO uses
    assert v.shape == (4,) and np.all(np.abs(v - 2.0) < 1.5), v  # moved from 0 towards 2


def test_value_head_is_checkpointed_with_the_train_state(tmp_path):
    c = get_config()
    c.algo.name = "ppo"
    c.logging.tensorboard = c.logging.progress = False
    c.checkpoint.async_save = False
    run = Run(c, str(tmp_path))
    try:
        learner = run.learner("policy", rl_config_view(c))
        state = learner.init_state(params=jax.tree.map(jnp.copy, learner._params_template))
        w = jnp.arange(state.value["w"].shape[0], dtype=jnp.float32)
        state = state.replace(value={"w": w, "b": jnp.float32(3.0)})
        run.save(1, state, "rl", force=True)
        run.ckpt.wait()
        fresh = learner.init_state(params=jax.tree.map(jnp.copy, learner._params_template))
        restored, extra = run.restore(fresh, 1)
        np.testing.assert_array_equal(np.asarray(restored.value["w"]), np.asarray(w))
        assert float(restored.value["b"]) == 3.0 and extra["phase"] == "rl"
    finally:
        run.close()
