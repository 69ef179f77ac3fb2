"""Runs the README's main job (or reads a finished run) and writes its figures into README.md.

    python scripts/run_main_job.py --workdir runs/tiny_cpu            # run, then report
    python scripts/run_main_job.py --workdir runs/tiny_cpu --report-only

The block between `<!-- main-job:start -->` and `<!-- main-job:end -->` in README.md is
regenerated from WORKDIR/metrics.jsonl and WORKDIR/timing.json; the learning curve is
copied to docs/tiny_cpu_learning_curve.png. No number in that block is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- main-job:start -->", "<!-- main-job:end -->"


def run(workdir: str, config: str, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "grow_jax.main", f"--config={config}", f"--workdir={workdir}",
           *extra]
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "timing.json"), "w") as f:
        json.dump(dict(wall_s=time.time() - t0, command=" ".join(cmd[1:]),
                       cpus=os.cpu_count(), load_avg_end=os.getloadavg()[0],
                       machine=platform.machine()), f)


def report(workdir: str) -> str:
    rows = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in rows if r.get("phase") == "eval"]
    if len(evals) < 2:
        raise SystemExit(f"{workdir}: needs the start and final evaluation rows")
    start, final = evals[0], evals[-1]
    timing = json.load(open(os.path.join(workdir, "timing.json")))
    cfg = json.load(open(os.path.join(workdir, "config.json")))
    n = final["eval_episodes"]
    gain = 100 * (final["eval_success_rate"] - start["eval_success_rate"])
    se = 100 * math.sqrt(sum(p * (1 - p) / n for p in (start["eval_success_rate"],
                                                          final["eval_success_rate"])))
    train = [r for r in rows if r.get("phase") == "train"]
    sft = [r for r in rows if r.get("phase") == "sft"]
    lines = [
        f"Measured by `python scripts/run_main_job.py --workdir {os.path.relpath(workdir, ROOT)}` "
        f"({timing['cpus']} CPUs, {timing['machine']}, 1-min load average at the end "
        f"{timing['load_avg_end']:.1f}):",
        "",
        "| | |",
        "|---|---|",
        f"| levels | {', '.join(cfg['env']['tasks'])} (cap {cfg['env']['max_steps']} decisions) |",
        f"| SFT warm start | {cfg['sft']['demo_episodes']} bot episodes, {len(sft) and sft[-1]['step']} steps |",
        f"| GROW RL | {len(train)} iterations x {cfg['rl']['groups_per_iter']} groups x "
        f"G={cfg['rl']['group_size']} episodes, {train[-1]['env_steps'] if train else 0} env steps |",
        f"| evaluation | {n} held-out episodes (seeds from {cfg['eval']['seed_offset']}), "
        f"{'greedy' if cfg['eval']['greedy'] else 'sampled'} actions |",
        f"| success, SFT start | **{100 * start['eval_success_rate']:.1f}%** |",
        f"| success, after GROW | **{100 * final['eval_success_rate']:.1f}%** |",
        f"| gain | **{gain:+.1f} points** (± {2 * se:.1f} at 2 standard errors) |",
        f"| wall time, whole command | {timing['wall_s'] / 60:.1f} min |",
        "",
        "![learning curve](docs/tiny_cpu_learning_curve.png)",
    ]
    png = os.path.join(workdir, "learning_curve.png")
    if os.path.exists(png):
        shutil.copy(png, os.path.join(ROOT, "docs", "tiny_cpu_learning_curve.png"))
    return "\n".join(lines)


def write_readme(block: str) -> None:
    path = os.path.join(ROOT, "README.md")
    text = open(path).read()
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{START}\n{block}\n{END}{tail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "tiny_cpu"))
    ap.add_argument("--config", default="configs/tiny_cpu.py")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("extra", nargs="*", help="extra flags for grow_jax.main")
    args = ap.parse_args()
    workdir = os.path.abspath(args.workdir)
    if not args.report_only:
        if os.path.exists(os.path.join(workdir, "checkpoints")):
            raise SystemExit(f"{workdir} already holds a run; pick a new --workdir")
        run(workdir, args.config, args.extra)
    block = report(workdir)
    write_readme(block)
    print(block)


if __name__ == "__main__":
    main()
