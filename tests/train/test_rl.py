"""train/rl.py: config validation before anything runs, per-estimator settings, and PPO's
GAE samples checked against a hand-computed episode."""

import numpy as np
import pytest

from configs.tiny_cpu import get_config
from grow_jax.train import rl

from ._synth import make_trajectory, tiny_config

CFG = tiny_config()


def _config(**algo):
    c = get_config()
    c.algo.update(algo)
    return c


@pytest.mark.parametrize("change,msg", [
    (dict(name="grwo"), "algo.name 'grwo' is not an estimator"),
    (dict(name="grpo_traj"), "needs agent.history=-1"),
    (dict(name="ppo_cot"), "agent.max_new_tokens >= 16"),
    (dict(name="ppo", value_coef=0.0), "algo.value_coef must be > 0"),
    (dict(kl_coef=-1.0), "algo.kl_coef must be >= 0"),
    (dict(gae_lambda=2.0), "algo.gae_lambda must be in"),
    (dict(aggregation="sum"), "algo.aggregation must be one of"),
    (dict(params={"gama": 0.9}), r"algo.params \['gama'\] are not parameters of estimator"),
    (dict(name="gigpo", params={"mode": "std"}), "mode must be one of"),
    (dict(gamma=1.5), r"gamma must be in \(0, 1\]"),
])
def test_validate_one_line_errors(change, msg):
    with pytest.raises(ValueError, match=msg) as e:
        rl.validate(_config(**change))
    assert str(e.value).startswith("config error:") and "\n" not in str(e.value)


def test_validate_accepts_every_estimator_with_its_needs():
    for name in ("grow", "tgrpo", "gigpo", "ppo"):
        rl.validate(_config(name=name))
    c = _config(name="grpo_traj")
    c.agent.history = -1
    rl.validate(c)
    c = _config(name="ppo_cot")
    c.agent.max_new_tokens = 16
    rl.validate(c)


def test_gigpo_keeps_its_own_gamma_unless_set_for_it():
    """algo.gamma is GROW's (0.995); GiGPO keeps its default 0.95 unless algo.params sets it."""
    c = _config(name="gigpo", gamma=0.995)
    kw = rl.estimator_kwargs(c.algo, "gigpo")
    assert "gamma" not in kw  # -> the estimator's own default, 0.95
    assert rl.estimator_kwargs(c.algo, "grow")["gamma"] == 0.995
    c.algo.params = {"gamma": 0.9, "mode": "mean_std_norm"}
    assert rl.estimator_kwargs(c.algo, "gigpo") == dict(omega=1.0, eps=1e-6, gamma=0.9,
                                                        mode="mean_std_norm")


def test_ppo_samples_match_a_hand_computed_episode():
    """One episode of 3 decisions, rewards [0, 0, 1], V(s) = [.5, .6, .8] (bootstrap 0):
    gamma .9, lam .8 (gamma*lam = .72)
      deltas: d0 = 0 + .9*.6 - .5 = .04; d1 = 0 + .9*.8 - .6 = .12; d2 = 1 + 0 - .8 = .2
      A2 = .2; A1 = .12 + .72*.2 = .264; A0 = .04 + .72*.264 = .23008
      returns = A + V = [.73008, .864, 1.0]"""
    rng = np.random.default_rng(0)
    tr = make_trajectory(rng, CFG, 3, action_len=(2, 2))
    c = _config(name="ppo", gae_lambda=0.8, params={"gamma": 0.9})
    seen = []

    def values_fn(samples):
        seen.append(len(samples))
        return np.array([0.5, 0.6, 0.8])

    samples, stats = rl.build_samples([tr], c.algo, CFG, values_fn=values_fn)
    assert seen == [3] and stats["decisions"] == 3
    np.testing.assert_allclose([s.advantages[0] for s in samples], [0.23008, 0.264, 0.2],
                               rtol=1e-6)
    np.testing.assert_allclose([s.returns[0] for s in samples], [0.73008, 0.864, 1.0],
                               rtol=1e-6)
    np.testing.assert_allclose([s.old_values[0] for s in samples], [0.5, 0.6, 0.8], rtol=1e-6)
    assert all(s.token_weights is None for s in samples)


def test_ppo_cot_weights_thought_tokens_by_cot_lambda():
    rng = np.random.default_rng(1)
    tr = make_trajectory(rng, CFG, 2, action_len=(3, 3))
    c = _config(name="ppo_cot", cot_lambda=0.25)
    samples, _ = rl.build_samples([tr], c.algo, CFG, values_fn=lambda s: np.zeros(len(s)),
                                  thought_len=lambda ids: 2)
    for s in samples:
        np.testing.assert_allclose(s.token_weights, [0.25, 0.25, 1.0])


def test_care_consistency_bonus_by_hand():
    """Successes 0, 1, 3 (returns .9, .8, .5) with likelihoods -1, -3, -2: their mean is -2,
    so only episode 0 beats its high-accuracy peers: bonus = .5 * .9 = .45. Episode 2 failed
    (no bonus even with the best likelihood)."""
    from grow_jax.train.care import consistency_bonus

    b = consistency_bonus(np.array([0.9, 0.8, 0.0, 0.5]), np.array([1, 1, 0, 1]),
                          np.array([-1.0, -3.0, 0.0, -2.0]), 0.5)
    np.testing.assert_allclose(b, [0.45, 0.0, 0.0, 0.0])
    # one success: no peers, no bonus
    np.testing.assert_allclose(consistency_bonus(np.array([1.0, 0.0]), np.array([1, 0]),
                                                 np.array([0.0, -1.0]), 0.5), [0.0, 0.0])


def test_care_bonus_enters_grow_before_group_normalization():
    """Two successful episodes of 2 decisions (returns 1), one failed; the first has the
    higher EMA likelihood -> its return becomes 1.5, and GROW normalizes the result."""
    from grow_jax.algo import advantages as A

    rng = np.random.default_rng(2)
    trs = [make_trajectory(rng, CFG, 2, action_len=(1, 1)) for _ in range(3)]
    trs[2].success = False
    for s in trs[2].steps:
        s.reward = 0.0
    c = _config(name="grow", care_coef=0.5, drop_zero_advantage=False)
    lik = np.array([-1.0, -1.0, -3.0, -3.0, -9.0, -9.0])  # per sample, episode order
    samples, stats = rl.build_samples(trs, c.algo, CFG, likelihood_fn=lambda s: lik)
    want = A.estimate("grow", [[0, 1.5], [0, 1.0], [0, 0.0]], gamma=0.995)
    np.testing.assert_allclose([s.advantages[0] for s in samples], np.concatenate(want),
                               rtol=1e-6)
    assert stats["care_bonus_frac"] == 1 / 3
