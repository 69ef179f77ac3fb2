"""Sequence packing (grow_jax.data.packing): the packed layout trains exactly like padding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grow_jax import sharding
from grow_jax.data import packing
from grow_jax.data.pipeline import epoch_batches, stack_micro_batches
from grow_jax.data.samples import BatchShape, collate, decision_samples
from grow_jax.train.optim import make_optimizer
from grow_jax.train.step import Learner, LossConfig, update_grads

from ._synth import make_trajectory, tiny_config, tiny_model

CFG = tiny_config()


class Opt:
    lr, warmup_steps, total_steps, schedule, final_lr_ratio = 1e-3, 0, 100, "constant", 0.1
    grad_clip, weight_decay, b1, b2, eps, freeze_vision = 1.0, 0.01, 0.9, 0.999, 1e-8, False


def _samples(n, seed=0, frames=((56, 56),)):
    """n GROW samples of uneven length (instructions of 2-12 tokens, 1-4 action tokens)
    from random episodes; `frames`: the frame sizes drawn from (one size: batched images)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        hw = [frames[int(rng.integers(len(frames)))] for _ in range(3)]
        tr = make_trajectory(rng, CFG, 3, frame_hw=hw, text_len=int(rng.integers(2, 13)),
                             action_len=(1, 4))
        out += decision_samples(tr, rng.normal(size=3).astype(np.float32), CFG)
    return out[:n]


def _both(samples, batch, row_len):
    """(padded, packed) micro-batches of `samples` as one [1, 1, ...] update each."""
    shape = BatchShape.fit(samples, batch)
    padded = collate(samples, shape, CFG)
    pshape = packing.fit([samples], shape, CFG.text, row_len)
    packed = packing.collate_packed(samples, pshape, CFG)
    return stack_micro_batches([padded], 1), stack_micro_batches([packed], 1), pshape


def _grads(learner, batch):
    fn = jax.jit(lambda p, mbs: update_grads(p, mbs, graphdef=learner.graphdef,
                                             rest=learner.rest, cfg=learner.cfg))
    return jax.device_get(fn(learner._params_template, jax.tree.map(lambda x: x[0], batch)))


def _learner(cfg=LossConfig()):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    model = sharding.shard_model(tiny_model(CFG), mesh)
    return Learner(model, make_optimizer(Opt, nnx.state(model, nnx.Param)), cfg, mesh)


def _assert_close(a, b, atol=1e-5):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("aggregation,frames", [
    ("token_mean", ((56, 56),)),  # one grid: batched image layout
    pytest.param("sample_mean", ((56, 56), (28, 56)),  # mixed grids: flat image layout
                 marks=pytest.mark.slow),
])
def test_packed_loss_and_gradients_equal_padded(aggregation, frames):
    """10 samples of 14-31 tokens (with images) in a batch of 12 slots: packed into rows of
    64 tokens the loss, every metric and every gradient equal the padded batch's."""
    samples = _samples(10, seed=1, frames=frames)
    assert len({s.length for s in samples}) > 3 and len({len(s.target_pos) for s in samples}) > 1
    padded, packed, pshape = _both(samples, 12, 64)
    assert pshape.rows < 10  # several samples share a row
    assert packed["input_ids"].size < padded["input_ids"].size
    learner = _learner(LossConfig(aggregation=aggregation, entropy_coef=0.01))
    (g1, m1), (g2, m2) = _grads(learner, padded), _grads(learner, packed)
    assert abs(float(m1["loss"])) > 1e-3
    _assert_close(m1, m2)
    _assert_close(g1, g2)


def test_packed_rows_keep_each_sample_apart():
    """Segment ids, restarting M-RoPE positions and row-major images of a packed batch;
    without the segment mask the same rows give other gradients (the test can fail)."""
    samples = _samples(6, seed=2)
    padded, packed, pshape = _both(samples, 6, 64)
    mb = jax.tree.map(lambda x: x[0, 0], packed)
    for r in range(pshape.rows):
        seg = mb["segment_ids"][r]
        for s in range(1, seg.max() + 1):
            at = np.flatnonzero(seg == s)
            assert at.size and np.all(np.diff(at) == 1)
            assert (mb["position_ids"][:, r, at[0]] == 0).all()  # positions restart
    # every action token's slot points at its sample's logits position in its row
    flat = mb["target_pos"].reshape(-1)
    for i, s in enumerate(samples):
        k = len(s.target_pos)
        rows, cols = np.divmod(mb["target_slot"][i, :k], pshape.row_targets)
        at = mb["target_pos"][rows, cols]
        np.testing.assert_array_equal(mb["input_ids"][rows, at + 1], s.input_ids[s.target_pos + 1])
        assert flat[mb["target_slot"][i, :k]].shape == (k,)
    for key in ("targets", "loss_mask", "old_logprobs", "advantages"):
        np.testing.assert_array_equal(packed[key], padded[key])
    learner = _learner()
    leaky = dict(packed, segment_ids=np.ones_like(packed["segment_ids"]))
    g_pad, g_leak = _grads(learner, padded)[0], _grads(learner, leaky)[0]
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(g_pad), jax.tree.leaves(g_leak)))
    assert diff > 1e-4


