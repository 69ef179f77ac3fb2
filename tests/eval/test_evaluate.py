"""Family evaluation over the whole Minecraft suite on the fake simulator, sharded across envs,
and its per-task resume after a crash: same report, only the missing tasks replayed."""

import json
import os
import zlib

import jax
import numpy as np
import pytest

from grow_jax.envs import make_tasks, minecraft
from grow_jax.envs.pool import EnvPool
from grow_jax.eval.evaluate import evaluate, read_results, write_report
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig

NOOP = minecraft.noop_groups()
ATTACK = NOOP.copy()
ATTACK[minecraft.GROUPS.index("attack")] = 1


class StandInAgent:
    """Prompt = the instruction's bytes; token 1 -> attack for a whole decision, 0 -> no-op."""

    history = 0

    def prompt_ids(self, instruction, shown, image_tokens):
        return np.frombuffer(instruction.encode(), np.uint8).astype(np.int32)

    def decode(self, ids):
        act = ATTACK if ids[0] == 1 else NOOP
        return np.stack([act] * 4), True, "attack" if ids[0] == 1 else "noop"


class StandInSampler:
    """Attacks on about 2 tasks in 3, a fixed choice per instruction (deterministic)."""

    config = Qwen2VLConfig.tiny()

    def sample(self, params, prompts, images, rng, row_ids=None):
        tokens = [np.array([int(zlib.crc32(p.tobytes()) % 3 != 0)], np.int32) for p in prompts]
        return tokens, [np.zeros(1, np.float32) for _ in prompts]


class Crash(RuntimeError):
    pass


def _pools(made, crash_at=None):
    def make_pool(per_env):
        if crash_at is not None and len(made) == crash_at:
            raise Crash("killed")
        made.append([t.task_id for t in per_env])
        return EnvPool(per_env, env_kwargs=dict(fake=True, obs_size=(32, 18)))

    return make_pool


def _eval(tasks, made, path=None, crash_at=None, episodes=1, num_envs=64):
    return evaluate(None, StandInAgent(), StandInSampler(), None, episodes_per_task=episodes,
                    seed_offset=1000, rng=jax.random.key(0), tasks=tasks,
                    make_pool=_pools(made, crash_at), num_envs=num_envs, results_path=path)


@pytest.mark.slow
def test_all_tasks_family_table_and_resume_after_a_crash(tmp_path):
    tasks = make_tasks("minecraft", max_steps=2)  # the whole suite, no filter
    assert len(tasks) == 823
    made = []
    ref, _ = _eval(tasks, made)
    assert sum(len(p) for p in made) == 823 and max(len(p) for p in made) <= 64
    assert ref["episodes"] == 823 and list(ref["families"]) == ["embodied", "gui", "combat",
                                                                 "interact"]  # fmt: skip
    counts = {f: r["tasks"] for f, r in ref["families"].items()}
    assert counts == {"embodied": 153, "gui": 596, "combat": 61, "interact": 13}
    rates = [r["success_rate"] for r in ref["tasks"].values()]
    assert 0 < np.mean(rates) < 1  # both outcomes occur, so the table is not degenerate
    for fam, r in ref["families"].items():
        mine = [t["success_rate"] for t in ref["tasks"].values() if t["family"] == fam]
        assert r["success_mean"] == pytest.approx(np.mean(mine))
        assert r["success_std"] == pytest.approx(np.std(mine))
    _, md = write_report(ref, str(tmp_path))
    text = open(md).read()
    assert "| embodied | 153 |" in text and "| gui | 596 |" in text and "| combat | 61 |" in text

    path = str(tmp_path / "eval_parts" / "all.jsonl")
    first = []
    with pytest.raises(Crash):
        _eval(tasks, first, path=path, crash_at=6)
    saved = read_results(path, _key())
    assert len(saved) == 6 * 64 == sum(len(p) for p in first)
    with open(path, "a") as f:
        f.write('{"fingerprint": "torn')  # a write cut short by the crash
    again = []
    resumed, trajs = _eval(tasks, again, path=path)
    replayed = {t for p in again for t in p}
    assert replayed == {t.task_id for t in tasks} - set(saved) and len(trajs) == 823 - 384
    ref.pop("rollout"), resumed.pop("rollout")
    assert resumed == ref
    lines = open(path).read().splitlines()
    assert sum(1 for ln in lines if ln.startswith("{") and ln.endswith("}")) == 823


