"""Success rate per task and per family on held-out seeds, as the paper reports it:
mean ± std over tasks of the per-task success rate, and mean steps of the episodes.

Large suites (the 823 Minecraft tasks) run in shards of at most `num_envs` envs, each shard a
fresh pool; with `results_path`, every finished task's episodes are appended to that JSON-lines
file in one atomic write, so an evaluation that dies resumes with the missing tasks only and
reports exactly what an uninterrupted one would.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from grow_jax.io_utils import atomic_write
from grow_jax.rollout.loop import RolloutStats, run_episodes
from grow_jax.rollout.types import Trajectory

# Families the paper's Minecraft table reports (GUI = craft + smelt); others are listed after.
PAPER_FAMILIES = ("embodied", "gui", "combat")


def episode_record(tr: Trajectory) -> dict:
    """What the report needs of one episode (JSON-serializable)."""
    return dict(task_id=tr.task_id, family=tr.family, seed=int(tr.seed), success=bool(tr.success),
                length=int(tr.length), invalid=int(sum(s.invalid for s in tr.steps)))


def summarize(episodes: Sequence[Trajectory | Mapping]) -> dict:
    """Per-task and per-family success/steps, plus the overall episode success rate.
    `episodes`: trajectories or their `episode_record`s."""
    recs = [episode_record(e) if isinstance(e, Trajectory) else e for e in episodes]
    by_task = collections.defaultdict(list)
    for r in recs:
        by_task[r["task_id"]].append(r)
    tasks = {}
    for tid, rs in sorted(by_task.items()):
        steps = sum(r["length"] for r in rs)
        tasks[tid] = dict(family=rs[0]["family"], episodes=len(rs),
                          success_rate=float(np.mean([r["success"] for r in rs])),
                          mean_steps=float(np.mean([r["length"] for r in rs])),
                          invalid_rate=float(sum(r["invalid"] for r in rs) / steps) if steps
                          else 0.0)  # fmt: skip
    fams = collections.defaultdict(list)
    for r in tasks.values():
        fams[r["family"]].append(r)
    order = [f for f in PAPER_FAMILIES if f in fams] + sorted(set(fams) - set(PAPER_FAMILIES))
    families = {f: dict(tasks=len(fams[f]),
                        success_mean=float(np.mean([r["success_rate"] for r in fams[f]])),
                        success_std=float(np.std([r["success_rate"] for r in fams[f]])),
                        mean_steps=float(np.mean([r["mean_steps"] for r in fams[f]])))
                for f in order}  # fmt: skip
    return dict(episodes=len(recs), success_rate=float(np.mean([r["success"] for r in recs])),
                mean_steps=float(np.mean([r["length"] for r in recs])), tasks=tasks,
                families=families)


def fingerprint(settings: Mapping) -> str:
    """Short hash of the settings an evaluation's results depend on."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def read_results(path: str, key: str) -> dict[str, list[dict]]:
    """task_id -> episode records of `path` written under fingerprint `key` (a torn last line
    or other settings' lines are skipped)."""
    done: dict[str, list[dict]] = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("fingerprint") == key:
                done[rec["task_id"]] = rec["episodes"]
    return done


