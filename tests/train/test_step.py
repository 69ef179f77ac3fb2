"""The jitted train step: sharding invariance, accumulation, RL sanity, SFT, freezing, donation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from grow_jax import sharding
from grow_jax.algo import losses
from grow_jax.data.pipeline import stack_micro_batches
from grow_jax.data.samples import BatchShape, collate, decision_samples
from grow_jax.train.optim import _is_vision, make_optimizer
from grow_jax.train.step import Learner, LossConfig, action_logits, update_grads, update_metrics

from ._synth import make_trajectory, tiny_config, tiny_model

CFG = tiny_config()


class Opt:
    """The optimizer settings make_optimizer reads (constant lr after a 1-step warmup)."""

    def __init__(self, lr=1e-3, freeze_vision=False, grad_clip=1.0):
        self.lr, self.warmup_steps, self.total_steps, self.schedule = lr, 0, 100, "constant"
        self.grad_clip, self.weight_decay, self.final_lr_ratio = grad_clip, 0.01, 0.1
        self.b1, self.b2, self.eps, self.freeze_vision = 0.9, 0.999, 1e-8, freeze_vision


def _samples(n, seed=0, action_len=(1, 3)):
    """n GROW samples (56x56 frames) from random episodes of 4 decisions."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        tr = make_trajectory(rng, CFG, 4, frame_hw=(56, 56), action_len=action_len)
        out += decision_samples(tr, rng.normal(size=4).astype(np.float32), CFG)
    return out[:n]


# One static shape for every test batch, so learners reuse their compiled step.
SHAPE = BatchShape(8, 32, 3, BatchShape.fit(_samples(8), 8).images)


def _batch(samples, batch=8, accumulation=1):
    """Samples -> one stacked [1, A, batch, ...] update."""
    shape = dataclasses.replace(SHAPE, batch=batch)
    micro = [collate(samples[i : i + batch], shape, CFG) for i in range(0, len(samples), batch)]
    return stack_micro_batches(micro, accumulation)


def _learner(mesh, cfg=None, opt=None):
    model = sharding.shard_model(tiny_model(CFG), mesh)
    params = nnx.state(model, nnx.Param)
    return Learner(model, make_optimizer(opt or Opt(), params), cfg or LossConfig(), mesh)


def _fresh_state(learner):
    """A new state from the initial params (init_state would hand out, and the first step
    donate, the model's own buffers; copies keep a shared learner reusable)."""
    return learner.init_state(params=jax.tree.map(jnp.copy, learner._params_template))


@pytest.fixture(scope="module")
def learner1():
    return _learner(sharding.make_mesh(devices=jax.devices()[:1]))


@pytest.fixture(scope="module")
def learner8():
    return _learner(sharding.make_mesh(2, 2, 2))


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _assert_trees_close(a, b, atol):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_one_device_and_eight_device_mesh_agree(learner1, learner8):
    samples = _samples(24)
    batches = [_batch(samples[i * 8 : (i + 1) * 8]) for i in range(3)]
    results = {}
    for name, learner in (("1", learner1), ("8", learner8)):
        state = _fresh_state(learner)
        in_sh = learner.state_shardings(state)
        metrics = []
        for b in batches:
            state, m = learner.step(state, b)
            metrics.append(m)
        assert jax.tree.all(jax.tree.map(lambda s, x: s == x.sharding, in_sh, state))
        results[name] = (state, metrics)
    (s1, m1), (s8, m8) = results["1"], results["8"]
    assert int(s8.step) == 3
    emb = s8.params["embed_tokens"]["embedding"]
    assert emb.sharding.spec == P("tensor", "fsdp")  # ("vocab", "embed") stays sharded
    assert len(emb.addressable_shards) == 8 and emb.addressable_shards[0].data.shape == (256, 32)
    adam = s8.opt_state[1][0]  # clip_by_global_norm, then (scale_by_adam, ...)
    assert adam.mu["embed_tokens"]["embedding"].sharding == emb.sharding
    assert adam.nu["embed_tokens"]["embedding"].sharding == emb.sharding
    _assert_trees_close(_host(s1.params), _host(s8.params), atol=1e-5)
    _assert_trees_close(_host(m1), _host(m8), atol=1e-5)


def test_accumulation_equals_one_big_batch(learner1):
    samples = _samples(8, seed=1, action_len=(2, 2))  # equal token counts: token means agree
    big, acc = _batch(samples, 8), _batch(samples, 4, accumulation=2)
    assert acc["input_ids"].shape[:3] == (1, 2, 4)
    out = []
    for batch in (big, acc):
        state, m = learner1.step(_fresh_state(learner1), batch)
        out.append((_host(state.params), _host(m)))
    _assert_trees_close(out[0][0], out[1][0], atol=1e-5)
    _assert_trees_close(out[0][1], out[1][1], atol=1e-5)


