"""Policy/value losses against numbers computed by hand (arithmetic in the comments)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grow_jax.algo import losses
from grow_jax.algo.losses import (
    masked_mean,
    policy_loss,
    token_entropy,
    token_logprobs,
    value_loss,
)

F = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)

# Two samples of unequal length: 2 and 1 action tokens.
MASK = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
LOGP = jnp.array([[-0.3, -1.2, -9.0], [-0.7, -2.0, -5.0]])


def test_ratio_one_is_minus_mean_advantage_token_vs_sample_mean():
    adv = jnp.array([1.0, -3.0])
    # ratio 1 -> per-token loss -A: tokens (-1, -1 | +3)
    # token_mean: (-1 - 1 + 3) / 3 = 1/3  (= -mean of A over masked tokens)
    loss, m = policy_loss(LOGP, LOGP, adv, MASK)
    F(loss, 1 / 3)
    F(m["pg_loss"], 1 / 3)
    F(m["ratio_mean"], 1.0)
    F(m["clip_frac"], 0.0)
    F(m["approx_kl"], 0.0)
    F(m["kl"], 0.0)
    # sample_mean: sample0 mean(-1, -1) = -1, sample1 = 3 -> (-1 + 3) / 2 = 1
    loss, _ = policy_loss(LOGP, LOGP, adv, MASK, aggregation="sample_mean")
    F(loss, 1.0)
    # per-token advantages [B, T] give the same result when constant along T
    loss, _ = policy_loss(LOGP, LOGP, jnp.broadcast_to(adv[:, None], (2, 3)), MASK)
    F(loss, 1 / 3)


# Four one-token samples: ratios 1.5, .5, .5, 1.5 with advantages +1, +1, -1, -1.
OLD4 = jnp.zeros((4, 1))
NEW4 = jnp.log(jnp.array([[1.5], [0.5], [0.5], [1.5]]))
ADV4 = jnp.array([1.0, 1.0, -1.0, -1.0])
MASK4 = jnp.ones((4, 1))


def test_clipping_both_sides():
    # s0: A=+1 r=1.5 -> min(1.5, 1.2) = 1.2, loss -1.2 (clipped high)
    # s1: A=+1 r=.5  -> min(.5, .8) = .5,    loss -.5  (not clipped)
    # s2: A=-1 r=.5  -> min(-.5, -.8) = -.8, loss .8   (clipped low)
    # s3: A=-1 r=1.5 -> min(-1.5, -1.2)=-1.5, loss 1.5 (not clipped)
    # mean (-1.2 - .5 + .8 + 1.5) / 4 = .15; clip_frac 2/4
    # approx_kl = mean(r - 1 - log r) = (2*(.5 - log 1.5) + 2*(-.5 + log 2)) / 4
    #           = (0.0945348919 + 0.1931471806) / 2 = 0.1438410362
    loss, m = policy_loss(NEW4, OLD4, ADV4, MASK4)
    F(loss, 0.15)
    F(m["clip_frac"], 0.5)
    F(m["ratio_mean"], 1.0)
    F(m["approx_kl"], 0.1438410362)
    # asymmetric (clip_high .28): s0 -> -1.28; s2 clip_low .3 -> min(-.5,-.7) = -.7
    # (-1.28 - .5 + .7 + 1.5) / 4 = .105
    loss, _ = policy_loss(NEW4, OLD4, ADV4, MASK4, clip_low=0.3, clip_high=0.28)
    F(loss, 0.105)


def test_clipped_tokens_have_zero_gradient():
    # d loss / d logp = -r A / 4 where unclipped (s1: -.5/4, s3: 1.5/4), 0 where clipped
    g = jax.grad(lambda lp: policy_loss(lp, OLD4, ADV4, MASK4)[0])(NEW4)
    F(g, [[0.0], [-0.125], [0.0], [0.375]])


def test_kl_to_reference():
    loss, m = policy_loss(LOGP, LOGP, jnp.ones(2), MASK, kl_coef=0.1, ref_logprobs=LOGP)
    F(m["kl"], 0.0)
    F(loss, -1.0)
    # ref - logp = log 2 on every token: k3 = 2 - log 2 - 1 = 0.3068528194
    ref = LOGP + math.log(2.0)
    loss, m = policy_loss(LOGP, LOGP, jnp.ones(2), MASK, kl_coef=0.5, ref_logprobs=ref)
    F(m["kl"], 0.3068528194)
    F(loss, -1.0 + 0.5 * 0.3068528194)
    # gradient of k3 w.r.t. logp at ref - logp = d: -(e^d - 1) = -1 per token, / 3 tokens
    g = jax.grad(
        lambda lp: policy_loss(lp, LOGP, jnp.zeros(2), MASK, kl_coef=1.0, ref_logprobs=ref)[0]
    )(LOGP)
    F(g, -MASK / 3)


def test_entropy_bonus():
    ent = jnp.array([[1.0, 2.0, 50.0], [4.0, 50.0, 50.0]])
    # token mean of entropy over masked tokens (1 + 2 + 4) / 3 = 7/3; loss = 0 - .1 * 7/3
    loss, m = policy_loss(LOGP, LOGP, jnp.zeros(2), MASK, entropy=ent, entropy_coef=0.1)
    F(m["entropy"], 7 / 3)
    F(loss, -0.7 / 3)


def test_entropy_floor_hinge_covers_only_free_tokens_below_the_floor():
    ent = jnp.array([[1.0, 2.0, 50.0], [0.0, 50.0, 50.0]])
    # floor 1.5: hinge max(0, 1.5 - H) on the masked tokens = (.5, 0 | 1.5)
    # token mean (.5 + 0 + 1.5) / 3 = 2/3; loss = 0 + .3 * 2/3 = .2 (no bonus: coef 0)
    loss, m = policy_loss(LOGP, LOGP, jnp.zeros(2), MASK, entropy=ent, entropy_floor=1.5,
                          entropy_floor_coef=0.3)
    F(m["entropy_hinge"], 2 / 3)
    F(loss, 0.2)
    # the second sample's token is forced (entropy_mask 0): hinge over (.5, 0) = .25
    free = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    loss, m = policy_loss(LOGP, LOGP, jnp.zeros(2), MASK, entropy=ent, entropy_floor=1.5,
                          entropy_floor_coef=0.3, entropy_mask=free)
    F(m["entropy_hinge"], 0.25)
    F(loss, 0.075)
    # d loss / d H: -coef / 2 on the one token below the floor, 0 elsewhere
    g = jax.grad(lambda e: policy_loss(LOGP, LOGP, jnp.zeros(2), MASK, entropy=e,
                                       entropy_floor=1.5, entropy_floor_coef=0.3,
                                       entropy_mask=free)[0])(ent)
    F(g, [[-0.15, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_sample_mean_excludes_empty_samples_and_padding_garbage_is_harmless():
    mask = jnp.concatenate([MASK, jnp.zeros((1, 3))])
    # padded positions hold -inf garbage: must not leak into loss or gradient
    old = jnp.concatenate([LOGP, jnp.full((1, 3), -jnp.inf)])
    logp = jnp.concatenate([LOGP.at[0, 2].set(-jnp.inf), jnp.zeros((1, 3))])
    adv = jnp.array([1.0, -3.0, 100.0])
    loss, g = jax.value_and_grad(
        lambda lp: policy_loss(
            lp, old, adv, mask, aggregation="sample_mean", kl_coef=0.1, ref_logprobs=old
        )[0]
    )(logp)
    F(loss, 1.0)  # as in the two-sample case: (-1 + 3) / 2
    assert np.all(np.isfinite(g))
    assert np.all(np.asarray(g)[mask == 0] == 0)


def test_jit_matches_eager():
    ref = LOGP - 0.2
    ent = jnp.ones_like(LOGP)
    kw = dict(kl_coef=0.05, ref_logprobs=ref, entropy=ent, entropy_coef=0.01)
    new = LOGP + jnp.array([[0.3, -0.4, 0.0], [0.1, 0.0, 0.0]])
    for agg in ("token_mean", "sample_mean"):
        eager = policy_loss(new, LOGP, jnp.array([0.5, -1.0]), MASK, aggregation=agg, **kw)
        fn = jax.jit(functools.partial(policy_loss, aggregation=agg))
        jitted = fn(new, LOGP, jnp.array([0.5, -1.0]), MASK, **kw)
        F(jitted[0], eager[0])
        assert set(jitted[1]) == {
            "loss",
            "pg_loss",
            "kl",
            "clip_frac",
            "ratio_mean",
            "approx_kl",
            "entropy",
        }
        for k in eager[1]:
            F(jitted[1][k], eager[1][k])
    g = jax.jit(jax.grad(lambda lp: policy_loss(lp, LOGP, jnp.ones(2), MASK)[0]))(new)
    assert g.shape == LOGP.shape


def test_argument_errors():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        policy_loss(LOGP, LOGP, jnp.ones(2), MASK, aggregation="seq_mean")
    with pytest.raises(ValueError, match="kl_coef != 0 needs ref_logprobs"):
        policy_loss(LOGP, LOGP, jnp.ones(2), MASK, kl_coef=0.1)
    with pytest.raises(ValueError, match="entropy_coef / entropy_floor_coef != 0 needs entropy"):
        policy_loss(LOGP, LOGP, jnp.ones(2), MASK, entropy_coef=0.1)
    with pytest.raises(ValueError, match=r"advantages \(3,\) must be \[B\] or \[B, T\]"):
        policy_loss(LOGP, LOGP, jnp.ones(3), MASK)
    with pytest.raises(ValueError, match="must all be"):
        policy_loss(LOGP, LOGP[:, :2], jnp.ones(2), MASK)


def test_masked_mean_empty_mask_is_zero():
    for agg in ("token_mean", "sample_mean"):
        F(masked_mean(jnp.ones((2, 3)), jnp.zeros((2, 3)), agg), 0.0)


def test_value_loss():
    v, old, ret = jnp.array([1.0, 2.0]), jnp.array([0.5, 0.5]), jnp.array([2.0, 0.0])
    # s0: (1-2)^2 = 1; V_clip = .5 + .2 = .7 -> (.7-2)^2 = 1.69 -> .5 * 1.69 = .845 (clip wins)
    # s1: (2-0)^2 = 4; V_clip = .7 -> .49 -> .5 * 4 = 2; mean (.845 + 2) / 2 = 1.4225
    loss, m = value_loss(v, old, ret, jnp.ones(2), clip=0.2)
    F(loss, 1.4225)
    F(m["vf_clip_frac"], 0.5)
    # unclipped: (.5 + 2) / 2 = 1.25; masking s1 out: .845
    F(value_loss(v, old, ret, jnp.ones(2), clip=None)[0], 1.25)
    F(value_loss(v, old, ret, jnp.array([1.0, 0.0]))[0], 0.845)
    with pytest.raises(ValueError, match="must have one shape"):
        value_loss(v, old, ret[:1], jnp.ones(2))


def test_token_logprobs_stable_and_exact():
    logits = jax.random.normal(jax.random.key(0), (2, 5, 7)) * 3
    tgt = jax.random.randint(jax.random.key(1), (2, 5), 0, 7)
    want = jnp.take_along_axis(jax.nn.log_softmax(logits), tgt[..., None], -1)[..., 0]
    F(token_logprobs(logits, tgt), want)
    # huge logits: log softmax([1000, 0])[1] = -1000 - log(1 + e^-1000) = -1000
    F(token_logprobs(jnp.array([[1000.0, 0.0]]), jnp.array([1])), [-1000.0])
    # bf16 logits are computed in f32
    out = token_logprobs(jnp.zeros((1, 4), jnp.bfloat16), jnp.array([2]))
    assert out.dtype == jnp.float32
    F(out, [-math.log(4)])


def test_token_entropy():
    # uniform over 4 -> log 4; [0, 0, -inf] -> uniform over 2 -> log 2 (finite gradient)
    F(token_entropy(jnp.zeros((3, 4))), [math.log(4)] * 3)
    x = jnp.array([0.0, 0.0, -jnp.inf])
    F(token_entropy(x), math.log(2))
    assert np.all(np.isfinite(np.asarray(jax.grad(token_entropy)(x))[:2]))
    # p = (.75, .25): -(.75 log .75 + .25 log .25) = 0.5623351446
    F(token_entropy(jnp.log(jnp.array([0.75, 0.25]))), 0.5623351446)


def test_policy_logits_match_sampler_and_keep_the_taken_token():
    """Temperature + top-k as the sampler draws; a taken token that falls outside the new
    top-k set keeps its tempered logit (finite logprob) instead of -inf."""
    logits = jnp.asarray([[3.0, 2.0, 1.0, 0.0, -1.0]])
    out = losses.policy_logits(logits, temperature=0.5, top_k=2)
    np.testing.assert_allclose(out[0, :2], [6.0, 4.0])
    assert np.all(np.isneginf(np.asarray(out[0, 2:])))
    kept = losses.policy_logits(logits, temperature=0.5, top_k=2, always_keep=jnp.asarray([3]))
    np.testing.assert_allclose(kept[0, [0, 1, 3]], [6.0, 4.0, 0.0])
    lp = losses.token_logprobs(kept, jnp.asarray([3]))
    np.testing.assert_allclose(lp, [0.0 - np.log(np.exp(6.0) + np.exp(4.0) + 1.0)], rtol=1e-6)
    # top-p 0.5 on probabilities (0.7, 0.2, 0.1): only the first token is kept
    p = jnp.log(jnp.asarray([[0.7, 0.2, 0.1]]))
    assert np.isneginf(np.asarray(losses.policy_logits(p, top_p=0.5))[0, 1:]).all()
