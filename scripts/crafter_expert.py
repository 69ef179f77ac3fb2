"""Success rate and median decisions of the scripted Crafter expert per achievement.

    python scripts/crafter_expert.py --achievements collect_wood,eat_cow --cap 24 --seeds 20

Plays `CrafterEnv.expert_action()` on world seeds 1000000.. (the evaluation range of the
configs, away from the seeds tests use) and prints one row per achievement.
"""

from __future__ import annotations

import argparse
import statistics

from grow_jax.envs import crafter, make_env
from grow_jax.envs.crafter_expert import UNSUPPORTED


def rates(achievement: str, cap: int, seeds: int, first_seed: int) -> tuple[float, float]:
    (task,) = crafter.make_tasks([achievement], seeds=[first_seed], max_steps=cap)
    env = make_env(task)
    steps = []
    for seed in range(first_seed, first_seed + seeds):
        env.reset(seed)
        for t in range(cap):
            _, _, term, trunc, info = env.step(env.expert_action())
            if term or trunc:
                break
        if info["success"]:
            steps.append(t + 1)
    return len(steps) / seeds, statistics.median(steps) if steps else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--achievements", default=",".join(
        a for a in crafter.ACHIEVEMENTS if a not in UNSUPPORTED))
    p.add_argument("--cap", type=int, default=100, help="episode cap in decisions")
    p.add_argument("--seeds", type=int, default=20, help="world seeds per achievement")
    p.add_argument("--first-seed", type=int, default=1_000_000)
    args = p.parse_args()
    print(f"| achievement | success ({args.seeds} worlds, cap {args.cap}) | median decisions |")
    print("|---|---|---|")
    for a in args.achievements.split(","):
        rate, med = rates(a, args.cap, args.seeds, args.first_seed)
        print(f"| {a} | {rate:.0%} | {med:g} |", flush=True)


if __name__ == "__main__":
    main()