def test_ratio_is_one_on_policy(learner8):
    """old_logprobs = the model's own logprobs (each sample alone): ratio 1, nothing clipped."""
    model = tiny_model(CFG)  # same seed as the learner's initial params
    samples = _samples(8, seed=2)
    for s in samples:
        logits = np.asarray(model(s.input_ids[None], s.pixel_values, s.image_grid_thw)[0])
        logp = jax.nn.log_softmax(logits[s.target_pos], -1)
        s.old_logprobs = np.asarray(
            jnp.take_along_axis(logp, s.input_ids[s.target_pos + 1, None], -1)[:, 0]
        )
    _, m = learner8.step(_fresh_state(learner8), _batch(samples))
    assert abs(float(m["ratio_mean"]) - 1) < 1e-5
    assert float(m["clip_frac"]) == 0.0
    assert abs(float(m["approx_kl"])) < 1e-6
    assert float(m["grad_norm"]) > 0


def test_sft_lowers_nll():
    batch = _batch(_samples(8, seed=3))
    learner = _learner(sharding.make_mesh(devices=jax.devices()[:1]), LossConfig(kind="sft"))
    first = jax.tree.map(lambda x: x[0, 0], batch)

    @jax.jit
    def nll(params):
        logits = action_logits(nnx.merge(learner.graphdef, params, learner.rest), first)
        logp = losses.token_logprobs(logits, first["targets"])
        return -losses.masked_mean(logp, first["loss_mask"])

    state = learner.init_state()
    before = float(nll(state.params))
    state, m = learner.step(state, jax.tree.map(lambda x: np.repeat(x, 20, axis=0), batch))
    assert int(state.step) == 20
    after = float(nll(state.params))
    assert after < 0.8 * before, (before, after)
    assert float(m["nll"]) < before


def test_freeze_vision_keeps_vision_params_bit_identical():
    learner = _learner(
        sharding.make_mesh(devices=jax.devices()[:1]), opt=Opt(lr=1e-2, freeze_vision=True)
    )
    state = learner.init_state()
    before = _host(state.params)
    state, _ = learner.step(state, _batch(_samples(8, seed=4)))
    after = _host(state.params)
    n_vision = n_text = 0
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after)):
        if _is_vision(path):
            n_vision += 1
            assert np.array_equal(x, y), jax.tree_util.keystr(path)
        elif not np.array_equal(x, y):
            n_text += 1
    assert n_vision > 10 and n_text > 10


def test_step_donates_the_old_state(learner8):
    state = _fresh_state(learner8)
    old_leaves = jax.tree.leaves(state)
    new, _ = learner8.step(state, _batch(_samples(8, seed=5)))
    assert all(x.is_deleted() for x in old_leaves)
    assert not any(x.is_deleted() for x in jax.tree.leaves(new))


def _grads(learner, batch):
    """The gradient of the first update of `batch` (leading dims [M, A])."""
    fn = jax.jit(lambda p, mbs: update_grads(p, mbs, graphdef=learner.graphdef,
                                             rest=learner.rest, cfg=learner.cfg)[0])
    return _host(fn(learner._params_template, jax.tree.map(lambda x: x[0], batch)))


def test_accumulation_with_unequal_tokens_and_padding_micro_batches_equals_one_batch(learner1):
    """6 samples of 1-3 action tokens: one batch of 8 (2 padding rows) and 4 micro-batches
    of 2 (the last all padding) give the same token-mean gradient."""
    samples = _samples(6, seed=6, action_len=(1, 3))
    assert len({len(s.target_pos) for s in samples}) > 1
    big = _batch(samples, 8)
    acc = _batch(samples + [], 2, accumulation=3)
    acc = stack_micro_batches(
        [jax.tree.map(lambda x: x[0, i], acc) for i in range(3)]
        + [collate([], dataclasses.replace(SHAPE, batch=2), CFG)], 4)
    assert acc["input_ids"].shape[:3] == (1, 4, 2) and acc["loss_mask"][0, 3].sum() == 0
    _assert_trees_close(_grads(learner1, big), _grads(learner1, acc), atol=1e-6)


def test_partial_last_update_is_weighted_by_its_real_samples(learner1):
    """4 real samples in an update of 8 rows: half the gradient of the same 4 as a full
    update (not a full-size token-mean step)."""
    samples = _samples(4, seed=7)
    half = _grads(learner1, _batch(samples, 8))
    full = _grads(learner1, _batch(samples, 4))
    _assert_trees_close(half, jax.tree.map(lambda g: 0.5 * g, full), atol=1e-6)