def append_results(path: str, key: str, per_task: Mapping[str, list[dict]]) -> None:
    """One line per task, all in a single O_APPEND write followed by fsync."""
    if not per_task:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = "".join(json.dumps(dict(fingerprint=key, task_id=t, episodes=e)) + "\n"
                   for t, e in per_task.items())  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with open(path, "rb") as f:  # a torn line from a killed writer must not join ours
            f.seek(0, os.SEEK_END)
            if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                text = "\n" + text
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def plan_shards(tasks, episodes_per_task: int, num_envs: int) -> list[list]:
    """Consecutive task chunks, each played on at most `num_envs` envs (every task of a chunk
    gets min(episodes, num_envs // chunk size) envs); fixed by the task list alone, so a
    resumed evaluation plays the same shards."""
    per = max(1, num_envs // max(1, episodes_per_task))
    return [list(tasks[i:i + per]) for i in range(0, len(tasks), per)]


def shard_envs(shard, episodes_per_task: int, num_envs: int) -> list:
    slots = max(1, min(episodes_per_task, num_envs // len(shard)))
    return [t for t in shard for _ in range(slots)]


def evaluate(pool, agent, sampler, params, *, episodes_per_task: int, seed_offset: int,
             rng: jax.Array, format_penalty: float = 0.0, results_path: str | None = None,
             settings: Mapping | None = None, tasks: Sequence | None = None,
             make_pool: Callable[[list], object] | None = None,
             num_envs: int | None = None,
             process: tuple[int, int] = (0, 1)) -> tuple[dict, list[Trajectory]]:
    """Plays `episodes_per_task` episodes of every task on held-out seeds (seed_offset +
    episode index, so every policy is evaluated on the same worlds).

    Episode k of the task at position j samples with id j * episodes_per_task + k (its
    tokens do not depend on the round or process playing it). `process=(p, P)`, P > 1:
    this call plays its contiguous share of each task's episodes (`pool` / `num_envs` are
    this process's), keeps its own resume file, and the report merges every process's
    records (a collective: all P processes call evaluate together).

    Either `pool` (an EnvPool whose envs cover its tasks; reused round after round) or
    `tasks` + `make_pool(tasks_per_env)` + `num_envs`: the tasks are played shard by shard,
    each on a fresh pool that is closed after it. `results_path` makes the evaluation
    resumable per task; `settings` (default: episodes and seed offset) must match for earlier
    results to be reused. Returns the report and the trajectories played by this call.
    """
    if (pool is None) == (tasks is None):
        raise ValueError("evaluate needs either pool or tasks (with make_pool and num_envs)")
    if tasks is not None and (make_pool is None or not num_envs):
        raise ValueError("evaluate(tasks=...) needs make_pool and num_envs")
    from grow_jax import distributed

    index, count = process
    share = distributed.split_range(episodes_per_task, count, index)
    plan_envs = num_envs  # shards are planned for the whole run's envs
    if count > 1:  # per-process resume files, valid only for the same split
        settings = dict(settings or {}, process=[index, count])
        results_path = results_path and f"{results_path}.p{index}"
        num_envs = num_envs and max(1, num_envs // count)
    key = fingerprint(dict(settings or {}, episodes=episodes_per_task, seed_offset=seed_offset))
    done = read_results(results_path, key) if results_path else {}
    stats = RolloutStats()
    trajs: list[Trajectory] = []
    common = dict(share=share, episodes=episodes_per_task, seed_offset=seed_offset,
                  format_penalty=format_penalty, stats=stats)  # fmt: skip

    def finish(new: list[Trajectory]):
        trajs.extend(new)
        per_task = collections.defaultdict(list)
        for tr in new:
            per_task[tr.task_id].append(episode_record(tr))
        if results_path:
            append_results(results_path, key, per_task)
        done.update(per_task)

    if pool is not None:
        all_ids = list(dict.fromkeys(t.task_id for t in pool.tasks))
        position = {t: j for j, t in enumerate(all_ids)}
        if any(t not in done for t in all_ids):
            _play(pool, agent, sampler, params, rng=rng, skip=set(done), finish=finish,
                  position=position, **common)
    else:
        all_ids = list(dict.fromkeys(t.task_id for t in tasks))
        position = {t: j for j, t in enumerate(all_ids)}
        for shard in plan_shards(list(tasks), episodes_per_task, plan_envs):
            if all(t.task_id in done for t in shard):
                continue
            sub = make_pool(shard_envs(shard, max(1, len(share)), num_envs))
            try:
                _play(sub, agent, sampler, params, rng=rng, skip=set(done), finish=finish,
                      position=position, **common)  # fmt: skip
            finally:
                sub.close()
    if count > 1:  # every process's records, each task's in seed order as one process has them
        parts = distributed.allgather_objects((done, stats))
        done = {t: sorted((r for d, _ in parts for r in d.get(t, ())), key=lambda r: r["seed"])
                for t in all_ids}
        stats = distributed.merge_stats([st for _, st in parts])
    report = summarize([r for t in all_ids for r in done[t]])
    report["rollout"] = stats.as_dict()
    return report, trajs


def _play(pool, agent, sampler, params, *, share, episodes, seed_offset, rng, format_penalty,
          stats, skip, finish, position):
    """Rounds over `pool` until every task not in `skip` has played its `share` (episode
    indices) of its `episodes`; `finish(trajectories)` receives each task's episodes once
    the task is complete."""
    task_slots = collections.defaultdict(list)
    for i, task in enumerate(pool.tasks):
        if task.task_id not in skip:
            task_slots[task.task_id].append(i)
    started = collections.Counter()
    played = collections.defaultdict(list)
    while task_slots and min(started[t] for t in task_slots) < len(share):
        seeds, groups, idx, uids = [], [], [], []
        for tid, slots in task_slots.items():
            for i in slots:
                if started[tid] >= len(share):
                    continue
                k = share[started[tid]]
                started[tid] += 1
                idx.append(i)
                seeds.append(seed_offset + k)
                groups.append(k)
                uids.append(position[tid] * episodes + k)
        new = run_episodes(_SubPool(pool, idx), agent, sampler, params, seeds=seeds,
                           groups=groups, rng=rng, format_penalty=format_penalty, stats=stats,
                           episode_ids=uids)
        complete = []
        for tr in new:
            played[tr.task_id].append(tr)
            if len(played[tr.task_id]) == len(share):
                complete += sorted(played.pop(tr.task_id), key=lambda t: t.seed)
        finish(complete)


class _SubPool:
    """A view of some envs of an EnvPool, so a round can use fewer envs than the pool has."""

    def __init__(self, pool, indices):
        self._pool, self._idx = pool, list(indices)
        self.tasks = [pool.tasks[i] for i in self._idx]
        self.num_envs = len(self._idx)

    def reset(self, seeds):
        return self._pool.reset(seeds, indices=self._idx)

    def step(self, actions, indices):
        return self._pool.step(actions, indices=[self._idx[j] for j in indices])


def write_report(report: dict, workdir: str, name: str = "eval") -> tuple[str, str]:
    """WORKDIR/eval.json and a Markdown table (eval.md) of families and tasks."""
    os.makedirs(workdir, exist_ok=True)
    jpath = os.path.join(workdir, f"{name}.json")
    atomic_write(jpath, json.dumps(report, indent=2))
    lines = [f"# Evaluation: {report['episodes']} episodes, success "
             f"{100 * report['success_rate']:.1f}%", "",
             "| family | tasks | success (mean ± std over tasks) | mean steps |",
             "|---|---|---|---|"]
    for fam, r in report["families"].items():
        lines.append(f"| {fam} | {r['tasks']} | {100 * r['success_mean']:.1f} ± "
                     f"{100 * r['success_std']:.1f} | {r['mean_steps']:.1f} |")
    lines += ["", "| task | family | episodes | success | mean steps | invalid actions |",
              "|---|---|---|---|---|---|"]
    for tid, r in report["tasks"].items():
        lines.append(f"| {tid} | {r['family']} | {r['episodes']} | "
                     f"{100 * r['success_rate']:.1f}% | {r['mean_steps']:.1f} | "
                     f"{100 * r['invalid_rate']:.1f}% |")
    mpath = os.path.join(workdir, f"{name}.md")
    atomic_write(mpath, "\n".join(lines) + "\n")
    return jpath, mpath


def resume_kwargs(config, workdir: str, iteration: int, tasks: Sequence | None = None) -> dict:
    """evaluate()'s per-task resume file for the checkpoint of `iteration`
    (WORKDIR/eval_parts/iterNNNNNN.jsonl, its records keyed by the whole config) and, when
    `tasks` is given (more tasks than eval envs), the sharding arguments."""
    from grow_jax.config_utils import config_to_json
    from grow_jax.envs.pool import pool_from_config

    kw = dict(results_path=os.path.join(workdir, "eval_parts", f"iter{iteration:06d}.jsonl"),
              settings=json.loads(config_to_json(config)))
    if tasks is not None:
        kw.update(tasks=tasks, num_envs=config.eval.num_envs,
                  make_pool=lambda per_env: pool_from_config(per_env, config.env))
    return kw


def run_eval(config, workdir: str) -> dict:
    """--mode=eval entry point (see `grow_jax.train.trainer.evaluate_checkpoint`)."""
    from grow_jax.train.trainer import evaluate_checkpoint

    return evaluate_checkpoint(config, workdir)
