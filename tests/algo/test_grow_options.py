"""GROW's normalization switches (uniform-outcome groups, per-episode weighting)."""

import numpy as np
import pytest

from grow_jax.algo import advantages as A

# Two successes of different lengths: an all-success group.
ALL_SUCCESS = [np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0])]
MIXED = [np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0])]


def test_default_is_the_papers_formula():
    a = A.estimate("grow", ALL_SUCCESS, gamma=0.9)
    b = A.estimate("grow", ALL_SUCCESS, gamma=0.9, uniform_groups="normalize",
                   uniform_weight=0.3, length_norm=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # the paper's formula: full-size advantages in an all-success group
    assert np.abs(np.concatenate(a)).max() > 0.9


def test_skip_zeroes_all_success_and_equal_return_groups_only():
    skip = A.estimate("grow", ALL_SUCCESS, gamma=0.9, uniform_groups="skip")
    assert all(np.all(x == 0) for x in skip)
    equal = A.estimate("grow", [np.array([-0.1, 0.0]), np.array([0.0, -0.1])],
                       uniform_groups="skip")
    assert all(np.all(x == 0) for x in equal)
    mixed = A.estimate("grow", MIXED, gamma=0.9, uniform_groups="skip")
    ref = A.estimate("grow", MIXED, gamma=0.9)
    for x, y in zip(mixed, ref):
        np.testing.assert_array_equal(x, y)
    # failures with different (format-penalty) returns keep their signal
    penal = A.estimate("grow", [np.array([-0.1, 0.0]), np.array([0.0, 0.0])],
                       uniform_groups="skip")
    assert np.abs(np.concatenate(penal)).max() > 0


def test_scale_multiplies_uniform_groups():
    ref = A.estimate("grow", ALL_SUCCESS, gamma=0.9)
    half = A.estimate("grow", ALL_SUCCESS, gamma=0.9, uniform_groups="scale",
                      uniform_weight=0.25)
    for x, y in zip(half, ref):
        np.testing.assert_allclose(x, 0.25 * y)


def test_length_norm_weighs_episodes_equally():
    # per-decision rewards (gamma=1): [0, 0, 0, 1] and [0]: decision weights 1/4 and 1.
    rewards = [np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0])]
    x = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    w = np.array([0.25] * 4 + [1.0])
    mean = (w * x).sum() / w.sum()  # = 0.5: each episode counts once
    std = np.sqrt((w * (x - mean) ** 2).sum() / w.sum())
    got = np.concatenate(A.estimate("grow", rewards, gamma=1.0, length_norm=True, eps=0.0))
    np.testing.assert_allclose(got, (x - mean) / std)
    np.testing.assert_allclose(got, [1, 1, 1, 1, -1])
    plain = np.concatenate(A.estimate("grow", rewards, gamma=1.0, eps=0.0))
    assert not np.allclose(plain, got)
    nostd = np.concatenate(A.estimate("grow", rewards, gamma=1.0, length_norm=True,
                                      normalize_std=False))
    np.testing.assert_allclose(nostd, x - mean)


@pytest.mark.parametrize("params, msg", [
    (dict(uniform_groups="drop"), "uniform_groups must be one of"),
    (dict(uniform_weight=-1.0), "uniform_weight must be >= 0"),
])
def test_bad_switches_raise(params, msg):
    with pytest.raises(ValueError, match=msg):
        A.estimate("grow", MIXED, **params)