@functools.cache
def _on_policy_parts(n_parts=3, seed=4):
    """Minibatches of 8 samples whose old_logprobs are the tiny model's own (approx_kl 0);
    computed once (the eager per-sample forwards are slow), shared by the KL tests."""
    model = tiny_model(CFG)
    samples = _samples(8 * n_parts, seed=seed)
    for s in samples:
        logits = np.asarray(model(s.input_ids[None], s.pixel_values, s.image_grid_thw)[0])
        logp = jax.nn.log_softmax(logits[s.target_pos], -1)
        s.old_logprobs = np.asarray(
            jnp.take_along_axis(logp, s.input_ids[s.target_pos + 1, None], -1)[:, 0])
    return tuple(_batch(samples[i * 8:(i + 1) * 8]) for i in range(n_parts))


def _approx_kl_fn(learner):
    """params, one stacked update -> approx_kl of its first update (jitted forward only)."""
    return jax.jit(lambda params, batch: update_metrics(
        params, jax.tree.map(lambda x: x[0], batch), graphdef=learner.graphdef,
        rest=learner.rest, cfg=learner.cfg)["approx_kl"])


@pytest.mark.slow
def test_kl_backtracks_shrink_a_forced_large_step_to_the_bound():
    """lr 0.5 from approx_kl 0: the KL stop (which measures before a step) applies the first
    update in full and leaves its own minibatch far above kl_stop. With kl_backtracks the
    same update is halved n times (n = kl_backtracks metric) until approx_kl after it is
    <= kl_stop: the params are the old ones plus 2^-n of the full step, and the next
    updates are checked as before."""
    part = _on_policy_parts()[0]
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    stop = 0.01
    out = {}
    for name, backtracks in (("stop", 0), ("guard", 12)):
        learner = _learner(mesh, LossConfig(kl_stop=stop, kl_backtracks=backtracks), Opt(lr=0.5))
        start = _fresh_state(learner)
        p0 = _host(start.params)
        state, m = learner.step(start, part)
        out[name] = (learner, p0, state.params, _host(m))
    learner, p0, p_full, m = out["stop"]
    approx_kl = _approx_kl_fn(learner)  # the same forward for both (it reads no kl_backtracks)
    assert float(approx_kl(p_full, part)) > 10 * stop  # the forced large update
    _, _, p_guard, m = out["guard"]
    n = int(m["kl_backtracks"])
    assert n >= 1 and m["kl_stopped_updates"] == 0
    assert float(approx_kl(p_guard, part)) <= stop
    step = jax.tree.map(lambda full, old: (full - old) * 2.0 ** -n + old, _host(p_full), p0)
    _assert_trees_close(_host(p_guard), step, atol=1e-6)


@pytest.mark.slow
def test_kl_backtracks_drop_a_step_that_no_halving_brings_within_the_bound():
    """One halving allowed of a step that needs many: the update is not applied (the state
    is the initial one) and it counts as a KL-stopped update, as do the ones after it."""
    parts = _on_policy_parts()[:2]
    two = jax.tree.map(lambda *x: np.concatenate(x), *parts)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    learner = _learner(mesh, LossConfig(kl_stop=1e-4, kl_backtracks=1), Opt(lr=0.5))
    start = _fresh_state(learner)
    p0 = _host(start.params)
    state, m = learner.step(start, two)
    m = _host(m)
    assert int(state.step) == 0 and m["kl_stopped_updates"] == 2 and m["kl_backtracks"] == 1
    _assert_trees_close(_host(state.params), p0, atol=0)


def test_kl_backtracks_need_kl_stop():
    with pytest.raises(ValueError, match="kl_backtracks needs kl_stop"):
        LossConfig(kl_backtracks=2)


@pytest.mark.slow
def test_kl_stop_keeps_the_state_from_the_first_minibatch_over_the_threshold():
    """lr 0.5 on on-policy samples: update 1 runs at approx_kl 0 and moves the policy far;
    update 2's minibatch then measures approx_kl > kl_stop, so it and update 3 are not
    applied: the state equals one update of the first minibatch. Without kl_stop all 3 run."""
    parts = _on_policy_parts()
    three = jax.tree.map(lambda *x: np.concatenate(x), *parts)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    out = {}
    for name, stop, batch in (("stop", 0.01, three), ("one", 0.0, parts[0]),
                              ("free", 0.0, three)):
        learner = _learner(mesh, LossConfig(kl_stop=stop), Opt(lr=0.5))
        state, m = learner.step(_fresh_state(learner), batch)
        out[name] = (int(state.step), _host(state.params), _host(m))
    assert out["stop"][0] == 1 and out["stop"][2]["kl_stopped_updates"] == 2
    assert out["free"][0] == 3 and out["free"][2]["kl_stopped_updates"] == 0
    _assert_trees_close(out["stop"][1], out["one"][1], atol=0)
