"""Advantage estimators against numbers computed by hand (arithmetic in the comments)."""

import numpy as np
import pytest

from grow_jax.algo import advantages as A
from grow_jax.algo.registry import REQUIRED, Registry


def check(got, expected, tol=1e-12):
    assert [len(g) for g in got] == [len(e) for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------ grow


def test_grow_outcome_gamma1_std():
    # gamma=1: every decision of ep0 gets R=1, of ep1 gets 0 -> flat [1,1,1,0,0]
    # mean 0.6, population std sqrt(0.6*0.4)=sqrt(0.24); (1-0.6)/(sqrt(.24)+1e-6) etc.
    adv = A.estimate("grow", [[0, 0, 1], [0, 0]], gamma=1.0)
    hi, lo = 0.8164949142644615, -1.2247423713966923
    check(adv, [[hi, hi, hi], [lo, lo]])


def test_grow_outcome_gamma_half_includes_length_one_episode():
    # gamma=0.5, r_{i,t} = 0.5^(H_i-1-t) R_i:
    # ep0 R=1 H=3 -> [.25, .5, 1]; ep1 R=2 H=2 -> [1, 2]; ep2 R=0 H=1 -> [0]
    # sum 4.75, mean 19/24; centered: 6/24-19/24=-13/24, 12/24-19/24=-7/24, 5/24, 5/24,
    # 48/24-19/24=29/24, -19/24
    adv = A.estimate("grow", [[0, 0, 1], [0, 2], [0]], gamma=0.5, normalize_std=False)
    check(adv, [[-13 / 24, -7 / 24, 5 / 24], [5 / 24, 29 / 24], [-19 / 24]])


def test_grow_discounted_vs_outcome_dense_rewards():
    rewards = [[1, 0, 1], [0, 1]]
    # discounted, gamma .5: rtg ep0 = [1+0+.25, 0+.5, 1] = [1.25,.5,1]; ep1 = [.5, 1]
    # sum 4.25, mean .85 -> [.4, -.35, .15], [-.35, .15]
    adv = A.estimate("grow", rewards, gamma=0.5, return_type="discounted", normalize_std=False)
    check(adv, [[0.4, -0.35, 0.15], [-0.35, 0.15]])
    # outcome: ep0 R=2 -> [.5, 1, 2]; ep1 R=1 -> [.5, 1]; sum 5, mean 1
    adv = A.estimate("grow", rewards, gamma=0.5, return_type="outcome", normalize_std=False)
    check(adv, [[-0.5, 0.0, 1.0], [-0.5, 0.0]])


def test_grow_discounted_equals_outcome_for_terminal_rewards():
    rewards = [[0, 0, 0, 1], [0, 0], [0, 0, 1]]
    a = A.estimate("grow", rewards, gamma=0.9, return_type="outcome")
    b = A.estimate("grow", rewards, gamma=0.9, return_type="discounted")
    check(a, b)


def test_grow_single_episode_group_normalizes_within_episode():
    # one episode [0,0,1], gamma .5 -> r=[.25,.5,1], mean 7/12 -> [-1/3, -1/12, 5/12]
    check(
        A.estimate("grow", [[0, 0, 1]], gamma=0.5, normalize_std=False), [[-1 / 3, -1 / 12, 5 / 12]]
    )
    # a single decision: nothing to compare with -> exactly 0
    check(A.estimate("grow", [[1.0]]), [[0.0]], tol=0)


def test_grow_all_equal_is_exactly_zero():
    for rewards, gamma in [
        ([[0, 0], [0], [0, 0, 0]], 0.995),  # all failed
        ([[0, 1], [0, 0, 1]], 1.0),
    ]:  # all succeeded, gamma=1
        adv = A.estimate("grow", rewards, gamma=gamma)
        for a in adv:
            assert np.all(a == 0.0) and not np.any(np.isnan(a))


def test_grow_all_success_gamma_below_one_sharpens_credit():
    # all succeeded but gamma<1: later decisions (nearer success) get positive advantage
    adv = A.estimate("grow", [[0, 1], [0, 0, 1]], gamma=0.5, normalize_std=False)
    # r: [.5, 1], [.25, .5, 1]; mean 3.25/5 = .65
    check(adv, [[-0.15, 0.35], [-0.4, -0.15, 0.35]])


# ------------------------------------------------------------------- grpo_traj


def test_grpo_traj_broadcasts_episode_advantage():
    # R = [1, 0, 1, 0]: mean .5, std .5 -> +-.5/(.5+1e-6) = +-0.999998000004
    adv = A.estimate("grpo_traj", [[0, 1], [0, 0], [0, 0, 1], [0]])
    p, n = 0.999998000004, -0.999998000004
    check(adv, [[p, p], [n, n], [p, p, p], [n]])


def test_grpo_traj_equal_returns_and_single_episode_are_exactly_zero():
    # 0.1 * 3 in float: mean != 0.1 exactly, yet advantages must be exactly 0
    for rewards in ([[0.1], [0.1], [0.1]], [[0.5, 0.25], [0.75], [0.25, 0.5]], [[0, 1]]):
        for a in A.estimate("grpo_traj", rewards):
            assert np.all(a == 0.0)


# ----------------------------------------------------------------------- tgrpo


def test_tgrpo_step_plus_trajectory():
    rewards = [[0, 1], [0, 0, 1], [0]]
    # step t=0: [0,0,0] -> 0; t=1 (ep0, ep1): [1, 0] -> [.5, -.5]; t=2 only ep1 -> 0
    # traj: R = [1, 1, 0], mean 2/3 -> [1/3, 1/3, -2/3]
    # alpha1=2, alpha2=.5: ep0 [0 + 1/6, 1 + 1/6]; ep1 [1/6, -1 + 1/6, 1/6]; ep2 [-1/3]
    adv = A.estimate("tgrpo", rewards, alpha1=2.0, alpha2=0.5, normalize_std=False)
    check(adv, [[1 / 6, 7 / 6], [1 / 6, -5 / 6, 1 / 6], [-1 / 3]])


def test_tgrpo_defaults_alpha_one():
    # [[0,1],[0,0,1],[1]]: t=0 [0,0,1] -> [-1/3,-1/3,2/3]; t=1 [1,0] -> [.5,-.5]; t=2 -> 0
    # traj: R all 1 -> 0
    adv = A.estimate("tgrpo", [[0, 1], [0, 0, 1], [1]], normalize_std=False)
    check(adv, [[-1 / 3, 0.5], [-1 / 3, -0.5, 0.0], [2 / 3]])


# ----------------------------------------------------------------------- gigpo


GIGPO_REWARDS = [[0, 1], [0, 0, 1], [0]]
GIGPO_KEYS = [["a", "b"], ["a", "c", "b"], ["d"]]


def test_gigpo_mean_norm_cross_steps_default():
    # verl-agent's defaults: mode mean_norm, episode statistics over every decision row.
    # gamma .5 returns-to-go: ep0 [.5, 1]; ep1 [.25, .5, 1]; ep2 [0]
    # anchor a: (0,0)=.5, (1,0)=.25 -> mean .375 -> [+.125, -.125]
    # anchor b: (0,1)=1, (1,2)=1 -> 0;  c, d singletons -> 0
    # episode: R = [1, 1, 0] counted per decision: [1,1, 1,1,1, 0] -> mean 5/6
    #   -> [1/6, 1/6, -5/6]
    adv = A.estimate("gigpo", GIGPO_REWARDS, obs_keys=GIGPO_KEYS, gamma=0.5)
    check(adv, [[1 / 6 + 0.125, 1 / 6], [1 / 6 - 0.125, 1 / 6, 1 / 6], [-5 / 6]])


def test_gigpo_mean_norm_per_episode():
    # cross_steps=False: each episode once, R = [1, 1, 0] -> mean 2/3 -> [1/3, 1/3, -2/3]
    adv = A.estimate("gigpo", GIGPO_REWARDS, obs_keys=GIGPO_KEYS, gamma=0.5, cross_steps=False)
    check(adv, [[1 / 3 + 0.125, 1 / 3], [1 / 3 - 0.125, 1 / 3, 1 / 3], [-2 / 3]])


def test_gigpo_mean_std_norm_both_episode_normalizations_and_omega():
    # mean_std_norm uses the unbiased std (ddof 1), + 1e-6.
    # anchor a: values [.5, .25], std = sqrt(2 * .125^2 / 1) = .1767767 -> +-.125/(.1767767+1e-6)
    s = 0.125 / (np.sqrt(2 * 0.125**2) + 1e-6)
    # cross_steps=True: [1,1,1,1,1,0]: mean 5/6, var = (5*(1/6)^2 + (5/6)^2)/5 = 1/6
    sd = np.sqrt(1 / 6) + 1e-6
    e, f = (1 / 6) / sd, (-5 / 6) / sd
    adv = A.estimate("gigpo", GIGPO_REWARDS, obs_keys=GIGPO_KEYS, gamma=0.5, omega=2.0,
                     mode="mean_std_norm")
    check(adv, [[e + 2 * s, e], [e - 2 * s, e, e], [f]], tol=1e-10)
    # cross_steps=False: [1, 1, 0]: mean 2/3, var = (2*(1/3)^2 + (2/3)^2)/2 = 1/3
    sd = np.sqrt(1 / 3) + 1e-6
    e, f = (1 / 3) / sd, (-2 / 3) / sd
    adv = A.estimate("gigpo", GIGPO_REWARDS, obs_keys=GIGPO_KEYS, gamma=0.5, omega=2.0,
                     mode="mean_std_norm", cross_steps=False)
    check(adv, [[e + 2 * s, e], [e - 2 * s, e, e], [f]], tol=1e-10)


def test_gigpo_singleton_group():
    # one episode of 2 decisions, R = 2; its anchor groups are singletons -> step term 0.
    # cross_steps=False: a group of one -> mean 0, std 1 (verl-agent): 2 / (1 + 1e-6).
    adv = A.estimate("gigpo", [[0.0, 2.0]], obs_keys=[["a", "b"]], mode="mean_std_norm",
                     cross_steps=False)
    check(adv, [[2 / (1 + 1e-6), 2 / (1 + 1e-6)]])
    # cross_steps=True: the episode counts once per decision, [2, 2] -> mean 2 -> 0.
    check(A.estimate("gigpo", [[0.0, 2.0]], obs_keys=[["a", "b"]]), [[0.0, 0.0]])


def test_gigpo_key_shape_errors():
    with pytest.raises(ValueError, match=r"obs_keys\[1\] has 2 entries, rewards\[1\] has 3"):
        A.estimate("gigpo", GIGPO_REWARDS, obs_keys=[["a", "b"], ["a", "c"], ["d"]])
    with pytest.raises(ValueError, match="obs_keys has 1 episodes"):
        A.estimate("gigpo", GIGPO_REWARDS, obs_keys=[["a", "b"]])


# ------------------------------------------------------------------------- ppo


def test_gae_terminated_episode():
    # gamma=lam=.5, rewards [1, 0], values [.5, .25, 0] (terminated -> bootstrap 0)
    # delta0 = 1 + .5*.25 - .5 = .625; delta1 = 0 + 0 - .25 = -.25
    # A1 = -.25; A0 = .625 + .25*(-.25) = .5625; returns = A + V = [1.0625, 0]
    adv, ret = A.gae([[1, 0]], [[0.5, 0.25, 0.0]], gamma=0.5, lam=0.5)
    check(adv, [[0.5625, -0.25]])
    check(ret, [[1.0625, 0.0]])
    check(A.estimate("ppo", [[1, 0]], values=[[0.5, 0.25, 0.0]], gamma=0.5, lam=0.5), adv)


def test_gae_lambda_one_is_monte_carlo_with_bootstrap():
    # gamma=lam=1, rewards [1, 2], values [1, 1, 3] (truncated, bootstrap 3):
    # delta = [1+1-1, 2+3-1] = [1, 4]; A = [5, 4] = (1+2+3) - V = [6-1, 5-1]; returns [6, 5]
    # second episode of length 1: delta = 2 + 0 - .5 = 1.5
    adv, ret = A.gae([[1, 2], [2]], [[1, 1, 3], [0.5, 0]], gamma=1.0, lam=1.0)
    check(adv, [[5.0, 4.0], [1.5]])
    check(ret, [[6.0, 5.0], [2.0]])


def test_gae_value_length_checked():
    with pytest.raises(ValueError, match=r"values\[0\] must have H_i \+ 1 = 3 entries, got 2"):
        A.estimate("ppo", [[1, 0]], values=[[0.5, 0.25]])


# ------------------------------------------------------------- registry / checks


def test_registry_lists_and_rejects():
    assert set(A.estimator_names()) == {"grow", "grpo_traj", "tgrpo", "gigpo", "ppo", "ppo_cot"}
    assert A.estimator_params("grow") == {
        "gamma": 0.995,
        "return_type": "outcome",
        "normalize_std": True,
        "eps": 1e-6,
        "uniform_groups": "normalize",
        "uniform_weight": 1.0,
        "length_norm": False,
    }
    assert A.estimator_params("gigpo")["obs_keys"] is REQUIRED
    with pytest.raises(
        ValueError,
        match="unknown advantage estimator 'grwo'; registered: gigpo, grow, grpo_traj, ppo, "
        "ppo_cot, tgrpo",
    ):
        A.estimate("grwo", [[1.0]])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['gama'\]"):
        A.estimate("grow", [[1.0]], gama=0.9)
    with pytest.raises(ValueError, match=r"requires parameter\(s\) \['obs_keys'\]"):
        A.estimate("gigpo", [[1.0]])


def test_registry_duplicate_name():
    reg = Registry("thing")
    reg.register("x")(lambda: 0)
    with pytest.raises(ValueError, match="thing 'x' is already registered"):
        reg.register("x")(lambda: 1)


@pytest.mark.parametrize(
    "name,params,msg",
    [
        ("grow", {"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ("grow", {"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
        ("grow", {"return_type": "mc"}, "return_type must be 'outcome' or 'discounted'"),
        ("grpo_traj", {"eps": -1.0}, "eps must be >= 0"),
        ("tgrpo", {"normalize_std": "yes"}, "normalize_std must be a bool"),
        ("ppo", {"values": [[0, 0]], "lam": 2.0}, r"lam must be in \[0, 1\]"),
    ],
)
def test_invalid_param_values(name, params, msg):
    with pytest.raises(ValueError, match=msg):
        A.estimate(name, [[1.0]], **params)


@pytest.mark.parametrize(
    "rewards,msg",
    [
        ([], "empty group"),
        ([[1.0], []], r"rewards\[1\]: expected a non-empty 1-D array, got shape \(0,\)"),
        ([[[1.0]]], r"rewards\[0\]: expected a non-empty 1-D array, got shape \(1, 1\)"),
        ([[np.nan]], r"rewards\[0\]: contains non-finite"),
        (np.zeros(3), "expected a list of 1-D arrays"),
    ],
)
def test_bad_groups_raise(rewards, msg):
    with pytest.raises(ValueError, match=msg):
        A.estimate("grow", rewards)


def test_drop_zero_advantage():
    mask = A.drop_zero_advantage([[0.0, 0.5], [1e-10], [-0.3]])
    assert [m.tolist() for m in mask] == [[True, False], [True], [False]]
    # an all-failed group: every decision is dropped
    adv = A.estimate("grow", [[0, 0], [0]])
    assert all(m.all() for m in A.drop_zero_advantage(adv))


def test_equal_length_group_as_2d_array():
    # a [G, H] array is G episodes of H decisions: R = [1, 0]
    # mean .5, std .5 -> +-0.999998000004
    adv = A.estimate("grpo_traj", np.array([[0.0, 1.0], [0.0, 0.0]]))
    check(adv, [[0.999998000004] * 2, [-0.999998000004] * 2])


def test_estimate_importable_from_the_package_without_jax():
    import subprocess
    import sys

    code = ("import sys; from grow_jax.algo import estimate; "
            "a = estimate('grow', [[0, 1], [0]]); assert 'jax' not in sys.modules; print(len(a))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr
