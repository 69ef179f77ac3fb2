"""The fast BabyAI frame renderer equals minigrid's RGBImgPartialObsWrapper pixel for pixel."""

import gymnasium as gym
import numpy as np
import pytest
from minigrid.wrappers import RGBImgPartialObsWrapper

from grow_jax.envs import make_env, make_tasks


@pytest.mark.parametrize("level", ["BabyAI-GoToRedBallNoDists-v0", "BabyAI-PickupLoc-v0",
                                   "BabyAI-UnlockLocal-v0"])
@pytest.mark.parametrize("tile_size", [4, 8])
def test_frames_equal_minigrid_wrapper(level, tile_size):
    (task,) = make_tasks("babyai", ids=[level], seeds=[0])
    ours = make_env(task, tile_size=tile_size)
    ref = RGBImgPartialObsWrapper(gym.make(level), tile_size=tile_size)
    rng = np.random.default_rng(0)
    for episode in range(3):
        obs = ours.reset(episode)
        ref_obs, _ = ref.reset(seed=episode)
        np.testing.assert_array_equal(obs["image"], ref_obs["image"])
        for _ in range(40):  # random actions incl. pickup/drop/toggle: carried objects, doors
            a = int(rng.integers(7))
            obs, r, term, trunc, _ = ours.step(a)
            ref_obs, r2, term2, trunc2, _ = ref.step(a)
            np.testing.assert_array_equal(obs["image"], ref_obs["image"])
            assert (r, term, trunc) == (r2, term2, trunc2)
            if term or trunc:
                break
