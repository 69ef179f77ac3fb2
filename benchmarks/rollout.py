"""Rollout loop speed: env steps/s of the whole host loop (prompts, image patches, one
jitted sampler call per turn, env stepping), sequential and pipelined (`env.pipeline`),
next to the raw env speed of the same pools, at several env counts.

    python benchmarks/rollout.py                    # 32, 128 and 256 BabyAI envs, tiny_cpu
    python benchmarks/rollout.py --envs=32 --rounds=2 --no_write   # quick look
    python benchmarks/rollout.py --doc_only      # the docs section from the stored JSON
Writes benchmarks/results/rollout/<CPU kind>.json (other CPU kinds' files are kept) and the
"Rollout loop" section of docs/performance.md from all of them.
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

import goals  # benchmarks/goals.py: the issue-13 table over all CPU kinds
from _common import (  # noqa: E402
    cpu_info,
    machines_section,
    save_results,
    stored_results,
    write_section,
)

NAME, SECTION = "rollout", "## Rollout loop"
# (name, pool, pipelined): the loops timed; the pools' raw speed is timed as "envs_<pool>"
LOOPS = (("seq_sync", "sync", False), ("seq_async", "async", False),
         ("pipe_async", "async", True))



def compare(a, b) -> tuple[bool, float]:
    """(whether two rollouts hold the same decisions: seeds, lengths, tokens, rewards; the
    largest logprob difference between them)."""
    same = len(a) == len(b) and all(
        ta.seed == tb.seed and ta.length == tb.length and all(
            np.array_equal(sa.action_ids, sb.action_ids) and sa.reward == sb.reward
            for sa, sb in zip(ta.steps, tb.steps)) for ta, tb in zip(a, b))
    diff = max((float(np.abs(sa.logprobs - sb.logprobs).max()) for ta, tb in zip(a, b)
                for sa, sb in zip(ta.steps, tb.steps) if len(sa.logprobs) == len(sb.logprobs)),
               default=0.0)
    return same, diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", default="32,128,256", help="comma-separated env counts")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no_write", action="store_true")
    ap.add_argument("--doc_only", action="store_true",
                    help="regenerate the docs section from the stored JSON")
    args = ap.parse_args(argv)
    if args.doc_only:
        write_section(SECTION, section(stored_results(NAME)))
        goals.write()
        return
    counts = [int(x) for x in args.envs.split(",")]

    import tiny_cpu
    from flax import nnx

    from grow_jax.agent.adapter import make_agent
    from grow_jax.data.samples import encode_images
    from grow_jax.envs import make_tasks
    from grow_jax.envs.pool import EnvPool
    from grow_jax.rollout.loop import RolloutStats, image_token_count, run_episodes
    from grow_jax.sampling.generate import Sampler, SamplingParams
    from grow_jax.train import builders

    load_start = os.getloadavg()[0]
    c = tiny_cpu.get_config()
    tok = builders.load_tokenizer(c)
    mcfg = builders.model_config(c, tok)
    model = builders.build_model(mcfg, builders.make_mesh(c), 0)
    params = nnx.state(model, nnx.Param)
    agent = make_agent(c, tok)
    sampler = Sampler(model, SamplingParams(max_new_tokens=c.agent.max_new_tokens,
                                            stop_token_ids=agent.stop_ids))
    tasks = make_tasks("babyai", ids=c.env.tasks, max_steps=c.env.max_steps)
    kw = dict(c.env.kwargs)

    def warm(pool, n):  # compile every batch bucket up to n, so no round compiles
        obs = pool.reset(list(range(n)))[0]
        ids = agent.prompt_ids(obs["instruction"], [], image_token_count(obs["image"].shape,
                                                                          mcfg))
        img = encode_images([obs["image"]], mcfg, "pad")
        for b in range(sampler.batch_bucket, n + sampler.batch_bucket, sampler.batch_bucket):
            sampler.sample(params, [ids] * b, [img] * b, rng=jax.random.key(0),
                           row_ids=list(range(b)))

    rows = []
    for n in counts:
        pools = {"sync": EnvPool([tasks[0]] * n, env_kwargs=kw),
                 "async": EnvPool([tasks[0]] * n, env_kwargs=kw, mode="async")}
        seeds = lambda r: list(range(r * n, (r + 1) * n))  # noqa: E731, B023

        def raw(pool, r):
            """Random actions: what the envs alone can do (env steps/s, and this process's
            CPU ms per env step, which is the envs' whole CPU cost for the sync pool)."""
            rng = np.random.default_rng(r)
            t0, c0 = time.perf_counter(), time.process_time()
            pool.reset(seeds(r))
            live, steps = list(range(n)), 0
            while live:
                _, _, term, trunc, _ = pool.step(list(rng.integers(0, 7, len(live))),
                                                 indices=live)
                steps += len(live)
                live = [i for i, d in zip(live, term | trunc) if not d]
            return steps / (time.perf_counter() - t0), 1e3 * (time.process_time() - c0) / steps

        def loop(pool, pipelined, r):
            """One round; also this process's CPU ms per env step (all threads: XLA's too)."""
            st = RolloutStats()
            c0 = time.process_time()
            trajs = run_episodes(pool, agent, sampler, params, seeds=seeds(r),  # noqa: B023
                                 groups=[0] * n, rng=jax.random.key(r), stats=st,
                                 pipeline=pipelined)
            return st, trajs, 1e3 * (time.process_time() - c0) / st.env_steps

        warm(pools["sync"], n)
        for name, pool, pipelined in LOOPS:  # one untimed round each (caches, workers)
            loop(pools[pool], pipelined, 0)
        shapes = sampler.compiled_shapes()
        raw_sps = {p: [] for p in pools}
        stats = {name: [] for name, _, _ in LOOPS}
        cpu_ms = {"envs_sync": [], "seq_sync": []}  # in-process: the whole CPU cost
        identical, logp_diff = True, 0.0
        for r in range(1, args.rounds + 1):  # interleaved, so load changes hit all alike
            for p, pool in pools.items():
                sps, ms = raw(pool, r)
                raw_sps[p].append(sps)
                if p == "sync":
                    cpu_ms["envs_sync"].append(ms)
            got = {}
            for name, pool, pipelined in LOOPS:
                st, got[name], ms = loop(pools[pool], pipelined, r)
                stats[name].append(st)
                if name == "seq_sync":
                    cpu_ms[name].append(ms)
            same, diff = compare(got["seq_sync"], got["pipe_async"])
            identical, logp_diff = identical and same, max(logp_diff, diff)
        for pool in pools.values():
            pool.close()
        row = dict(envs=n, workers=len(pools["async"].worker_pids),
                   recompiled=sampler.compiled_shapes() - shapes,
                   identical=bool(identical), logprob_diff=logp_diff)
        for p, v in raw_sps.items():
            row[f"envs_{p}"] = statistics.median(v)
        for k, v in cpu_ms.items():
            row[f"{k}_cpu_ms"] = statistics.median(v)
        for name, sts in stats.items():
            tot = sum(s.total_s for s in sts)
            row[name] = statistics.median(s.env_steps / s.total_s for s in sts)
            row[f"{name}_share"] = {k: sum(getattr(s, f"{k}_s") for s in sts) / tot
                                    for k in ("env", "sample", "prep")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = dict(rounds=args.rounds, cpu=cpu_info(), cpus=os.cpu_count(),
               machine=platform.machine(), load_avg_start=load_start,
               load_avg_end=os.getloadavg()[0], jax=jax.__version__,
               params=builders.param_count(model), task=c.env.tasks[0],
               max_steps=c.env.max_steps, rows=rows,
               command="python benchmarks/rollout.py" + "".join(
                   f" {a}" for a in (argv if argv is not None else sys.argv[1:])))
    print(json.dumps(res, indent=2))
    if args.no_write:
        return
    save_results(NAME, res)
    write_section(SECTION, section(stored_results(NAME)))
    goals.write()


INTRO = [
    "Env steps/s. *Envs alone*: random actions on the same pool (in-process `sync`, or "
    "`async` worker processes). *Sequential*: one sampler call over all live envs, then one "
    "env step. *Pipelined* (`env.pipeline=True`, async pool): the envs in two halves "
    "(alternate envs, so each half has envs on every worker); one half steps in the workers "
    "while the loop samples the other (two sampler calls per turn, of half the rows each). "
    "*Same tokens, rewards*: the pipelined rounds against the sequential (sync) ones with the "
    "same seeds and keys. Sampler batches are bucketed (multiples of 8 rows), all buckets "
    "compiled before timing.",
    "",
    "Reading the tables: pipelining hides the env steps behind sampling only where both do "
    "not need the same cores. On a 2-core host the env workers and XLA's sampler threads "
    "share both cores, and a sampler call of the tiny model for half the rows costs well over "
    "half of a full one (per-call host work and dispatch), so the two half-size calls per "
    "turn eat much of what the overlap saves; with the sampler on an accelerator (the 7B "
    "configs) the overlap is the whole gain.",
]


def section(stored: dict[str, dict]) -> str:
    """The "Rollout loop" section of docs/performance.md: one subsection per CPU kind."""
    return machines_section(SECTION, NAME, INTRO, stored, render)


def render(res: dict) -> list[str]:
    """One machine's run: its settings, the speed table, the goal and the time shares."""
    cpu = res["cpu"]
    flags = ", ".join(name for name, f in (("AVX-512", "avx512f"), ("AMX", "amx_tile"))
                      if f in cpu["flags"])
    lines = [
        f"`{res['command']}`: BabyAI envs ({res['task']}, cap {res['max_steps']}, 28x28 "
        f"frames), the tiny_cpu model ({res['params']} params, random weights), "
        f"{res['rounds']} interleaved rounds of one episode per env, medians; "
        f"{cpu['model']} ({flags or 'no AVX-512/AMX'}), {res['cpus']} CPUs, jax "
        f"{res['jax']}. 1-min load average at start / end: {res['load_avg_start']:.1f} / "
        f"{res['load_avg_end']:.1f} on {res['cpus']} CPUs (the benchmark itself keeps its "
        "process and, in async rounds, its env workers busy; a load above the CPU count means "
        "other processes shared the cores, and every figure is then low and noisy).", "",
        "| envs | workers | envs alone, sync | envs alone, async | sequential, sync pool | "
        "sequential, async pool | pipelined, async pool | pipelined / envs alone (async) | "
        "pipelined / envs alone (sync) | pipelined / sequential (async) | pipelined / "
        "sequential (sync) | same tokens, rewards | max logprob diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['envs']} | {r['workers']} | {r['envs_sync']:.0f} | {r['envs_async']:.0f} | "
            f"{r['seq_sync']:.0f} | {r['seq_async']:.0f} | {r['pipe_async']:.0f} | "
            f"{100 * r['pipe_async'] / r['envs_async']:.0f}% | "
            f"{100 * r['pipe_async'] / r['envs_sync']:.0f}% | "
            f"{r['pipe_async'] / r['seq_async']:.2f}x | {r['pipe_async'] / r['seq_sync']:.2f}x | "
            f"{'yes' if r['identical'] else 'NO'} | {r['logprob_diff']:.1e} |")
    goal = [r for r in res["rows"] if r["envs"] == 32]
    if goal:
        r = goal[0]
        best = max(r["envs_sync"], r["envs_async"])
        lines += ["", f"Goal (issue 13): at 32 envs the loop at >= 70% of the envs' own speed. "
                  f"Here the pipelined loop runs at {100 * r['pipe_async'] / best:.0f}% of the "
                  f"faster env-only pool ({best:.0f} env steps/s): "
                  f"{'met' if r['pipe_async'] >= 0.7 * best else 'not met'}."]
        lines += ["", *cpu_bound(r, res["cpus"], best)]
    lines += ["", "Where each loop's time goes (envs: time spent waiting for env steps, "
              "which pipelining hides behind sampling; sampler: host batching + jitted "
              "prefill/decode; prompts: prompt ids and image patches):", "",
              "| envs | loop | envs | sampler | prompts | rest |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for name in ("seq_sync", "seq_async", "pipe_async"):
            s = r[f"{name}_share"]
            rest = 1 - s["env"] - s["sample"] - s["prep"]
            lines.append(f"| {r['envs']} | {name} | {100 * s['env']:.0f}% | "
                         f"{100 * s['sample']:.0f}% | {100 * s['prep']:.0f}% | "
                         f"{100 * rest:.0f}% |")
    recompiled = sum(r["recompiled"] for r in res["rows"])
    return lines + ["", f"Compilations during the timed rounds: {recompiled}."]


def cpu_bound(r: dict, cpus: int, best: float) -> list[str]:
    """What the cores allow: the loop's CPU work per env step (measured in-process, sync
    pool) caps any schedule of it, overlapped or not, at cpus / work env steps/s."""
    env, loop = r["envs_sync_cpu_ms"], r["seq_sync_cpu_ms"]
    cap = 1e3 * cpus / loop
    need = 1e3 * cpus / (0.7 * best)
    return [f"The cores' bound at {r['envs']} envs: one env step costs {env:.3f} ms of CPU "
            f"with random actions and {loop:.3f} ms inside the sequential loop (envs + "
            f"prompts + sampler, all threads, sync pool), so on {cpus} CPUs no schedule of "
            f"the loop's work, however overlapped, exceeds {cpus} / {loop:.3f} ms = "
            f"{cap:.0f} env steps/s = {100 * cap / best:.0f}% of the envs alone. Reaching "
            f"70% needs the whole loop at <= {need:.3f} ms of CPU per env step, i.e. the "
            f"sampler and prompts at <= {max(need - env, 0):.3f} ms (now "
            f"{loop - env:.3f}). Pipelining hides waiting, not work: on a host whose cores "
            f"the envs already fill, only a cheaper sampler (or one on an accelerator) "
            f"moves this bound."]


if __name__ == "__main__":
    main()
