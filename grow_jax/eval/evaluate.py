"""Success rate per task and per family on held-out seeds, as the paper reports it:
mean ± std over tasks of the per-task success rate, and mean steps of the episodes."""

from __future__ import annotations

import collections
import json
import os

import jax
import numpy as np

from grow_jax.io_utils import atomic_write
from grow_jax.rollout.loop import RolloutStats, run_episodes
from grow_jax.rollout.types import Trajectory


def summarize(trajs: list[Trajectory]) -> dict:
    """Per-task and per-family success/steps, plus the overall episode success rate."""
    by_task = collections.defaultdict(list)
    family = {}
    for tr in trajs:
        by_task[tr.task_id].append(tr)
        family[tr.task_id] = tr.family
    tasks = {}
    for tid, ts in sorted(by_task.items()):
        tasks[tid] = dict(family=family[tid], episodes=len(ts),
                          success_rate=float(np.mean([t.success for t in ts])),
                          mean_steps=float(np.mean([t.length for t in ts])),
                          invalid_rate=float(np.mean([s.invalid for t in ts for s in t.steps]
                                                     or [0.0])))
    fams = collections.defaultdict(list)
    for tid, r in tasks.items():
        fams[r["family"]].append(r)
    families = {f: dict(tasks=len(rs), success_mean=float(np.mean([r["success_rate"] for r in rs])),
                        success_std=float(np.std([r["success_rate"] for r in rs])),
                        mean_steps=float(np.mean([r["mean_steps"] for r in rs])))
                for f, rs in sorted(fams.items())}
    return dict(episodes=len(trajs), success_rate=float(np.mean([t.success for t in trajs])),
                mean_steps=float(np.mean([t.length for t in trajs])), tasks=tasks,
                families=families)


def evaluate(pool, agent, sampler, params, *, episodes_per_task: int, seed_offset: int,
             rng: jax.Array, format_penalty: float = 0.0) -> tuple[dict, list[Trajectory]]:
    """Plays `episodes_per_task` episodes of every distinct task in `pool` on held-out seeds.

    The pool's envs are reused round after round; seeds are seed_offset + episode index, so
    every policy is evaluated on the same worlds.
    """
    task_slots = collections.defaultdict(list)
    for i, task in enumerate(pool.tasks):
        task_slots[task.task_id].append(i)
    per_task_done = collections.Counter()
    trajs: list[Trajectory] = []
    stats = RolloutStats()
    while min(per_task_done[t] for t in task_slots) < episodes_per_task:
        seeds, groups, idx = [], [], []
        for tid, slots in task_slots.items():
            for i in slots:
                k = per_task_done[tid]
                if k >= episodes_per_task:
                    continue
                per_task_done[tid] += 1
                idx.append(i)
                seeds.append(seed_offset + k)
                groups.append(k)
        rng, sub = jax.random.split(rng)
        sub_pool = _SubPool(pool, idx)
        trajs += run_episodes(sub_pool, agent, sampler, params, seeds=seeds, groups=groups,
                              rng=sub, format_penalty=format_penalty, stats=stats)
    report = summarize(trajs)
    report["rollout"] = stats.as_dict()
    return report, trajs


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


def run_eval(config, workdir: str) -> dict:
    """--mode=eval entry point (see `grow_jax.train.trainer.evaluate_checkpoint`)."""
    from grow_jax.train.trainer import evaluate_checkpoint

    return evaluate_checkpoint(config, workdir)
