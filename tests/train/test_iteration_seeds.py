"""rl.seeds_per_group: which world seed each episode of an iteration's groups plays."""

import numpy as np
import pytest

from grow_jax.config_utils import base_config
from grow_jax.train import rl
from grow_jax.train.trainer import iteration_seeds


def _config(groups=3, g=8, k=1):
    c = base_config()
    c.rl.groups_per_iter, c.rl.group_size, c.rl.seeds_per_group = groups, g, k
    return c


def test_same_seed_groups_by_default():
    s = iteration_seeds(_config(), 5).reshape(3, 8)
    assert all(len(set(row)) == 1 for row in s) and len(set(s[:, 0])) == 3
    assert (s < base_config().eval.seed_offset).all()  # never an evaluation seed
    assert not np.array_equal(s, iteration_seeds(_config(), 6).reshape(3, 8))


def test_several_seeds_per_group_in_equal_blocks():
    s = iteration_seeds(_config(k=4), 5).reshape(3, 4, 2)
    assert (s[..., 0] == s[..., 1]).all()  # G / k = 2 consecutive episodes per seed
    assert len(set(s[..., 0].ravel())) == 12  # 4 distinct seeds in each of 3 groups


@pytest.mark.parametrize("k", [0, 3])
def test_seeds_per_group_must_divide_the_group(k):
    with pytest.raises(ValueError, match=r"config error: rl.seeds_per_group must be >= 1 and "
                                         r"divide rl.group_size=8, got " + str(k)):
        rl.validate(_config(k=k))
