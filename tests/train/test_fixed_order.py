"""mesh.fixed_order_reduce: the train step with gradients summed over the devices in a
fixed order equals the default step (float noise), and is bit-identical across meshes of
the same device count, where the default step is not; shard-major collate; its errors."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from grow_jax import sharding
from grow_jax.config_utils import ConfigError
from grow_jax.data.pipeline import stack_micro_batches
from grow_jax.data.samples import BatchShape, collate
from grow_jax.train import builders
from grow_jax.train.optim import make_optimizer
from grow_jax.train.step import Learner, LossConfig

from ._synth import tiny_model
from .test_step import CFG, Opt, _assert_trees_close, _host, _samples

SAMPLES = _samples(24, seed=7)
SHAPE = BatchShape.fit(SAMPLES, 8, shards=4)


def _batches(shape, n_updates=3):
    """3 updates of 8 rows, the last one holding 5 real rows (a partial epoch end)."""
    out = []
    for i in range(n_updates):
        rows = SAMPLES[i * 8:(i + 1) * 8][: 5 if i == n_updates - 1 else 8]
        out.append(stack_micro_batches([collate(rows, shape, CFG)], 1))
    return out


def _train(mesh, fixed_order, shape, cfg=None):
    model = sharding.shard_model(tiny_model(CFG), mesh)
    learner = Learner(model, make_optimizer(Opt(), nnx.state(model, nnx.Param)),
                      cfg or LossConfig(), mesh, fixed_order=fixed_order)
    state = learner.init_state()
    metrics = []
    for b in _batches(shape):
        state, m = learner.step(state, b)
        metrics.append(m)
    return _host(state.params), _host(metrics)


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def reference():
    """The default step on one device, images collated row-major over the whole batch."""
    return _train(sharding.make_mesh(devices=jax.devices()[:1]), False,
                  BatchShape.fit(SAMPLES, 8))


@pytest.mark.parametrize("mesh_shape", [(2, 2, 1), (4, 1, 1), (1, 4, 1)])
def test_fixed_order_step_matches_the_default_step(reference, mesh_shape):
    params, metrics = _train(sharding.make_mesh(*mesh_shape), True, SHAPE)
    _assert_trees_close(params, reference[0], atol=1e-5)
    _assert_trees_close(metrics, reference[1], atol=1e-5)


@pytest.mark.slow
def test_fixed_order_is_bit_identical_across_meshes_of_one_size():
    """data=4 / data=2 x fsdp=2 / fsdp=4: same rows per device, same sums, same order."""
    cfg = LossConfig(entropy_coef=0.01)
    runs = [_train(sharding.make_mesh(*m), True, SHAPE, cfg)
            for m in ((4, 1, 1), (2, 2, 1), (1, 4, 1))]
    for params, metrics in runs[1:]:
        assert _max_diff(params, runs[0][0]) == 0.0
        assert _max_diff(metrics, runs[0][1]) == 0.0


def test_shard_major_collate_gives_each_block_its_own_images():
    rows = SAMPLES[:7]  # 2 + 2 + 2 + 1 real rows
    full = collate(rows, SHAPE, CFG)
    block = dataclasses.replace(SHAPE, batch=2, shards=1)
    per = SHAPE.images.count
    assert full["pixel_values"].shape[0] == 4 * per and per >= 2
    for j in range(4):
        part = collate(rows[2 * j:2 * j + 2], block, CFG)
        for key, x in part.items():
            got = (full[key][:, 2 * j:2 * j + 2] if key == "position_ids"
                   else full[key][j * len(x):(j + 1) * len(x)])
            np.testing.assert_array_equal(got, x, err_msg=f"block {j} {key}")


def test_errors_name_what_to_change():
    with pytest.raises(ValueError, match="does not split into 3 shards"):
        BatchShape.fit(SAMPLES, 8, shards=3)
    mesh = sharding.make_mesh(4, 1, 1)
    model = sharding.shard_model(tiny_model(CFG), mesh)
    learner = Learner(model, make_optimizer(Opt(), nnx.state(model, nnx.Param)), LossConfig(),
                      mesh, fixed_order=True)
    odd = stack_micro_batches([collate(SAMPLES[:6], BatchShape.fit(SAMPLES, 6), CFG)], 1)
    with pytest.raises(ValueError, match=r"batch dimension \(6\) does not split "
                                         r"over the mesh's 4 devices"):
        learner.step(learner.init_state(), odd)


@pytest.mark.parametrize("change, message", [
    (dict(tensor=2), "needs mesh.tensor = 1"),
    (dict(pack=True), "does not take packed rows"),
    (dict(minibatch_size=6), "needs rl.minibatch_size divisible by the mesh's 4 devices"),
    (dict(sft_batch=6), "needs sft.batch_size divisible"),
])
def test_config_errors(change, message):
    from configs.base import get_config

    c = get_config()
    c.mesh.fixed_order_reduce = True
    c.rl.pack = change.get("pack", False)
    c.rl.minibatch_size = change.get("minibatch_size", 8)
    c.sft.batch_size = change.get("sft_batch", 8)
    c.sft.steps = 1
    mesh = sharding.make_mesh(4 // change.get("tensor", 1), 1, change.get("tensor", 1))
    with pytest.raises(ConfigError, match=message):
        builders.batch_shards(c, mesh)
    c.mesh.fixed_order_reduce = False
    assert builders.batch_shards(c, mesh) == 1
