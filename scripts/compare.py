"""Equal-budget comparison of advantage estimators from one SFT start; writes docs/results.md
(docs/results_heldout.md with --held-out; another study's file with --out).

    python scripts/compare.py --seeds 0,1,2 --iterations 60 --parallel 2
    python scripts/compare.py --methods grow_g0.995,tgrpo --seeds 0 --iterations 2 \
        --workdir runs/compare_smoke -- --config.eval.episodes=20
    python scripts/compare.py --seeds 0,1,2 --iterations 60 --report-only
    python scripts/compare.py --held-out ...   # RL-trained vs held-out BabyAI levels
    python scripts/compare.py --methods grow_g0.995,grow_care --out docs/results_care.md ...

For each seed N, one SFT run (`grow_jax.main --mode=sft`, WORKDIR/sft_seedN) is the start
of every method (`--config.rl.init_checkpoint`); each method then runs the same number
of RL iterations, each of `groups_per_iter x group_size` episodes, on the same world seeds
(they derive from the seed and the iteration), so every method plays the same episodes'
worth of budget; the env steps those episodes took differ by method and are reported, and
the curves are drawn against env steps and against wall time. Everything in
docs/results.md is generated from the runs' metrics.jsonl / timing.json, with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grow_jax.hostinfo import cpu_label  # noqa: E402
from run_main_job import (  # noqa: E402
    group_layouts, mean_std, run_parallel, task_success)

# name -> grow_jax.main flags on top of the config (same SFT start and budget for all).
METHODS = {
    "grow_g0.9": ["--config.algo.name=grow", "--config.algo.gamma=0.9"],
    "grow_g0.95": ["--config.algo.name=grow", "--config.algo.gamma=0.95"],
    "grow_g0.995": ["--config.algo.name=grow", "--config.algo.gamma=0.995"],
    "grow_g1.0": ["--config.algo.name=grow", "--config.algo.gamma=1.0"],
    "grpo_traj": ["--config.algo.name=grpo_traj", "--config.agent.history=-1"],
    "tgrpo": ["--config.algo.name=tgrpo"],
    "gigpo": ["--config.algo.name=gigpo"],
    "ppo": ["--config.algo.name=ppo"],
    "grow_care": ["--config.algo.name=grow", "--config.algo.gamma=0.995",
                  "--config.algo.care_coef=0.5"],
}
# The held-out study (the paper's Table 2 at laptop scale): RL on these BabyAI levels of
# three families, evaluation on them and on levels never trained on (--held-out).
TRAIN_LEVELS = ("BabyAI-GoToRedBallNoDists-v0", "BabyAI-GoToObjS4-v0", "BabyAI-OpenDoor-v0",
                "BabyAI-PickupDist-v0")
HELD_OUT_LEVELS = ("BabyAI-GoToRedBallGrey-v0", "BabyAI-GoToObj-v0",
                   "BabyAI-OpenRedDoor-v0", "BabyAI-GoToLocalS5N2-v0")
# The report a run writes unless --out names another (its plot: STEM_curves.png beside it).
DEFAULT_OUT = {False: os.path.join("docs", "results.md"),
               True: os.path.join("docs", "results_heldout.md")}


def plot_path(out: str) -> str:
    """docs/results_care.md -> docs/results_care_curves.png"""
    return os.path.splitext(out)[0] + "_curves.png"


def _run_all(jobs: list[tuple[str, list[str]]], parallel: int) -> None:
    """Runs (workdir, cmd) jobs, `parallel` at a time; writes WORKDIR/timing.json."""
    for wd, cmd, rc, timing in run_parallel(jobs, parallel, "compare", poll_s=2):
        if rc != 0:
            raise SystemExit(f"[compare] failed: {' '.join(cmd)}; see {wd}/stdout.log")
        with open(os.path.join(wd, "timing.json"), "w") as f:
            json.dump(timing, f)


def run(root, config, methods, seeds, iterations, extra, parallel):
    py = [sys.executable, "-m", "grow_jax.main", f"--config={config}"]
    sft = []
    for s in seeds:
        wd = os.path.join(root, f"sft_seed{s}")
        if not os.path.exists(os.path.join(wd, "timing.json")):
            sft.append((wd, py + ["--mode=sft", f"--workdir={wd}", f"--config.seed={s}", *extra]))
    _run_all(sft, parallel)
    jobs = []
    for m in methods:
        for s in seeds:
            wd = os.path.join(root, m, f"seed{s}")
            if os.path.exists(os.path.join(wd, "timing.json")):
                continue  # done in an earlier call
            if os.path.exists(os.path.join(wd, "checkpoints")):
                raise SystemExit(f"{wd} holds an unfinished run; remove it first")
            start = os.path.join(root, f"sft_seed{s}")
            jobs.append((wd, py + [f"--workdir={wd}", f"--config.seed={s}",
                                   f"--config.rl.init_checkpoint={start}",
                                   f"--config.rl.iterations={iterations}", *METHODS[m], *extra]))
    _run_all(jobs, parallel)


def _rows(wd):
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f if x.strip()]


def summarize(wd: str) -> dict:
    rows = _rows(wd)
    ev = [r for r in rows if r.get("phase") == "eval"]
    tr = [r for r in rows if r.get("phase") == "train"]
    t = json.load(open(os.path.join(wd, "timing.json")))
    env_steps = tr[-1]["env_steps"] if tr else 0
    tokens = sum(r.get("sample_tokens", 0) * r.get("epochs_done", 0) for r in tr)
    return dict(start=100 * ev[0]["eval_success_rate"], end=100 * ev[-1]["eval_success_rate"],
                best=max(100 * r["eval_success_rate"] for r in ev), env_steps=env_steps,
                tokens_per_env_step=tokens / max(env_steps, 1), wall_s=t["wall_s"],
                peak_rss_mib=t["peak_rss_mib"], load=t["load_avg_mean"],
                curve=[(r.get("env_steps", 0), r.get("time_s", 0.0),
                        100 * r["eval_success_rate"]) for r in ev],
                episodes=ev[-1]["eval_episodes"],
                tasks_start=task_success(wd, ev[0]["step"]),
                tasks_end=task_success(wd, ev[-1]["step"]))


def plot(per: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110, sharey=True)
    for k, (ax, xlabel) in enumerate(zip(axes, ("environment steps (RL)", "wall time (s)"))):
        for m, runs in per.items():
            n = min(len(r["curve"]) for r in runs)
            x = np.mean([[c[k] for c in r["curve"][:n]] for r in runs], 0)
            y = np.array([[c[2] for c in r["curve"][:n]] for r in runs])
            line, = ax.plot(x, y.mean(0), "o-", ms=3, label=m)
            ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.12,
                            color=line.get_color())
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out success (%), mean ± std over seeds")
    axes[0].set_ylim(0, 100)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _ranking(per: dict) -> list[str]:
    """Which method gained most on average and on its worst seed, and where each GROW
    variant stands (generated text)."""
    gains = {m: [r["end"] - r["start"] for r in runs] for m, runs in per.items()}
    gain = {m: float(np.mean(g)) for m, g in gains.items()}
    worst = {m: min(g) for m, g in gains.items()}
    order = sorted(gain, key=gain.get, reverse=True)
    out = ["", f"Ranked by mean gain: {', '.join(f'{m} ({gain[m]:+.1f})' for m in order)}.",
           "Lowest seed's gain: " + ", ".join(
               f"{m} {worst[m]:+.1f}" for m in sorted(worst, key=worst.get, reverse=True))
           + "."]
    best_grow = next((m for m in order if m.startswith("grow")), None)
    if best_grow and order[0] != best_grow:
        out.append(f"GROW is not the best here: its best variant, {best_grow}, ranks "
                   f"{order.index(best_grow) + 1} of {len(order)}, behind {order[0]}.")
    return out


def _held_out_table(per: dict, cfg: dict) -> list[str]:
    """Trained vs held-out tasks (the paper's Table 2): mean success over each task set."""
    trained = set(cfg["env"]["tasks"])
    evaluated = set(next(iter(per.values()))[0]["tasks_end"])
    held = sorted(evaluated - trained)
    if not held:
        return []
    out = ["", "Success on the RL-trained levels and on held-out levels never trained on "
           "(mean over the set's levels; mean ± std over seeds; start -> end):", "",
           "| method | trained: start | trained: end | held-out: start | held-out: end |",
           "|---|---|---|---|---|"]
    train_ids = sorted(evaluated & trained)
    for m, runs in per.items():
        cells = []
        for ids in (train_ids, held):
            for key in ("tasks_start", "tasks_end"):
                cells.append(mean_std([np.mean([r[key][t] for t in ids]) for r in runs]))
        out.append(f"| {m} | {' | '.join(cells)} |")
    out += ["", f"Trained: {', '.join(train_ids)}. Held-out: {', '.join(held)}."]
    return out


TITLE = "Equal-budget comparison of the advantage estimators"


def report(root: str, methods, seeds, argv: str, out: str = DEFAULT_OUT[False],
           title: str = TITLE) -> str:
    """The markdown of OUT (relative to the repository) from the runs under ROOT; draws
    its plot."""
    per = {m: [summarize(os.path.join(root, m, f"seed{s}")) for s in seeds] for m in methods}
    cfg = json.load(open(os.path.join(root, methods[0], f"seed{seeds[0]}", "config.json")))
    first = per[methods[0]][0]
    lines = [
        f"# {title}",
        "",
        f"Generated by `{argv}` on {os.cpu_count()} CPUs ({cpu_label()}), a machine shared "
        "with other work (the mean 1-min load average of each run is in the table: wall "
        "times are inflated by it). Every method starts from the same SFT checkpoint per "
        f"seed and runs {cfg['rl']['iterations']} iterations x "
        f"{cfg['rl']['groups_per_iter']} groups x G={cfg['rl']['group_size']} episodes"
        f"{group_layouts(cfg)} on "
        f"{', '.join(cfg['env']['tasks'])} (cap {cfg['env']['max_steps']}); evaluation on "
        f"{first['episodes']} held-out episodes. Seeds: {', '.join(map(str, seeds))}.",
        "",
        "| method | SFT start (%) | end (%) | best (%) | gain (points) | env steps | tokens "
        "trained / env step | wall (s) | peak RSS (MiB) | mean load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, runs in per.items():
        lines.append(
            f"| {m} | {mean_std([r['start'] for r in runs])} | "
            f"{mean_std([r['end'] for r in runs])} | "
            f"{mean_std([r['best'] for r in runs])} | "
            f"{mean_std([r['end'] - r['start'] for r in runs])} | "
            f"{np.mean([r['env_steps'] for r in runs]):.0f} | "
            f"{np.mean([r['tokens_per_env_step'] for r in runs]):.1f} | "
            f"{mean_std([r['wall_s'] for r in runs])} | "
            f"{max(r['peak_rss_mib'] for r in runs):.0f} | "
            f"{np.mean([r['load'] for r in runs]):.1f} |")
    lines += _ranking(per)
    lines += _held_out_table(per, cfg)
    lines += ["", "Method flags (on top of the config):", ""]
    lines += [f"- `{m}`: `{' '.join(METHODS[m])}`" for m in methods]
    png = plot_path(out)
    lines += ["", f"![curves]({os.path.basename(png)})", ""]
    plot(per, os.path.join(ROOT, png))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--config", default="configs/tiny_cpu.py")
    ap.add_argument("--workdir", default=os.path.join("runs", "compare"))
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--held-out", action="store_true",
                    help="train on TRAIN_LEVELS, evaluate on them and on HELD_OUT_LEVELS")
    ap.add_argument("--out", default=None,
                    help="markdown report to write, relative to the repository (default "
                         "docs/results.md, docs/results_heldout.md with --held-out); its "
                         "plot goes beside it as STEM_curves.png")
    ap.add_argument("--title", default=TITLE, help="the report's heading")
    ap.add_argument("extra", nargs="*", help="extra flags for every grow_jax.main run (after --)")
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    root = os.path.abspath(args.workdir)
    out = args.out or DEFAULT_OUT[args.held_out]
    if not out.endswith(".md") or os.path.isabs(out):
        raise SystemExit(f"--out: expected a .md path relative to the repository, got {out!r}")
    extra = list(args.extra)
    if args.held_out:
        extra = [f"--config.env.tasks={TRAIN_LEVELS!r}",
                 f"--config.env.eval_tasks={TRAIN_LEVELS + HELD_OUT_LEVELS!r}", *extra]
    if not args.report_only:
        run(root, args.config, methods, seeds, args.iterations, extra, args.parallel)
    argv = " ".join(["python scripts/compare.py", f"--methods {','.join(methods)}",
                     f"--seeds {args.seeds}", f"--iterations {args.iterations}",
                     *([f"--workdir {args.workdir}"] if args.workdir != os.path.join(
                         "runs", "compare") else []),
                     *([f"--config {args.config}"] if args.config != "configs/tiny_cpu.py"
                       else []),
                     *(["--held-out"] if args.held_out else []),
                     *([f"--out {args.out}"] if args.out else []),
                     *([f"--title {args.title!r}"] if args.title != TITLE else []),
                     *(["--", *args.extra] if args.extra else [])])
    text = report(root, methods, seeds, argv, out=out, title=args.title)
    os.makedirs(os.path.dirname(os.path.join(ROOT, out)), exist_ok=True)
    with open(os.path.join(ROOT, out), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
