"""Sharding rules, mesh construction and a sharded Qwen2-VL forward on 8 fake CPU devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from grow_jax.models.qwen2_vl import inputs as qi
from grow_jax.models.qwen2_vl.modeling import Qwen2VL
from grow_jax.sharding import AxisRules, make_mesh, shard, shard_model, state_shardings

from ._tiny import random_image, tiny


def test_rules_fall_back_to_replication_when_not_divisible():
    mesh = make_mesh(2, 2, 2)
    rules = AxisRules()
    assert rules.spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
    assert rules.spec(("embed", "mlp"), (64, 129), mesh) == P("fsdp", None)
    assert rules.spec(("batch", None), (4, 3), mesh) == P(("data", "fsdp"), None)
    assert rules.spec(("batch",), (2,), mesh) == P("data")  # longest dividing prefix
    assert rules.spec(("batch", "embed"), (4, 64), mesh) == P(("data", "fsdp"), None)
    assert rules.spec(("unknown", None), (4, 4), mesh) == P(None, None)
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        AxisRules(rules=(("mlp", "model"),))


def test_shard_is_noop_without_mesh():
    x = np.ones((4, 3), np.float32)
    assert shard(x, ("batch", None)) is x


def test_make_mesh_checks_device_count():
    assert make_mesh().shape == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh(4, 2, 2)


@pytest.mark.multi_device
def test_sharded_forward_matches_single_device():
    assert jax.device_count() >= 8, "conftest must force 8 CPU devices"
    c = tiny("gqa2_untied")
    rng = np.random.default_rng(0)
    images = [random_image(rng, 56, 84), random_image(rng, 56, 84)]
    pv, grid = qi.images_to_patches(images, c)
    ids = np.array(
        [[1, 502] + [500] * 6 + [503, 7, 8, 9]] * 2
        + [[0, 0, 0, 0, 0, 0, 3, 4, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]
    )
    mask = np.ones_like(ids)
    mask[2, :6] = 0
    pos, _ = qi.get_rope_index(ids, grid, mask, c)
    vpos, vseg = qi.vision_position_ids(grid, 2), qi.vision_segment_ids(grid)

    def run(graphdef, state, *args):
        model = nnx.merge(graphdef, state)
        emb = model.encode_images(*args[3:])
        return model.forward(*args[:3], emb)[0]

    model = Qwen2VL(c, rngs=nnx.Rngs(1))
    graphdef, state = nnx.split(model)
    ref = jax.jit(run, static_argnums=0)(graphdef, state, ids, pos, mask, pv, vpos, vseg)

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    shard_model(model, mesh)
    kernel = model.layers[0].mlp.gate_proj.kernel.get_value()
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert model.layers[0].self_attn.k_proj.kernel.get_value().sharding.spec == P("fsdp", "tensor")
    assert model.embed_tokens.embedding.get_value().sharding.spec == P("tensor", "fsdp")
    assert len(kernel.addressable_shards) == 8 and kernel.addressable_shards[0].data.shape == (
        32,
        64,
    )

    graphdef, state = nnx.split(model)
    shardings = state_shardings(state, mesh)
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    pos_sh = NamedSharding(mesh, P(None, ("data", "fsdp")))
    with jax.set_mesh(mesh):
        f = jax.jit(
            run, static_argnums=0, in_shardings=(shardings, batch, pos_sh, batch, None, None, None)
        )
        out = f(graphdef, state, ids, pos, mask, pv, vpos, vseg)
    assert out.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=0)
