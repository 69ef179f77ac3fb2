"""Tests for grow_jax.train.checkpoint: bit-exact round trips, keep-N, async, resharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grow_jax.train.checkpoint import Checkpointer


def _items(seed: int):
    k = jax.random.key(seed)
    k1, k2 = jax.random.split(k)
    params = {
        "layer": {"kernel": jax.random.normal(k1, (16, 8)), "bias": jnp.arange(8.0)},
        "embed": jax.random.normal(k2, (32, 16)).astype(jnp.bfloat16),
    }
    opt_state = {"mu": jax.tree.map(jnp.zeros_like, params), "count": jnp.array(seed, jnp.int32)}
    return {
        "params": params,
        "opt_state": opt_state,
        "rng": {"key": jax.random.key(seed + 100)},
        "step": {"step": seed},
    }


def _assert_bit_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_save_restore_bit_exact_with_extra_json(tmp_path):
    items = _items(3)
    extra = {"model_config": {"hidden_size": 64}, "data_iter": {"epoch": 2, "index": 17}}
    with Checkpointer(tmp_path / "checkpoints", max_to_keep=2) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(7, items, extra_json=extra)
        ckpt.wait()
        assert ckpt.latest_step() == 7
        assert ckpt.read_extra() == extra
        restored = ckpt.restore(items)
    assert restored["extra"] == extra
    _assert_bit_equal({k: restored[k] for k in items}, items)


def test_restore_only_named_items_and_missing_step(tmp_path):
    items = _items(1)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(0, items)
        restored = ckpt.restore({"params": items["params"]}, step=0)
        assert set(restored) == {"params"}  # no extra JSON was saved
        assert ckpt.read_extra(0) is None
        with pytest.raises(FileNotFoundError, match="step 5"):
            ckpt.restore({"params": items["params"]}, step=5)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Checkpointer(tmp_path / "empty").restore({"params": items["params"]})


def test_keep_last_n(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in range(5):
            ckpt.save(step, {"params": _items(step)["params"]})
        ckpt.wait()
        assert ckpt.all_steps() == [3, 4]
    # A fresh manager sees what is on disk and restores the newest step.
    ckpt = Checkpointer(tmp_path, max_to_keep=2)
    assert ckpt.latest_step() == 4
    _assert_bit_equal(ckpt.restore({"params": _items(0)["params"]})["params"], _items(4)["params"])
    ckpt.close()


def test_async_save_is_complete_after_close(tmp_path):
    big = {"w": jnp.ones((512, 512), jnp.float32) * 3.0}
    ckpt = Checkpointer(tmp_path, async_save=True)
    ckpt.save(1, {"params": big})
    ckpt.close()  # must block until the background write is committed
    ckpt2 = Checkpointer(tmp_path)
    assert ckpt2.latest_step() == 1
    _assert_bit_equal(ckpt2.restore({"params": big})["params"], big)
    ckpt2.close()


def test_reserved_item_name(tmp_path):
    with Checkpointer(tmp_path) as ckpt, pytest.raises(ValueError, match="reserved"):
        ckpt.save(0, {"extra": {"a": jnp.zeros(2)}})


@pytest.mark.multi_device
def test_restore_onto_mesh_sharding(tmp_path):
    assert jax.device_count() == 8
    params = _items(5)["params"]
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, {"params": params})  # saved from a single device
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("fsdp", "tensor"))
    specs = {
        "layer": {"kernel": P("fsdp", "tensor"), "bias": P("tensor")},
        "embed": P(None, "fsdp"),
    }
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, s)),
        params,
        specs,
    )
    with Checkpointer(tmp_path) as ckpt:
        restored = ckpt.restore({"params": abstract})["params"]
    kernel = restored["layer"]["kernel"]
    assert kernel.sharding == NamedSharding(mesh, P("fsdp", "tensor"))
    assert kernel.addressable_shards[0].data.shape == (8, 2)
    _assert_bit_equal(restored, params)
