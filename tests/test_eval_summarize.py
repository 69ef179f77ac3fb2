"""eval.evaluate.summarize against numbers worked out by hand."""

import numpy as np
import pytest

from grow_jax.eval.evaluate import summarize
from grow_jax.rollout.types import Step, Trajectory


def _traj(task_id, family, length, success, invalid=0):
    steps = [Step(frame=np.zeros((1, 1, 3), np.uint8), prompt_ids=np.zeros(1, np.int32),
                  action_ids=np.zeros(1, np.int32), logprobs=np.zeros(1, np.float32),
                  invalid=i < invalid) for i in range(length)]
    return Trajectory(task_id=task_id, instruction="", seed=0, group=0, steps=steps,
                      success=success, family=family)


def test_summarize_by_hand():
    trajs = [
        _traj("a", "F", 2, True), _traj("a", "F", 4, False, invalid=2),  # a: 1/2, steps 3
        _traj("b", "F", 6, False), _traj("b", "F", 6, False),  # b: 0/2, steps 6
        _traj("c", "G", 1, True, invalid=1),  # c: 1/1, steps 1
    ]
    r = summarize(trajs)
    assert r["episodes"] == 5
    assert r["success_rate"] == pytest.approx(2 / 5)  # episode-level
    assert r["mean_steps"] == pytest.approx((2 + 4 + 6 + 6 + 1) / 5)
    assert list(r["tasks"]) == ["a", "b", "c"]
    assert r["tasks"]["a"] == dict(family="F", episodes=2, success_rate=0.5, mean_steps=3.0,
                                   invalid_rate=pytest.approx(2 / 6))
    assert r["tasks"]["b"]["success_rate"] == 0.0 and r["tasks"]["b"]["invalid_rate"] == 0.0
    assert r["tasks"]["c"]["invalid_rate"] == 1.0
    f, g = r["families"]["F"], r["families"]["G"]
    assert f["tasks"] == 2 and f["success_mean"] == pytest.approx(0.25)  # mean of 0.5 and 0
    assert f["success_std"] == pytest.approx(0.25) and f["mean_steps"] == pytest.approx(4.5)
    assert g == dict(tasks=1, success_mean=1.0, success_std=0.0, mean_steps=1.0)
