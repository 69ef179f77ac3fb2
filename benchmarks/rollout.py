"""Rollout loop speed: env steps/s of the whole host loop (prompts, image patches, one
jitted sampler call per turn, env stepping) next to the raw env speed of the same pool.

    python benchmarks/rollout.py            # 32 BabyAI envs, the tiny_cpu model
Writes benchmarks/results/rollout.json and the "Rollout loop" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _common import write_section  # noqa: E402

HEADING = "## Rollout loop"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no_write", action="store_true")
    args = ap.parse_args(argv)

    import tiny_cpu
    from grow_jax.agent.adapter import make_agent
    from grow_jax.envs import make_tasks
    from grow_jax.envs.pool import EnvPool
    from grow_jax.rollout.loop import RolloutStats, run_episodes
    from grow_jax.sampling.generate import Sampler, SamplingParams
    from grow_jax.train import builders

    c = tiny_cpu.get_config()
    tok = builders.load_tokenizer(c)
    mcfg = builders.model_config(c, tok)
    model = builders.build_model(mcfg, builders.make_mesh(c), 0)
    from flax import nnx

    params = nnx.state(model, nnx.Param)
    agent = make_agent(c, tok)
    sampler = Sampler(model, SamplingParams(max_new_tokens=c.agent.max_new_tokens,
                                            stop_token_ids=agent.stop_ids))
    tasks = make_tasks("babyai", ids=c.env.tasks, max_steps=c.env.max_steps)
    pool = EnvPool([tasks[0]] * args.envs, env_kwargs=dict(c.env.kwargs))
    seeds = lambda r: list(range(r * args.envs, (r + 1) * args.envs))  # noqa: E731

    def raw(r):  # random actions, the same pool: what the envs alone can do
        rng = np.random.default_rng(r)
        t0 = time.perf_counter()
        pool.reset(seeds(r))
        live, n = list(range(args.envs)), 0
        while live:
            _, _, term, trunc, _ = pool.step(list(rng.integers(0, 7, len(live))), indices=live)
            n += len(live)
            live = [i for i, d in zip(live, term | trunc) if not d]
        return n / (time.perf_counter() - t0)

    def loop(r):
        st = RolloutStats()
        run_episodes(pool, agent, sampler, params, seeds=seeds(r), groups=[0] * args.envs,
                     rng=jax.random.key(r), stats=st)
        return st

    loop(0)  # compile
    raw_sps, loops = [], []
    for r in range(1, args.rounds + 1):
        raw_sps.append(raw(r))
        loops.append(loop(r))
    tot = sum(s.total_s for s in loops)
    res = dict(
        envs=args.envs, rounds=args.rounds, machine=platform.machine(), cpus=os.cpu_count(),
        load_avg_end=os.getloadavg()[0], jax=jax.__version__,
        raw_env_steps_per_s=statistics.median(raw_sps),
        loop_env_steps_per_s=statistics.median(s.env_steps / s.total_s for s in loops),
        share_sampler=sum(s.sample_s for s in loops) / tot,
        share_env=sum(s.env_s for s in loops) / tot,
        share_prep=sum(s.prep_s for s in loops) / tot,
        sampler_calls_per_s=sum(s.decisions for s in loops) / sum(s.sample_s for s in loops),
        params=builders.param_count(model))
    res["share_other"] = 1 - res["share_sampler"] - res["share_env"] - res["share_prep"]
    print(json.dumps(res, indent=2))
    if args.no_write:
        return
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "rollout.json"), "w") as f:
        json.dump(res, f, indent=2)
    write_section(HEADING, "\n".join([
        HEADING, "",
        "Written by `benchmarks/rollout.py` from `benchmarks/results/rollout.json`.", "",
        f"{res['envs']} BabyAI envs ({c.env.tasks[0]}, cap {c.env.max_steps}, 28x28 frames) "
        f"in one process, the tiny_cpu model ({res['params']} params, random weights), "
        f"{res['rounds']} rounds of one episode per env, medians; {res['cpus']} CPUs, 1-min "
        f"load average at the end {res['load_avg_end']:.1f}.", "",
        "| | env steps/s |", "|---|---|",
        f"| envs alone (random actions, same pool) | {res['raw_env_steps_per_s']:.0f} |",
        f"| whole rollout loop | {res['loop_env_steps_per_s']:.0f} |", "",
        f"Where the loop's time goes: envs {100 * res['share_env']:.0f}%, sampler (host "
        f"batching + one jitted prefill/decode per turn) {100 * res['share_sampler']:.0f}%, "
        f"prompts and image patches {100 * res['share_prep']:.0f}%, the rest (decoding "
        f"actions, records) {100 * res['share_other']:.0f}%.", ""]))


if __name__ == "__main__":
    main()
