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


# ------------------------------------------------------------------ reliability
def _damage(folder):
    """Truncates every array data file under `folder` (what a torn copy or bad disk leaves)."""
    import glob
    import os

    files = [f for f in glob.glob(os.path.join(folder, "**", "d", "*"), recursive=True)
             if os.path.isfile(f)]
    assert files
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(7)


def test_damaged_latest_falls_back_to_previous_with_one_warning(tmp_path, capfd):
    with Checkpointer(tmp_path / "checkpoints", async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {"params": _items(step)["params"]}, extra_json={"iteration": step})
    _damage(tmp_path / "checkpoints" / "2")
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 2
        restored = ckpt.restore({"params": _items(0)["params"]})
        assert ckpt.restored_step == 1 and restored["extra"] == {"iteration": 1}
        _assert_bit_equal(restored["params"], _items(1)["params"])
        assert ckpt.all_steps() == [1]  # the damaged step no longer counts...
    assert (tmp_path / "checkpoints.damaged" / "2").is_dir()  # ...and nothing was deleted
    warning = [x for x in capfd.readouterr().err.splitlines() if "[checkpoint]" in x]
    assert len(warning) == 1 and "checkpoints/2 is damaged" in warning[0], warning


def test_damaged_extra_json_falls_back(tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {"params": _items(step)["params"]}, extra_json={"iteration": step})
    (tmp_path / "2" / "extra" / "metadata").write_text('{"iterat')
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.read_extra() == {"iteration": 1} and ckpt.restored_step == 1


def test_damaged_explicit_step_and_all_damaged_are_one_line_errors(tmp_path):
    from grow_jax.train.checkpoint import CheckpointDamaged

    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, {"params": _items(1)["params"]})
    _damage(tmp_path / "1")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointDamaged, match=r"checkpoint .*/1 cannot be read") as e:
            ckpt.restore({"params": _items(0)["params"]}, step=1)
        assert "\n" not in str(e.value)
        assert (tmp_path / "1").is_dir()  # an explicit step is never moved
        with pytest.raises(CheckpointDamaged, match="every checkpoint") as e:
            ckpt.restore({"params": _items(0)["params"]})
        assert "\n" not in str(e.value)


def test_other_model_size_is_one_line_error_naming_the_tensor(tmp_path):
    from grow_jax.train.checkpoint import CheckpointMismatch

    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, {"params": _items(1)["params"]})
    bigger = _items(1)["params"]
    bigger["layer"]["kernel"] = jnp.zeros((32, 8))
    renamed = dict(_items(1)["params"])
    renamed["embed2"] = renamed.pop("embed")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointMismatch) as e:
            ckpt.restore({"params": bigger})
        msg = str(e.value)
        assert "\n" not in msg and "'layer/kernel'" in msg and "(16, 8)" in msg
        assert "(32, 8)" in msg
        with pytest.raises(CheckpointMismatch, match="'embed2' is missing"):
            ckpt.restore({"params": renamed})
        assert ckpt.all_steps() == [1]  # a mismatch is not damage: nothing moved


_KILL_DURING_ASYNC_SAVE = """
import os, signal, sys
import jax.numpy as jnp
from grow_jax.train.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], async_save=True)
ckpt.save(1, {"params": {"w": jnp.full((8,), 1.0)}}, extra_json={"iteration": 1})
ckpt.wait()
ckpt.save(2, {"params": {"w": jnp.full((4096, 4096), 2.0)}}, extra_json={"iteration": 2})
os.kill(os.getpid(), signal.SIGKILL)  # the 64 MB write of step 2 is still in flight
"""


def test_interrupted_async_write_never_becomes_latest(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, "-c", _KILL_DURING_ASYNC_SAVE, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert any(not d.isdigit() for d in os.listdir(tmp_path))  # the unfinished step-2 folder
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
        assert ckpt.read_extra() == {"iteration": 1}
        restored = ckpt.restore({"params": {"w": jnp.zeros((8,))}})
        assert ckpt.restored_step == 1
        np.testing.assert_array_equal(restored["params"]["w"], np.ones(8))
        ckpt.save(2, {"params": {"w": jnp.full((8,), 3.0)}})  # the step can be written again
        ckpt.wait()
        assert ckpt.latest_step() == 2