@pytest.mark.slow
def test_epoch_batches_packed_trains_like_padded():
    """epoch_batches(pack_len=0): same shuffled micro-batches, a static packed shape per
    epoch, and one Learner.step gives the padded path's params and metrics."""
    samples = _samples(14, seed=3)
    shape = BatchShape.fit(samples, 8)
    kw = dict(epochs=2, seed=5)
    pad = list(epoch_batches(samples, shape, CFG, **kw))
    pk = list(epoch_batches(samples, shape, CFG, pack_len=0, row_multiple=2, **kw))
    assert pk[0]["input_ids"].shape[:2] == (2, 1)  # 2 updates, the last topped up
    assert pk[0]["input_ids"].shape[3] % 16 == 0 and pk[0]["input_ids"].shape[3] >= shape.seq
    assert pk[0]["input_ids"].shape[2] % 2 == 0
    np.testing.assert_array_equal(pk[1]["advantages"], pad[1]["advantages"])
    learner = _learner()
    out = []
    for batch in (pad[0], pk[0]):
        state = learner.init_state(params=jax.tree.map(jnp.copy, learner._params_template))
        state, m = learner.step(state, batch)
        out.append(jax.device_get((state.params, m)))
    _assert_close(out[0], out[1])


def test_automatic_row_length_is_the_cheapest():
    """pack_len=0 tries every candidate length and keeps the one of least estimated cost."""
    samples = _samples(16, seed=5)
    shape = BatchShape.fit(samples, 16)
    auto = packing.fit([samples], shape, CFG.text)
    share = packing.attention_share(CFG.text)
    cost = lambda p: p.rows * p.row_len * (1 + p.row_len * share)  # noqa: E731
    for L in range(shape.seq, packing.MAX_FACTOR * shape.seq + 1, 16):
        assert cost(auto) <= cost(packing.fit([samples], shape, CFG.text, L))
    assert cost(auto) < shape.batch * shape.seq * (1 + shape.seq * share)


def test_pack_len_errors_name_the_key():
    samples = _samples(4, seed=4)
    shape = BatchShape.fit(samples, 4)
    with pytest.raises(ValueError, match="rl.pack_len"):
        packing.fit([samples], shape, CFG.text, shape.seq - 1)
    with pytest.raises(ValueError, match="rl.pack_len"):
        list(epoch_batches(samples, shape, CFG, epochs=1, pack_len=-1))
    small = dataclasses.replace(packing.fit([samples], shape, CFG.text, 2 * shape.seq), rows=1)
    with pytest.raises(ValueError, match="packed rows"):
        packing.collate_packed(samples, small, CFG)


def test_packed_grammar_reads_each_targets_own_previous_token():
    """algo.action_tokens_only's grammar masks each target by the token before it: in a
    packed batch that token comes from the packed row, picked per sample like the hidden
    states. A grammar built from the samples' own (previous, target) pairs restricts every
    position to a few tokens; packed and padded still agree."""
    from grow_jax.algo.grammar import TokenGrammar

    samples = _samples(10, seed=3)
    follow: dict[int, set[int]] = {}
    for s in samples:
        for p in s.target_pos:
            follow.setdefault(int(s.input_ids[p]), set()).add(int(s.input_ids[p + 1]))
    grammar = TokenGrammar(start=(), follow=tuple((k, tuple(sorted(v)))
                                                  for k, v in sorted(follow.items())))
    padded, packed, _ = _both(samples, 12, 64)
    learner = _learner(LossConfig(grammar=grammar))
    (g1, m1), (g2, m2) = _grads(learner, padded), _grads(learner, packed)
    assert np.isfinite(float(m1["loss"])) and abs(float(m1["loss"])) > 1e-3
    _assert_close(m1, m2)
    _assert_close(g1, g2)


@pytest.mark.slow
def test_packed_step_on_an_eight_device_mesh_matches_one_device():
    """Rows sharded over (data, fsdp) and the target_slot gather across shards: the same
    update as on one device."""
    samples = _samples(8, seed=7)
    shape = BatchShape.fit(samples, 8)
    pshape = packing.fit([samples], shape, CFG.text, 2 * shape.seq, row_multiple=4)
    batch = stack_micro_batches([packing.collate_packed(samples, pshape, CFG)], 1)
    out = []
    for mesh in (sharding.make_mesh(devices=jax.devices()[:1]), sharding.make_mesh(2, 2, 2)):
        model = sharding.shard_model(tiny_model(CFG), mesh)
        learner = Learner(model, make_optimizer(Opt, nnx.state(model, nnx.Param)), LossConfig(),
                          mesh)
        state, m = learner.step(learner.init_state(), batch)
        out.append(jax.device_get((state.params, m)))
    _assert_close(out[0], out[1])
