"""RayEnvPool on a local Ray cluster (2 CPUs, 2 actors): the same resets, steps and rollout
trajectories as the in-process EnvPool; a killed or stopped actor is restarted or reported."""

import os
import signal
import sys
import time

import jax
import numpy as np
import pytest
from rollout_helpers import FirstTokenAgent, tiny_config  # tests/envs is on sys.path

from grow_jax.envs import babyai
from grow_jax.envs.pool import EnvPool, EnvWorkerError

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")

from grow_jax.envs.ray_pool import RayEnvPool, import_ray  # noqa: E402

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
KW = {"tile_size": 4}


@pytest.fixture(scope="module")
def session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tasks():
    return babyai.make_tasks(ids=[LEVEL], seeds=[0, 1, 2, 3], max_steps=4)


def _kill(actor):
    """ray.kill, then wait until the actor is gone (the kill lands asynchronously)."""
    ray.kill(actor)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=5.0)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.05)
    raise AssertionError("the actor still answers 30 s after ray.kill")


def _assert_same_obs(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert x["instruction"] == y["instruction"]
            np.testing.assert_array_equal(x["image"], y["image"])


def _assert_same_step(a, b):
    _assert_same_obs(a[0], b[0])
    for x, y in zip(a[1:4], b[1:4]):
        np.testing.assert_array_equal(x, y)
    assert a[4] == b[4]


def test_reset_and_step_match_in_process(session, tasks):
    rng = np.random.default_rng(0)
    with EnvPool(tasks, env_kwargs=KW) as ref, \
            RayEnvPool(tasks, env_kwargs=KW, num_actors=2) as pool:
        assert pool.num_envs == 4 and pool.tasks == ref.tasks and len(pool.worker_pids) == 2
        obs = pool.reset([10, 11, 12, 13])
        _assert_same_obs(obs, ref.reset([10, 11, 12, 13]))
        assert obs[0]["image"].flags.writeable and obs[0]["image"].flags.owndata
        done = np.zeros(4, bool)
        for _ in range(4):  # max_steps=4: every episode ends (truncated or solved)
            actions = [int(a) for a in rng.integers(0, 3, 4)]
            got = pool.step(actions)
            _assert_same_step(got, ref.step(actions))
            done |= got[2] | got[3]
        assert done.all()
        # a partial reset and step by index, across both actors
        _assert_same_obs(pool.reset([7, None], indices=[3, 0]), ref.reset([7, None], [3, 0]))
        _assert_same_step(pool.step([2, 1], indices=[0, 3]), ref.step([2, 1], indices=[0, 3]))
        with pytest.raises(ValueError, match="2 actions for 1 envs"):
            pool.step([0, 0], indices=[0])
    with pytest.raises(EnvWorkerError, match="closed"):
        pool.step([0] * 4)


def test_run_episodes_match_in_process(session, tmp_path):
    from grow_jax.rollout.loop import run_episodes
    from grow_jax.train.trainer import Run, rl_config_view

    c = tiny_config()
    c.env.kwargs = dict(KW)
    c.env.pool_mode = "ray"
    c.env.ray_actors = 2
    c.agent.max_new_tokens = 2
    run = Run(c, str(tmp_path))
    try:
        per_env = babyai.make_tasks(ids=[LEVEL], seeds=[0, 1], max_steps=5) * 2
        pool = run.pool("train", per_env)  # the env.pool_mode dispatch
        assert isinstance(pool, RayEnvPool) and len(pool.worker_pids) == 2
        params = run.learner("policy", rl_config_view(c)).init_state(seed=0).params
        agent, sampler = FirstTokenAgent(run.agent, lambda first, _: first % 3), run.sampler()
        kw = dict(seeds=[3, 4, 3, 4], groups=[0, 1, 0, 1], rng=jax.random.key(5))
        got = run_episodes(pool, agent, sampler, params, **kw)
        piped = run_episodes(pool, agent, sampler, params, pipeline=True, **kw)  # env.pipeline
        with EnvPool(per_env, env_kwargs=KW) as ref_pool:
            ref = run_episodes(ref_pool, agent, sampler, params, **kw)
    finally:
        run.close()
    assert len({tuple(s.action_ids) for tr in ref for s in tr.steps}) > 1  # actions vary
    assert {len(tr.steps) for tr in ref} != {1}
    for a, b in [*zip(got, ref), *zip(piped, ref, strict=True)]:
        assert (a.task_id, a.seed, a.success, a.terminated, a.truncated) == \
            (b.task_id, b.seed, b.success, b.terminated, b.truncated)
        assert len(a.steps) == len(b.steps)
        for s, t in zip(a.steps, b.steps):
            np.testing.assert_array_equal(s.action_ids, t.action_ids)
            np.testing.assert_array_equal(s.frame, t.frame)
            assert (s.reward, s.action_text) == (t.reward, t.action_text)


def test_sharded_eval_pools_follow_pool_mode(session, tasks, tmp_path):
    from grow_jax.config_utils import base_config
    from grow_jax.eval.evaluate import resume_kwargs

    c = base_config()
    c.env.pool_mode, c.env.ray_actors, c.env.kwargs = "ray", 2, dict(KW)
    with resume_kwargs(c, str(tmp_path), 0, tasks)["make_pool"](tasks[:3]) as pool:
        assert isinstance(pool, RayEnvPool) and len(pool.worker_pids) == 2
        assert pool.reset()[2]["image"].shape == (28, 28, 3)


def test_killed_actor_is_restarted(session, tasks):
    with EnvPool(tasks, env_kwargs=KW) as ref, \
            RayEnvPool(tasks, env_kwargs=KW, num_actors=2, fault_policy="drop") as pool:
        pool.reset([1, 2, 3, 4])
        ref.reset([1, 2, 3, 4])
        old = pool.worker_pids
        _kill(pool._actors[0])
        obs, rew, term, trunc, infos = pool.step([2, 2, 2, 2])
        ref_step = ref.step([2, 2, 2, 2])
        assert obs[:2] == [None, None] and trunc[:2].all() and not term[:2].any()
        assert rew[:2].tolist() == [0.0, 0.0]
        for info in infos[:2]:
            assert info["env_fault"].startswith(f"env actor 0 (pid {old[0]}) died during 'step'")
            assert info["env_fault"].endswith("restarted")
        _assert_same_obs(obs[2:], ref_step[0][2:])  # the other actor's envs play on
        assert pool.worker_pids[0] != old[0] and pool.worker_pids[1] == old[1]
        # the restarted envs lost their episode: a step before a reset is a faulted result
        (o, *_, infos) = pool.step([0], indices=[1])
        assert o == [None] and "not reset since" in infos[0]["env_fault"]
        assert pool.num_faults == 3
        _assert_same_obs(pool.reset([8, 9], indices=[0, 1]), ref.reset([8, 9], indices=[0, 1]))
        _assert_same_step(pool.step([1, 2], indices=[0, 1]), ref.step([1, 2], indices=[0, 1]))


def test_killed_actor_raises_under_raise_policy(session, tasks):
    pool = RayEnvPool(tasks, env_kwargs=KW, num_actors=2)
    pool.reset()
    _kill(pool._actors[1])
    start = time.monotonic()
    with pytest.raises(EnvWorkerError, match=rf"env actor 1 .*\[2:{LEVEL}, 3:{LEVEL}\] died"):
        pool.step([0] * 4)
    assert time.monotonic() - start < 5.0
    with pytest.raises(EnvWorkerError, match="closed"):
        pool.reset()


def test_too_many_faults_in_a_row_stop(session, tasks):
    pool = RayEnvPool(tasks[:2], env_kwargs=KW, num_actors=1, fault_policy="fail",
                      max_faults_in_a_row=2)
    pool.reset([5, 6])
    _kill(pool._actors[0])
    pool.step([0, 0])  # fault 1: restarted
    with pytest.raises(EnvWorkerError, match=rf"env 0 \(task '{LEVEL}', seed 5\) faulted 2 "
                                             r"times in a row.*not reset since"):
        pool.step([0, 0])


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")
def test_hung_actor_times_out_and_restarts(session, tasks):
    with RayEnvPool(tasks[:1], env_kwargs=KW, num_actors=1, timeout_s=1.0,
                    fault_policy="drop") as pool:
        pool.reset()
        hung = pool.worker_pids[0]
        os.kill(hung, signal.SIGSTOP)  # on this machine: the local cluster
        try:
            start = time.monotonic()
            obs, *_, infos = pool.step([2])
            assert time.monotonic() - start < 60.0  # 1 s wait + a fresh actor's start-up
            assert obs == [None]
            assert "no answer to 'step' within 1.0 s; restarted" in infos[0]["env_fault"]
            assert pool.worker_pids[0] != hung
            assert pool.reset()[0]["image"].shape == (28, 28, 3)
        finally:
            try:
                os.kill(hung, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_bad_arguments_and_missing_ray(monkeypatch, tasks):
    with pytest.raises(ValueError, match="fault_policy"):
        RayEnvPool(tasks, fault_policy="retry")
    with pytest.raises(ValueError, match=r"env.ray_actors"):
        RayEnvPool(tasks, num_actors=0)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"grow_jax\[ray\]"):
        import_ray()
