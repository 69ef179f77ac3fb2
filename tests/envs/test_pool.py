"""EnvPool in-process and with worker processes, including a worker that dies."""

import os
import signal
import time

import numpy as np
import pytest

from grow_jax.envs import babyai, crafter
from grow_jax.envs.pool import EnvPool, EnvWorkerError


@pytest.fixture(scope="module")
def tasks():
    return babyai.make_tasks(ids=["BabyAI-GoToRedBallNoDists-v0"], seeds=[0, 1]) + (
        crafter.make_tasks(["collect_wood"], seeds=[2])
    )


def _rollout(pool, steps=4):
    obs = pool.reset()
    frames = [[o["image"] for o in obs]]
    for t in range(steps):
        obs, rew, term, _trunc, infos = pool.step([t % 3] * pool.num_envs)
        frames.append([o["image"] for o in obs])
        assert rew.shape == (pool.num_envs,) and term.dtype == bool
        assert all(isinstance(i["success"], bool) for i in infos)
    return frames


def test_sync_and_async_agree(tasks):
    with EnvPool(tasks, env_kwargs={"tile_size": 4}) as sync_pool:
        ref = _rollout(sync_pool)
        assert ref[0][0].shape == (28, 28, 3) and ref[0][2].shape == (64, 64, 3)
    with EnvPool(tasks, env_kwargs={"tile_size": 4}, mode="async", num_workers=2) as pool:
        assert len(pool.worker_pids) == 2
        got = _rollout(pool)
        for a, b in zip(ref, got):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
        # partial step / reset by index
        obs = pool.reset(seeds=[9], indices=[1])
        assert len(obs) == 1
        _, rew, *_ = pool.step([2], indices=[1])
        assert rew.shape == (1,)


def reused_frame_buffer(monkeypatch):
    """Makes the BabyAI renderer draw every frame into one array, as renderers that reuse
    a buffer do: only `make_obs`'s copy then keeps earlier observations intact."""
    render, buffer = babyai.render_pov, {}

    def into_one_buffer(*args, **kwargs):
        frame = render(*args, **kwargs)
        buf = buffer.setdefault("frame", np.empty_like(frame))
        buf[...] = frame
        return buf

    monkeypatch.setattr(babyai, "render_pov", into_one_buffer)


def test_sync_obs_are_copies(tasks, monkeypatch):
    reused_frame_buffer(monkeypatch)
    with EnvPool(tasks[:1]) as pool:
        (o0,) = pool.reset()
        keep = o0["image"].copy()
        (o1,), *_ = pool.step([0])  # turn left: the view changes
        assert not np.array_equal(o1["image"], keep)
        pool.step([0])
        np.testing.assert_array_equal(o0["image"], keep)


def test_dead_worker_is_reported_quickly(tasks):
    pool = EnvPool(tasks, mode="async", num_workers=2, timeout_s=60)
    pool.reset()
    victim = pool.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(EnvWorkerError, match=r"worker 0 .*BabyAI-GoToRedBallNoDists-v0.*died"):
        pool.step([0] * pool.num_envs)
    assert time.monotonic() - start < 5.0
    with pytest.raises(EnvWorkerError, match="closed"):
        pool.step([0] * pool.num_envs)


def test_worker_exception_names_env_and_task(tasks):
    with EnvPool(tasks, mode="async", num_workers=2, timeout_s=60) as pool:
        pool.reset()
        with pytest.raises(
            EnvWorkerError, match=r"(?s)env 2 \(task 'crafter:collect_wood'\).*Crafter"
        ):
            pool.step([0, 0, 99])


def test_stuck_worker_times_out(tasks):
    pool = EnvPool(tasks[:1], mode="async", num_workers=1, timeout_s=1.0)
    os.kill(pool.worker_pids[0], signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(EnvWorkerError, match="no answer to 'reset' within 1.0 s"):
            pool.reset()
        assert time.monotonic() - start < 4.0
    finally:
        pool.close()


def test_bad_arguments(tasks):
    with pytest.raises(ValueError, match="mode"):
        EnvPool(tasks, mode="threads")
    with EnvPool(tasks[:2]) as pool:
        with pytest.raises(ValueError, match="2 actions for 1 envs"):
            pool.step([0, 0], indices=[0])
        with pytest.raises(ValueError, match="indices"):
            pool.reset(indices=[5])