def _key():
    from grow_jax.eval.evaluate import fingerprint

    return fingerprint(dict(episodes=1, seed_offset=1000))


def test_resume_on_a_fixed_pool_and_other_settings_start_afresh(tmp_path):
    tasks = minecraft.make_tasks(ids=["combat"], max_steps=2)[:3]
    pool = EnvPool([t for t in tasks for _ in range(2)], env_kwargs=dict(fake=True,
                                                                          obs_size=(32, 18)))
    path = str(tmp_path / "parts.jsonl")
    kw = dict(episodes_per_task=3, seed_offset=7, rng=jax.random.key(1), results_path=path)
    rep, trajs = evaluate(pool, StandInAgent(), StandInSampler(), None, **kw)
    assert rep["episodes"] == 9 and len(trajs) == 9
    assert {tr.seed for tr in trajs} == {7, 8, 9}
    rep2, trajs2 = evaluate(pool, StandInAgent(), StandInSampler(), None, **kw)
    assert trajs2 == [] and rep2["tasks"] == rep["tasks"]  # all read back, nothing replayed
    _, trajs3 = evaluate(pool, StandInAgent(), StandInSampler(), None,
                         **{**kw, "episodes_per_task": 2})
    assert len(trajs3) == 6  # other settings: earlier results are not reused
    recs = [json.loads(ln) for ln in open(path)]
    assert len(recs) == 6 and os.path.getsize(path) > 0
    pool.close()
    with pytest.raises(ValueError, match="either pool or tasks"):
        evaluate(None, StandInAgent(), StandInSampler(), None, **kw)


class KeyedSampler(StandInSampler):
    """Attacks or not by a hash of (key, row id): what an episode plays depends on the id
    evaluate gives it, as the real sampler's draws do."""

    def sample(self, params, prompts, images, rng, row_ids=None):
        kd = np.asarray(jax.random.key_data(rng)).tobytes()
        tokens = [np.array([int(zlib.crc32(kd + np.int64(r).tobytes()) % 3 != 0)], np.int32)
                  for r in row_ids]
        return tokens, [np.zeros(1, np.float32) for _ in prompts]


@pytest.mark.parametrize("sharded", [False, True])
def test_split_over_processes_merges_to_the_one_process_report(monkeypatch, sharded):
    """Two processes' shares (fewer envs each), merged, give the one-process report."""
    from grow_jax import distributed

    tasks = minecraft.make_tasks(ids=["combat"], max_steps=2)[:3]

    def run(process, n_env):
        kw = dict(episodes_per_task=5, seed_offset=7, rng=jax.random.key(1), process=process)
        if sharded:  # 2 tasks per shard, fresh pools
            return evaluate(None, StandInAgent(), KeyedSampler(), None, tasks=tasks,
                            num_envs=n_env, make_pool=_pools([]), **kw)
        pool = EnvPool([tasks[i % 3] for i in range(n_env)],
                       env_kwargs=dict(fake=True, obs_size=(32, 18)))
        try:
            return evaluate(pool, StandInAgent(), KeyedSampler(), None, **kw)
        finally:
            pool.close()

    one, _ = run((0, 1), 6 if not sharded else 4)
    parts = []
    monkeypatch.setattr(distributed, "allgather_objects", lambda obj: parts.append(obj) or [obj])
    _, trajs1 = run((1, 2), 3 if not sharded else 4)
    monkeypatch.setattr(distributed, "allgather_objects", lambda obj: [obj, parts[0]])
    merged, trajs0 = run((0, 2), 3 if not sharded else 4)
    assert {tr.seed for tr in trajs0} == {7, 8, 9} and {tr.seed for tr in trajs1} == {10, 11}
    assert one["rollout"]["env_steps"] == merged["rollout"]["env_steps"]
    one.pop("rollout"), merged.pop("rollout")
    assert merged == one and 0 < one["success_rate"] < 1
