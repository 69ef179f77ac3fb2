"""Env faults: a worker or env that raises, crashes or hangs is restarted, its episode is
dropped or failed, the faults are counted, and too many in a row stop with one line."""

import numpy as np
import pytest
from faulty_env import make_faulty_env  # tests/envs is on sys.path (and the workers')

from grow_jax.envs import babyai
from grow_jax.envs.pool import EnvFaultLimit, EnvPool
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.rollout.loop import RolloutStats, run_episodes

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
BAD_SEED = 5


@pytest.fixture(scope="module")
def tasks():
    return babyai.make_tasks(ids=[LEVEL], seeds=[0, 1, 2])


def _pool(tasks, mode, fault, policy="drop", fault_step=2, **kw):
    kwargs = dict(tile_size=4, fault=fault, fault_seeds=[BAD_SEED], fault_step=fault_step)
    extra = dict(num_workers=len(tasks)) if mode == "async" else {}
    return EnvPool(tasks, env_kwargs=kwargs, mode=mode, fault_policy=policy,
                   env_factory=make_faulty_env, **extra, **kw)


CASES = [("sync", "raise"), ("async", "raise"), ("async", "crash"), ("async", "hang")]
REASON = {"raise": "injected fault", "crash": "died", "hang": "no answer to 'step'"}


@pytest.mark.parametrize(("mode", "fault"), CASES)
def test_faulted_env_is_restarted_and_the_pool_goes_on(tasks, mode, fault):
    with _pool(tasks, mode, fault, timeout_s=3.0) as pool:
        pool.reset([0, BAD_SEED, 1])
        pool.step([2, 2, 2])
        obs, rew, term, trunc, infos = pool.step([2, 2, 2])  # env 1's step 2 faults
        assert obs[1] is None and rew[1] == 0 and trunc[1] and not term[1]
        assert REASON[fault] in infos[1]["env_fault"] and "\n" not in infos[1]["env_fault"]
        assert obs[0] is not None and obs[2] is not None and "env_fault" not in infos[0]
        assert pool.num_faults == 1
        _, _, _, _, infos = pool.step([2], indices=[1])  # not reset since: faulted again
        assert "not reset" in infos[0]["env_fault"] and pool.num_faults == 2
        obs = pool.reset([3, 4, 6])  # the restarted env plays a new episode normally
        assert all(o is not None for o in obs)
        _, _, _, _, infos = pool.step([2, 2, 2])
        assert not any("env_fault" in i for i in infos)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_too_many_faults_in_a_row_stop_with_task_and_seed(tasks, mode):
    pool = _pool(tasks, mode, "raise", fault_step=0, max_faults_in_a_row=2)
    assert pool.reset([BAD_SEED, 0, 1])[0] is None
    with pytest.raises(EnvFaultLimit) as e:
        pool.reset([BAD_SEED, 0, 1])
    msg = str(e.value)
    assert "\n" not in msg and f"task '{LEVEL}', seed {BAD_SEED}" in msg and "2 times" in msg
    pool.close()


def test_raise_policy_keeps_the_old_behaviour(tasks):
    with _pool(tasks, "sync", "raise", policy="raise") as pool:
        pool.reset([BAD_SEED, 0, 1])
        pool.step([2, 2, 2])
        with pytest.raises(RuntimeError, match="injected fault"):
            pool.step([2, 2, 2])


class _Agent:
    history = 0

    def prompt_ids(self, instruction, shown, image_tokens):
        return np.arange(1, 4 + image_tokens, dtype=np.int32)

    def decode(self, ids):
        return 2, True, "forward"


class _Sampler:
    config = Qwen2VLConfig.tiny()

    def sample(self, params, prompts, images, rng, row_ids=None):
        return [np.array([7, 8])] * len(prompts), [np.zeros(2, np.float32)] * len(prompts)


@pytest.mark.parametrize(("mode", "policy"), [("sync", "drop"), ("sync", "fail"),
                                              ("async", "drop")])
def test_rollout_drops_or_fails_the_faulted_episode(tasks, mode, policy):
    import jax

    with _pool(tasks, mode, "raise", policy=policy) as pool:
        stats = RolloutStats()
        trajs = run_episodes(pool, _Agent(), _Sampler(), None, seeds=[0, BAD_SEED, 1],
                             groups=[0, 0, 0], rng=jax.random.key(0), stats=stats)
    assert stats.env_faults == 1
    if policy == "drop":
        assert [t.seed for t in trajs] == [0, 1]
    else:
        assert [t.seed for t in trajs] == [0, BAD_SEED, 1]
        assert not trajs[1].success and trajs[1].truncated and trajs[1].length == 1
    assert all(t.length > 1 for t in trajs if t.seed != BAD_SEED)


def test_workers_ignore_group_signals(tasks):
    """Ctrl-C / SIGTERM sent to the whole process group reach the workers too: they must
    survive so the parent can finish its iteration and stop gracefully."""
    import os
    import signal

    with EnvPool(tasks, env_kwargs={"tile_size": 4}, mode="async", num_workers=3) as pool:
        pool.reset([0, 1, 2])
        for pid in pool.worker_pids:
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)
        _, _, _, _, infos = pool.step([2, 2, 2])
        assert all(p.is_alive() for p in pool._procs) and pool.num_faults == 0
        assert not any("env_fault" in i for i in infos)
